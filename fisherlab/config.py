"""The configuration of one run: dataclasses, parsing, static validation and the run's labels.

A run is configured by dataclasses parsed with ``transformers.HfArgumentParser``
(YAML/JSON files and ``--flags`` both work, as in the HF example scripts):

* :class:`ModelArguments` — base model, task module, language adapters;
* :class:`TaskArguments` — task name and options, source/target languages;
* :class:`ScheduleArguments` — the unfreezing strategy string and regulariser specs;
* :class:`ProbeArguments` — how often and how tr(F) is measured;
* :class:`RunArguments` — the run directory, seed, resume/overwrite;
* ``transformers.TrainingArguments`` — everything the Trainer takes.

Strategy and regulariser strings are parsed by the spec layer (:mod:`fisherlab.spec`);
:meth:`RunConfig.labels` is what ``run.json["labels"]`` records. Training is
:mod:`fisherlab.train`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fisherlab.errors import FisherlabError
from fisherlab.spec.grammar import SpecError, split_specs
from fisherlab.spec.methods import method_label
from fisherlab.spec.regularisers import (
    describe_regularisers,
    note_penalty_weight,
    parse_regularisers,
)

CHECKPOINTS = "checkpoints"


class ConfigError(FisherlabError, ValueError):
    """The run's configuration is invalid; the message names the field."""


@dataclass
class ModelArguments:
    base: str | None = field(default=None, metadata={
        "help": "Base model: hub name (bert-base-multilingual-cased) or local directory. "
                "Default: what the task brings (the testbed's encoder)."})
    task_module: str = field(default="seq_bn", metadata={"help": "seq_bn | lora | full"})
    lang_adapters: str | None = field(default=None, metadata={
        "help": "Language adapters as 'lang=path_or_hub_id,lang=...' or a JSON object. "
                "Default: what the task brings."})
    reduction_factor: int | None = field(default=None, metadata={
        "help": "Bottleneck reduction factor of the task adapter (MAD-X: 16; default: the task's or 16)."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=8, metadata={"help": "LoRA alpha"})
    attn_implementation: str | None = field(default=None, metadata={
        "help": "Attention backend to force (eager | sdpa); default: the model's."})


@dataclass
class TaskArguments:
    task: str = field(default="testbed", metadata={"help": "Registered task name (fisherlab.tasks)."})
    task_options: str | None = field(default=None, metadata={
        "help": "Options for the task constructor as JSON, e.g. '{\"path\": \"/data/testbed\"}'."})
    source_language: str | None = field(default=None, metadata={"help": "Training language (default: the task's)."})
    languages: str | None = field(default=None, metadata={
        "help": "Comma-separated evaluation languages (default: all the task's languages)."})
    data_dir: str | None = field(default=None, metadata={
        "help": "Directory of the task's release files (default: $FISHERLAB_DATA, else the hub); see docs/tasks.md."})
    max_train_samples: int | None = field(default=None, metadata={
        "help": "Train on a random subset of n examples (seeded by `seed`; QA: n questions)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Subsample validation/test sets."})


@dataclass
class ScheduleArguments:
    strategy: str = field(default="standard", metadata={
        "help": "Unfreezing strategy string, e.g. 'gradual:k=800', 'fisher:k=50', 'permutation:order=5,4,3,2,1,0;k=50'."})
    regularisers: str | None = field(default=None, metadata={
        "help": "Regulariser specs: a JSON/YAML list, or one string where each 'name:' starts a spec, e.g. "
                "'fisher_penalty:alpha=0.01;method=finite_difference;l2:weight=0.01'."})
    method: str | None = field(default=None, metadata={
        "help": "Method label for analysis (default: derived from strategy and regularisers)."})


@dataclass
class ProbeArguments:
    probe_every: int = field(default=0, metadata={"help": "Measure tr(F) every N steps (0: never)."})
    probe_batches: int = field(default=40, metadata={"help": "Batches per measurement (paper: up to 40)."})
    probe_estimator: str = field(default="per_example", metadata={
        "help": "per_example | exact | batch | empirical | reference"})
    probe_batch_size: int | None = field(default=None, metadata={"help": "Probe batch size (default: training)."})
    probe_languages: str | None = field(default=None, metadata={
        "help": "Also measure tr(F) on unlabelled target-language inputs: comma-separated languages "
                "(e.g. 'sw,th') or 'all' (every evaluation language but the source); docs/unfreezing.md."})
    probe_language_split: str = field(default="test", metadata={
        "help": "Split the target-language inputs come from: test | validation (labels are ignored)."})
    probe_language_examples: int | None = field(default=None, metadata={
        "help": "Examples per target language: a fixed seeded subset, the same at every probe step "
                "(default: probe_batches x probe batch size, the source probe's size)."})


@dataclass
class RunArguments:
    run_dir: str | None = field(default=None, metadata={"help": "Directory of this run (the run store)."})
    resume: bool = field(default=False, metadata={"help": "Continue an interrupted run from its last checkpoint."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing run directory."})
    eval_batch_size: int = field(default=256, metadata={"help": "Batch size of zero-shot evaluation."})
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads (default: torch's)."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})


@dataclass
class RunConfig:
    """Everything one run needs; ``training`` is a ``transformers.TrainingArguments``."""

    model: ModelArguments
    task: TaskArguments
    schedule: ScheduleArguments
    probe: ProbeArguments
    run: RunArguments
    training: Any
    resolved: dict[str, Any] = field(default_factory=dict)  # filled by prepare_run: base, adapters, languages

    def to_dict(self) -> dict[str, Any]:
        """JSON-able config for ``run.json`` (TrainingArguments via its own ``to_dict``)."""
        out = {name: dataclasses.asdict(getattr(self, name)) for name in ("model", "task", "schedule", "probe", "run")}
        training = self.training.to_dict()
        out["training"] = {k: v for k, v in training.items() if not k.startswith("_") and k != "push_to_hub_token"}
        out["seed"] = self.training.seed
        out["strategy"] = self.schedule.strategy
        out["method"] = self.method
        out["task_name"] = self.task.task
        out["resolved"] = dict(self.resolved)
        out["regulariser"] = {**describe_regularisers(self.regulariser_specs()),
                              "fpen": note_penalty_weight(self.regulariser_specs(),
                                                          int(self.training.per_device_train_batch_size))}
        out["model_name"] = self.resolved.get("model_name") or self.model.base
        return out

    def regulariser_specs(self) -> list[Any]:
        """The parsed regulariser specs (:mod:`fisherlab.spec.regularisers`); ConfigError names the field."""
        try:
            return parse_regularisers(self.schedule.regularisers)
        except SpecError as err:
            raise ConfigError(f"regularisers: {err}") from None

    @property
    def method(self) -> str:
        """The method label: ``schedule.method``, else strategy name + canonical regulariser labels."""
        if self.schedule.method:
            return self.schedule.method
        try:
            return method_label(self.schedule.strategy, self.regulariser_specs())
        except SpecError as err:
            raise ConfigError(f"strategy: {err}") from None

    def labels(self) -> dict[str, Any]:
        """``run.json["labels"]`` of this run (``fisherlab.runs.labels``); call after ``prepare_run``."""
        from fisherlab.spec.strategies import strategy_from_string

        strategy = strategy_from_string(self.schedule.strategy)
        regulariser = describe_regularisers(self.regulariser_specs())
        estimator = self.probe.probe_estimator if self.probe.probe_every else getattr(strategy, "estimator", None)
        return {"version": 1, "method": self.method, "strategy": strategy.to_string(), "seed": self.training.seed,
                "model": self.resolved.get("model_name") or self.model.base, "task": self.task.task,
                "task_module": self.model.task_module, "regulariser": regulariser["kind"],
                "regulariser_weight": regulariser["weight"], "estimator": estimator,
                "fpen": note_penalty_weight(self.regulariser_specs(), int(self.training.per_device_train_batch_size))}


DATACLASSES = (ModelArguments, TaskArguments, ScheduleArguments, ProbeArguments, RunArguments)


def _parser():
    from transformers import HfArgumentParser, TrainingArguments

    # allow_abbrev=False: `--max_step` is an unknown flag, not `--max_steps`
    return HfArgumentParser((*DATACLASSES, TrainingArguments), allow_abbrev=False)


def parse_config(config_file: str | Path | None = None, args: Sequence[str] = (),
                 overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """Parse a YAML/JSON config file, ``overrides`` on top of it, then ``--flags`` (precedence:
    file < overrides < flags)."""
    parser = _parser()
    defaults: dict[str, Any] = {}
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        text = path.read_text()
        try:
            if path.suffix in (".yaml", ".yml"):
                import yaml

                loaded = yaml.safe_load(text) or {}
            else:
                loaded = json.loads(text)
        except Exception as err:  # yaml and json raise different types
            raise ConfigError(f"config file {str(path)!r} is not valid {path.suffix[1:] or 'JSON'}: {err}") from err
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping of field: value")
        defaults.update(loaded)
    defaults.update(overrides or {})
    known = {f.dest for f in parser._actions}
    unknown = sorted(set(defaults) - known)
    if unknown:
        raise ConfigError(f"unknown config field(s) {unknown}; see `fisherlab train --help-fields`")
    # Non-string values from YAML are fine for set_defaults; argparse applies `type` to strings only.
    parser.set_defaults(**defaults)
    for action in parser._actions:  # defaults satisfy "required"
        if action.dest in defaults:
            action.required = False
    if "output_dir" not in defaults and "--output_dir" not in args:
        parser.set_defaults(output_dir=None)
    try:
        parsed = parser.parse_args_into_dataclasses(args=list(args), return_remaining_strings=True)
    except SystemExit as err:
        raise ConfigError(f"invalid command-line flags {list(args)} (see `fisherlab train --help-fields`)") from err
    *objs, remaining = parsed
    if remaining:
        raise ConfigError(f"unknown command-line flag(s) {remaining}")
    model, task, schedule, probe, run, training = objs
    config = RunConfig(model, task, schedule, probe, run, training)
    _finish_training_args(config)
    return config


def _finish_training_args(config: RunConfig) -> None:
    """Point the Trainer's output_dir into the run directory and keep the run self-contained."""
    run_dir = config.run.run_dir
    if not run_dir:
        raise ConfigError("run_dir: required (the directory this run is written to)")
    training = config.training
    if training.output_dir in (None, "trainer_output") or not training.output_dir:
        training.output_dir = str(Path(run_dir) / CHECKPOINTS)
    if training.report_to in ("all", ["all"]):
        training.report_to = []


def _load_json(text: str, field_name: str, what: str) -> Any:
    """``json.loads(text)``; a syntax error becomes a ConfigError naming ``field_name``."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{field_name}: not a valid JSON {what} ({err})") from err


def split_regularisers(text: str | Sequence[str] | None) -> list[str]:
    """Regulariser specs as a list of strings (a JSON list, a list, or one ``;``-joined string)."""
    try:
        return [str(s) for s in split_specs(text, "regularisers")]
    except SpecError as err:
        raise ConfigError(str(err)) from None


def parse_lang_adapters(text: str | None) -> dict[str, str] | None:
    """``'en=path,de=path'`` or a JSON object -> mapping; None when not given."""
    if not text:
        return None
    text = text.strip()
    if text.startswith("{"):
        return {str(k): str(v) for k, v in _load_json(text, "lang_adapters", "object").items()}
    out: dict[str, str] = {}
    for item in text.split(","):
        lang, sep, source = item.partition("=")
        if not sep or not lang.strip() or not source.strip():
            raise ConfigError(f"lang_adapters: expected 'lang=path_or_id', got {item!r}")
        if lang.strip() in out:
            raise ConfigError(f"lang_adapters: language {lang.strip()!r} is given twice")
        out[lang.strip()] = source.strip()
    return out


def _task_options(config: RunConfig) -> dict[str, Any]:
    if not config.task.task_options:
        return {}
    options = _load_json(config.task.task_options, "task_options", "object")
    if not isinstance(options, dict):
        raise ConfigError("task_options: must be a JSON object")
    return options


def load_task(config: RunConfig) -> Any:
    """The configured task (``get_task`` with ``task_options``); failures name the field."""
    from fisherlab.tasks import get_task

    try:
        data_dir = {"data_dir": config.task.data_dir} if config.task.data_dir else {}
        return get_task(config.task.task, **data_dir, **_task_options(config))
    except TypeError as err:
        raise ConfigError(f"task_options: {config.task.task!r} does not accept these options ({err})") from err
    except (ValueError, OSError) as err:  # e.g. a missing or stale testbed, an unreadable data file
        raise ConfigError(f"task: {config.task.task!r} could not be loaded: {err}") from err


def probe_language_list(config: RunConfig) -> list[str] | None:
    """``probe_languages`` as a list (None when not set; ``["all"]`` is resolved by the caller)."""
    text = config.probe.probe_languages
    if not text or not text.strip():
        return None
    return [lang.strip() for lang in text.split(",") if lang.strip()]


def _validate_probe_languages(config: RunConfig) -> None:
    """probe_language_split/examples are valid; languages need probe steps and a label-free estimator."""
    from fisherlab.spec.estimators import LABEL_FREE_ESTIMATORS

    if config.probe.probe_language_split not in ("test", "validation"):
        raise ConfigError(f"probe_language_split: {config.probe.probe_language_split!r}; expected test or validation")
    n = config.probe.probe_language_examples
    if n is not None and n <= 0:
        raise ConfigError(f"probe_language_examples: must be positive, got {n}")
    if probe_language_list(config) and config.probe.probe_every <= 0:
        raise ConfigError("probe_languages: needs probe_every > 0 (the target languages are measured at probe steps)")
    if probe_language_list(config) and config.probe.probe_estimator not in LABEL_FREE_ESTIMATORS:
        raise ConfigError(f"probe_languages: estimator {config.probe.probe_estimator!r} needs data labels; "
                          f"target-language inputs are unlabelled (use one of {list(LABEL_FREE_ESTIMATORS)})")


def validate_static(config: RunConfig) -> None:
    """Checks that need no model: strategy, regulariser and estimator strings, numbers, task name."""
    from fisherlab.spec.budget import resolve_interval
    from fisherlab.spec.estimators import ESTIMATORS
    from fisherlab.spec.strategies import StrategyError, strategy_from_string
    from fisherlab.tasks import available_tasks

    if config.task.task not in available_tasks():
        raise ConfigError(f"task: {config.task.task!r} is not registered; known tasks: {', '.join(available_tasks())}")
    if config.model.task_module not in ("seq_bn", "lora", "full"):
        raise ConfigError(f"task_module: {config.model.task_module!r}; expected seq_bn, lora or full")
    try:
        strategy_from_string(config.schedule.strategy)
        resolve_interval(config.schedule.strategy, 1, config.training.max_steps)  # k given, or derivable
    except (StrategyError, ValueError) as err:
        raise ConfigError(f"strategy: {err}") from err
    if config.probe.probe_every < 0:
        raise ConfigError(f"probe_every: must be >= 0, got {config.probe.probe_every}")
    if config.probe.probe_batches <= 0:
        raise ConfigError(f"probe_batches: must be positive, got {config.probe.probe_batches}")
    if config.probe.probe_estimator not in ESTIMATORS:
        raise ConfigError(f"probe_estimator: {config.probe.probe_estimator!r}; expected one of {list(ESTIMATORS)}")
    _validate_probe_languages(config)
    config.regulariser_specs()
    if config.model.attn_implementation not in (None, "eager", "sdpa"):
        raise ConfigError(f"attn_implementation: {config.model.attn_implementation!r}; expected eager or sdpa")
    parse_lang_adapters(config.model.lang_adapters)
    _task_options(config)


#: Fields of a stored config that belong to the run that wrote it, not to the configuration.
_RUN_BOUND = ("run_dir", "output_dir", "logging_dir", "resume", "overwrite")


def fields_from_run(run_dir: str | Path) -> dict[str, Any]:
    """The config fields of the run in ``run_dir`` (``run.json["config"]`` as ``fisherlab train`` wrote it),
    ready for :func:`parse_config`'s ``overrides``: ``fisherlab train --from-run DIR --run_dir NEW``.

    Run-bound fields (``run_dir``, ``output_dir``, ``logging_dir``, ``resume``, ``overwrite``) are
    left out, as are values derived at run time; TrainingArguments fields the parser does
    not know (written by another transformers version) are dropped."""
    path = Path(run_dir) / "run.json"
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"from_run: {str(path)!r} does not exist (not a run directory)") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"from_run: {str(path)!r} is not valid JSON: {err}") from err
    stored = info.get("config") if isinstance(info, dict) else None
    sections = ("model", "task", "schedule", "probe", "run", "training")
    if not isinstance(stored, dict) or not all(isinstance(stored.get(s), dict) for s in sections):
        raise ConfigError(f"from_run: {str(path)!r} holds no `fisherlab train` config (sections {list(sections)}); "
                          "runs written by other scripts cannot be re-run from it")
    known = {action.dest for action in _parser()._actions}
    fields: dict[str, Any] = {}
    for section in sections:
        fields.update((k, v) for k, v in stored[section].items() if k in known and k not in _RUN_BOUND)
    return fields
