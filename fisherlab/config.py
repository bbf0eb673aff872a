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
from fisherlab.spec.regularisers import describe_regularisers, note_penalty_weight, parse_regularisers

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

    return HfArgumentParser((*DATACLASSES, TrainingArguments))


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


def validate_static(config: RunConfig) -> None:
    """Checks that need no model: strategy, regulariser and estimator strings, numbers, task name."""
    from fisherlab.fisher.estimators import ESTIMATORS
    from fisherlab.spec.strategies import StrategyError, strategy_from_string
    from fisherlab.tasks import available_tasks

    if config.task.task not in available_tasks():
        raise ConfigError(f"task: {config.task.task!r} is not registered; known tasks: {', '.join(available_tasks())}")
    if config.model.task_module not in ("seq_bn", "lora", "full"):
        raise ConfigError(f"task_module: {config.model.task_module!r}; expected seq_bn, lora or full")
    try:
        strategy_from_string(config.schedule.strategy)
    except (StrategyError, ValueError) as err:
        raise ConfigError(f"strategy: {err}") from err
    if config.probe.probe_every < 0:
        raise ConfigError(f"probe_every: must be >= 0, got {config.probe.probe_every}")
    if config.probe.probe_batches <= 0:
        raise ConfigError(f"probe_batches: must be positive, got {config.probe.probe_batches}")
    if config.probe.probe_estimator not in ESTIMATORS:
        raise ConfigError(f"probe_estimator: {config.probe.probe_estimator!r}; expected one of {list(ESTIMATORS)}")
    config.regulariser_specs()
    if config.model.attn_implementation not in (None, "eager", "sdpa"):
        raise ConfigError(f"attn_implementation: {config.model.attn_implementation!r}; expected eager or sdpa")
    parse_lang_adapters(config.model.lang_adapters)
    _task_options(config)
