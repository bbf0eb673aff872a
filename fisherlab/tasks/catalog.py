"""What each built-in task is, for ``fisherlab tasks`` and docs/tasks.md (torch-free, data-free).

Languages come from the task modules' constants, so the listing cannot drift from
what the tasks load. ``testbed`` languages depend on the world, so they are listed
as such.
"""

from __future__ import annotations

from dataclasses import dataclass

from fisherlab.tasks import mlqa, pawsx, xcopa, xnli, xquad
from fisherlab.tasks.hub import HUB_SOURCES


@dataclass(frozen=True)
class TaskInfo:
    """One row of the task table."""

    name: str
    training: str
    languages: tuple[str, ...]
    metric: str
    hub: tuple[str, ...]
    layout: str


def _hub(*keys: str) -> tuple[str, ...]:
    return tuple(f"{HUB_SOURCES[k].repo}@{HUB_SOURCES[k].revision}" for k in keys)


CATALOG: tuple[TaskInfo, ...] = (
    TaskInfo("xnli", "MultiNLI 1.0 train (en)", xnli.LANGUAGES, "accuracy", _hub("multi_nli", "xnli"),
             "multinli_1.0/multinli_1.0_train.jsonl, XNLI-1.0/xnli.{dev,test}.tsv"),
    TaskInfo("pawsx", "PAWS-X en train (two-stage: dev halves in the target language)", pawsx.LANGUAGES,
             "accuracy", _hub("paws-x"), "x-final/<lang>/{train,translated_train,dev_2k,test_2k}.tsv"),
    TaskInfo("mlqa", "SQuAD v1.1 train (en)", mlqa.LANGUAGES, "f1 (+ exact_match), MLQA script",
             _hub("squad", "mlqa"), "squad/{train,dev}-v1.1.json, MLQA_V1/{dev,test}/<split>-context-<l>-question-<l>.json"),
    TaskInfo("xquad", "SQuAD v1.1 train (en)", xquad.LANGUAGES, "f1 (+ exact_match), SQuAD script",
             _hub("squad", "xquad"), "squad/{train,dev}-v1.1.json, xquad/xquad.<lang>.json"),
    TaskInfo("xcopa", "COPA train (en, SuperGLUE: 400)", xcopa.LANGUAGES, "accuracy", _hub("copa", "xcopa"),
             "COPA/{train,val}.jsonl or copa/{train,val,test}.en.jsonl, xcopa/<lang>/{val,test}.<lang>.jsonl"),
    TaskInfo("testbed", "synthetic world (source language)", (), "accuracy", (),
             "built by `fisherlab testbed build` (languages: the world's)"),
)
