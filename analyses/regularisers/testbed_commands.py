"""The testbed study of Stickland & Murray: every run's command line and the report's.

One set of runs gives both figures: each run is a ``fisherlab two-stage`` run (stage 1 on the
source language with the tr(F) probe, the run's final tr(F) and source accuracy: Figure 1;
stage 2 on each target language, the ``two_stage_gain`` rows: Figure 2). The stage-1 settings
are ``testbed/base.yaml``; the grid, seeds, targets and stage-2 budget are here. The README
("Testbed study") states the protocol and its differences from the note.

``commands(out)`` gives argv lists that start with ``"fisherlab"`` (the console script; a
regeneration script may replace it by ``python -m fisherlab.cli``); ``report_command(runs,
report)`` the ``fisherlab analyze`` call. Run names: ``<regulariser>-<weight>-s<seed>``
(``none-s<seed>`` for the unregularised runs), e.g. ``fpen-0.01-s0``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["BASE", "GRID", "SEEDS", "STAGE2_LR", "STAGE2_STEPS", "TARGETS", "commands", "report_command",
           "grid_runs"]

BASE = Path(__file__).resolve().parent / "testbed" / "base.yaml"
"""Stage-1 config shared by every run."""

SEEDS = (0, 1, 2)

TARGETS = ("adj", "sov", "lex")
"""Stage-2 languages (the note: de, es, zh), chosen before any run: languages the encoder saw in
pretraining, as mBERT saw de, es and zh, each differing from the source in one way -- adjective and
determiner after the noun (es), verb-final (de), vocabulary (zh)."""

STAGE2_STEPS = 32
"""Stage-2 optimizer steps per target: 32 x batch 32 = 1,024 target examples (the note: 1,000)."""

STAGE2_LR = None
"""Stage-2 learning rate (None: stage 1's)."""

#: name -> (regulariser string with ``{w}`` for the weight, weights); ``none`` has no regulariser.
#: fpen: the note's Fisher penalty, ``alpha * ||g_bar||^2`` (``scaled=false``: alpha is the note's
#: weight, recorded as ``fpen`` in the run labels). kl: the consistency loss -- the note's MVR needs a
#: subword tokenizer and the testbed's is word level, so the testbed stand-in is R-Drop (a second
#: dropout mask; README). l2: towards the initial (pretrained) weights.
GRID: dict[str, tuple[str | None, tuple[float, ...]]] = {
    "none": (None, ()),
    "fpen": ("fisher_penalty:alpha={w};scaled=false", (0.001, 0.01, 0.1, 1.0)),
    "kl": ("consistency:view=dropout;weight={w}", (0.1, 1.0, 5.0, 25.0)),
    "l2": ("l2:weight={w};to=init", (0.001, 0.01, 0.1)),
}


def grid_runs() -> list[tuple[str, str | None, int]]:
    """``(run name, regulariser string or None, seed)`` of every run, in a fixed order."""
    out: list[tuple[str, str | None, int]] = []
    for seed in SEEDS:
        for name, (template, weights) in GRID.items():
            if template is None:
                out.append((f"{name}-s{seed}", None, seed))
                continue
            for weight in weights:
                out.append((f"{name}-{weight:g}-s{seed}", template.format(w=f"{weight:g}"), seed))
    return out


def commands(out: str) -> list[list[str]]:
    """The argv of every run of the study, writing run directories under ``out``."""
    stage2 = ["--stage2-max-steps", str(STAGE2_STEPS)]
    if STAGE2_LR is not None:
        stage2 += ["--stage2-lr", f"{STAGE2_LR:g}"]
    result = []
    for name, regulariser, seed in grid_runs():
        argv = ["fisherlab", "two-stage", str(BASE), "--targets", ",".join(TARGETS), *stage2,
                "--seed", str(seed), "--run_dir", str(Path(out) / name)]
        if regulariser is not None:
            argv += ["--regularisers", regulariser]
        result.append(argv)
    return result


def report_command(runs: str, report: str) -> list[str]:
    """``fisherlab analyze``: Figure 1 (``regulariser``), Figure 2 (``two_stage``) and the tr(F) curves."""
    return ["fisherlab", "analyze", str(runs), "--out", str(report), "--figures", "regulariser,two_stage,trace",
            "--no-progress"]


if __name__ == "__main__":  # print the commands, one a line (shell-quoted)
    import shlex
    import sys

    target = sys.argv[1] if len(sys.argv) > 1 else "artifacts/regularisers/runs"
    for argv in commands(target):
        print(shlex.join(argv))
    print(shlex.join(report_command(target, str(Path(target).parent / "report"))))
