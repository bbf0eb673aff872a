"""One run of the paper's protocol from one config: build, train with callbacks, evaluate, write the run.

A run is configured by dataclasses parsed with ``transformers.HfArgumentParser``
(YAML/JSON files and ``--flags`` both work, as in the HF example scripts):

* :class:`ModelArguments` — base model, task module, language adapters;
* :class:`TaskArguments` — task name and options, source/target languages;
* :class:`ScheduleArguments` — the unfreezing strategy string and regulariser strings;
* :class:`ProbeArguments` — how often and how tr(F) is measured;
* :class:`RunArguments` — the run directory, seed, resume/overwrite;
* ``transformers.TrainingArguments`` — everything the Trainer takes.

``run_training(config)`` builds the MAD-X model, trains with the Trainer plus the
unfreezing and probe callbacks, evaluates the source-language validation set at
eval steps (``metrics.jsonl``: the validation curve of Figure 4), then evaluates
zero-shot on every target language with its language adapter swapped in and
writes the complete run directory (``docs/run-format.md``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"


class ConfigError(ValueError):
    """The run's configuration is invalid; the message names the field."""


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------
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
        "help": "Regulariser strings separated by ';' or a JSON list, e.g. "
                "'fisher_penalty:alpha=0.01,method=finite_difference; l2:weight=0.01'."})
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
        out["regulariser"] = describe_regularisers(split_regularisers(self.schedule.regularisers))
        out["model_name"] = self.resolved.get("model_name") or self.model.base
        return out

    @property
    def method(self) -> str:
        if self.schedule.method:
            return self.schedule.method
        name = self.schedule.strategy.split(":", 1)[0]
        regs = split_regularisers(self.schedule.regularisers)
        return "+".join([name] + [r.split(":", 1)[0] for r in regs])


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


def split_regularisers(text: str | None) -> list[str]:
    """``'a:x=1,y=2; b:z=3'`` or a JSON list -> list of regulariser strings."""
    if not text:
        return []
    text = text.strip()
    if text.startswith("["):
        return [str(i) for i in _load_json(text, "regularisers", "list")]
    return [part.strip() for part in text.split(";") if part.strip()]


def describe_regularisers(specs: Sequence[str]) -> dict[str, Any]:
    """``{"kind", "weight", "terms"}`` for the analysis (Stickland & Murray Fig. 1 reads kind and weight).

    ``kind`` joins the term names (a consistency term as ``consistency/<view>``) with ``+``
    (``none``, weight 0, without terms); ``weight`` is the single term's ``alpha``/``weight``, else None.
    """
    kinds, weights = [], []
    for spec in specs:
        name, _, body = spec.partition(":")
        fields = dict(item.partition("=")[::2] for item in body.replace(";", ",").split(",") if "=" in item)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        kinds.append(f"{name.strip()}/{fields['view']}" if "view" in fields else name.strip())
        weight = fields.get("alpha", fields.get("weight"))
        try:
            weights.append(float(weight) if weight is not None else None)
        except ValueError:
            weights.append(None)
    if not kinds:
        return {"kind": "none", "weight": 0.0, "terms": []}
    return {"kind": "+".join(kinds), "weight": weights[0] if len(weights) == 1 else None,
            "terms": list(specs)}


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


# --------------------------------------------------------------------------------------------
# validation and assembly (everything that can fail does so before training)
# --------------------------------------------------------------------------------------------
@dataclass
class Prepared:
    """What ``prepare_run`` built: task, model, blocks, tokenizer, languages, datasets."""

    config: RunConfig
    task: Any
    model: Any
    blocks: Any
    tokenizer: Any
    source_language: str
    languages: list[str]
    train_dataset: Any
    eval_dataset: Any
    strategy: Any
    regularisers: list[Any]


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
    from fisherlab.regularise import regularisers_from_strings
    from fisherlab.tasks import available_tasks
    from fisherlab.unfreezing import StrategyError, strategy_from_string

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
    try:
        regularisers_from_strings(split_regularisers(config.schedule.regularisers))
    except ValueError as err:
        raise ConfigError(f"regularisers: {err}") from err
    if config.model.attn_implementation not in (None, "eager", "sdpa"):
        raise ConfigError(f"attn_implementation: {config.model.attn_implementation!r}; expected eager or sdpa")
    parse_lang_adapters(config.model.lang_adapters)
    _task_options(config)


def prepare_run(config: RunConfig) -> Prepared:
    """Build task, model, blocks and data; every configuration error surfaces here, before training."""
    import torch
    from transformers import set_seed

    from fisherlab.blocks import BlockMap
    from fisherlab.models import MadxError, build_madx
    from fisherlab.regularise import regularisers_from_strings
    from fisherlab.tasks.training import subset
    from fisherlab.unfreezing import StrategyError, strategy_from_string

    validate_static(config)
    if config.run.threads:
        torch.set_num_threads(config.run.threads)
    task = load_task(config)
    defaults = dict(task.model_defaults() or {})
    base = config.model.base or defaults.get("base")
    if base is None:
        raise ConfigError(f"base: required for task {config.task.task!r} (it brings no default base model)")
    if isinstance(base, (str, Path)) and (str(base).startswith(("/", ".", "~")) or os.sep in str(base)) \
            and not Path(str(base)).expanduser().exists():
        raise ConfigError(f"base: model path {str(base)!r} does not exist")
    lang_adapters = parse_lang_adapters(config.model.lang_adapters)
    if lang_adapters is None:
        lang_adapters = dict(defaults.get("lang_adapters") or {})
    source = config.task.source_language or defaults.get("source_language") or task.source_language
    if config.task.languages:
        languages = [lang.strip() for lang in config.task.languages.split(",") if lang.strip()]
    else:
        languages = list(task.languages)
    unknown = [lang for lang in languages if lang not in task.languages]
    if unknown:
        raise ConfigError(f"languages: {unknown} are not languages of task {task.name!r} ({list(task.languages)})")
    if source not in task.languages:
        raise ConfigError(f"source_language: {source!r} is not a language of task {task.name!r} ({list(task.languages)})")
    if lang_adapters:
        missing = [lang for lang in sorted(set(languages) | {source}) if lang not in lang_adapters]
        if missing:
            raise ConfigError(f"lang_adapters: no language adapter for {missing} "
                              f"(adapters given: {sorted(lang_adapters)})")
    reduction = config.model.reduction_factor or defaults.get("reduction_factor") or 16

    config.resolved = {
        "base": str(base), "lang_adapters": {k: str(v) for k, v in (lang_adapters or {}).items()},
        "source_language": source, "languages": languages, "reduction_factor": reduction,
        "model_name": defaults.get("model_name") or (Path(str(base)).name if Path(str(base)).exists() else str(base)),
    }
    set_seed(config.training.seed)
    try:
        model = build_madx(base, task, task_module=config.model.task_module, lang_adapters=lang_adapters or None,
                           source_language=source if lang_adapters else None, reduction_factor=reduction,
                           lora_r=config.model.lora_r, lora_alpha=config.model.lora_alpha,
                           seed=config.training.seed)
    except MadxError as err:
        raise ConfigError(str(err)) from err
    if config.model.attn_implementation:
        model.config._attn_implementation = config.model.attn_implementation
    adapter = None if config.model.task_module == "full" else task.name
    blocks = BlockMap.from_model(model, adapter=adapter, head=task.name)
    try:
        strategy = strategy_from_string(config.schedule.strategy)
        strategy.validate(blocks)
    except (StrategyError, ValueError) as err:
        raise ConfigError(f"strategy: {err}") from err

    tokenizer = getattr(task, "tokenizer", None)
    if tokenizer is None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(base))
    train_dataset = task.load("train", source, tokenizer)
    eval_dataset = task.load("validation", source, tokenizer)
    train_dataset = subset(train_dataset, config.task.max_train_samples, config.training.seed)
    if config.task.max_eval_samples:
        eval_dataset = eval_dataset.select(range(min(config.task.max_eval_samples, len(eval_dataset))))
    regularisers = regularisers_from_strings(split_regularisers(config.schedule.regularisers), tokenizer=tokenizer)
    return Prepared(config, task, model, blocks, tokenizer, source, languages, train_dataset, eval_dataset,
                    strategy, regularisers)


# --------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------
def environment(model: Any = None) -> dict[str, Any]:
    """Versions, device and attention backend for ``run.json``."""
    import adapters
    import torch
    import transformers

    import fisherlab

    device = "cpu"
    if model is not None:
        try:
            device = str(next(model.parameters()).device)
        except StopIteration:
            pass
    return {
        "fisherlab": fisherlab.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
        "adapters": adapters.__version__, "python": platform.python_version(), "device": device,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "attn_implementation": getattr(getattr(model, "config", None), "_attn_implementation", None),
        "threads": torch.get_num_threads(),
    }


def last_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest ``checkpoint-N`` directory of a run, or None."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return None
    found = [p for p in root.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return max(found, key=lambda p: int(p.name.split("-")[-1])) if found else None


def _metrics_callback(writer: Any, source: str):
    from transformers import TrainerCallback

    class ValidationCurve(TrainerCallback):
        """Writes the source-language validation metrics of each evaluation to ``metrics.jsonl``."""

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            if not state.is_world_process_zero or not metrics:
                return
            for key, value in metrics.items():
                if key.startswith("eval_") and isinstance(value, (int, float)) and key not in (
                        "eval_runtime", "eval_samples_per_second", "eval_steps_per_second", "eval_epoch"):
                    writer.log_metric(state.global_step, "validation", source, key[len("eval_"):], float(value))

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            for key in ("loss", "learning_rate", "grad_norm"):
                if key in logs and isinstance(logs[key], (int, float)):
                    writer.log_metric(state.global_step, "train", source, key, float(logs[key]))

    return ValidationCurve()


def build_trainer(prepared: Prepared, writer: Any, extra_callbacks: Sequence[Any] = ()) -> Any:
    """The Trainer (AdapterTrainer for adapter runs) with the unfreezing, probe and metric callbacks."""
    from adapters import AdapterTrainer
    from transformers import Trainer

    from fisherlab.fisher.probe import FisherProbeCallback
    from fisherlab.regularise import make_regularised_trainer
    from fisherlab.tasks.training import data_collator, trainer_metrics
    from fisherlab.unfreezing import UnfreezeCallback, make_trainer_class

    config = prepared.config
    base_class = Trainer if config.model.task_module == "full" else AdapterTrainer
    trainer_class = make_trainer_class(base_class)
    kwargs: dict[str, Any] = {}
    if prepared.regularisers:
        trainer_class = make_regularised_trainer(trainer_class)
        kwargs["regularisers"] = prepared.regularisers
        kwargs["writer"] = writer
    if config.training.label_names is None:  # adapters models hide the label arguments from the signature
        head = getattr(prepared.task, "head", "classification")
        config.training.label_names = ["start_positions", "end_positions"] if head == "qa" else ["labels"]
    callbacks = [UnfreezeCallback(prepared.strategy, prepared.blocks, writer=writer),
                 _metrics_callback(writer, prepared.source_language)]
    if config.probe.probe_every:
        callbacks.append(FisherProbeCallback(
            every=config.probe.probe_every, n_batches=config.probe.probe_batches,
            estimator=config.probe.probe_estimator, blocks=prepared.blocks, writer=writer,
            seed=config.training.seed, batch_size=config.probe.probe_batch_size))
    callbacks.extend(extra_callbacks)
    trainer = trainer_class(
        model=prepared.model, args=config.training, train_dataset=prepared.train_dataset,
        eval_dataset=prepared.eval_dataset if config.training.eval_strategy != "no" else None,
        data_collator=data_collator(prepared.task, prepared.tokenizer), callbacks=callbacks,
        compute_metrics=trainer_metrics(prepared.task, prepared.eval_dataset), **kwargs)
    if not config.run.progress:  # quiet: no per-log dict printing either
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    return trainer


def evaluate_languages(prepared: Prepared, progress: bool = True) -> dict[str, dict[str, float]]:
    """Zero-shot test scores per language ({metric: value}), with that language's adapter swapped in."""
    from tqdm.auto import tqdm

    from fisherlab.models import madx_setup, swap_language

    model, task = prepared.model, prepared.task
    setup = madx_setup(model)
    scores: dict[str, dict[str, float]] = {}
    try:
        for language in tqdm(prepared.languages, desc="zero-shot evaluation", disable=not progress):
            if setup.languages:
                swap_language(model, language)
            dataset = task.load("test", language, prepared.tokenizer)
            if prepared.config.task.max_eval_samples:
                dataset = dataset.select(range(min(prepared.config.task.max_eval_samples, len(dataset))))
            result = task.evaluate(model, dataset, prepared.tokenizer, batch_size=prepared.config.run.eval_batch_size)
            scores[language] = {metric: float(value) for metric, value in result.items()}
    finally:
        if setup.languages:
            swap_language(model, prepared.source_language)
    return scores


def run_training(config: RunConfig, extra_callbacks: Sequence[Any] = ()) -> Path:
    """Run one configured experiment end to end; returns the run directory.

    A finished run directory is never overwritten without ``run.overwrite``; an
    interrupted one is continued with ``run.resume`` (from its newest checkpoint,
    the run store truncated to that step); a run that raises is marked ``failed``.
    """
    from fisherlab.runs import RunWriter
    from fisherlab.tasks.training import write_task_results

    run_dir = Path(config.run.run_dir)
    validate_static(config)
    resume_from: Path | None = None
    if config.run.resume:
        if not (run_dir / "run.json").is_file():
            raise ConfigError(f"resume: {str(run_dir)!r} holds no run to resume (no run.json)")
        resume_from = last_checkpoint(run_dir)
    elif (run_dir / "run.json").is_file() and not config.run.overwrite:
        raise ConfigError(f"run_dir: {str(run_dir)!r} already holds a run; pass --overwrite to replace it "
                          "or --resume to continue it")
    prepared = prepare_run(config)
    fisher_meta = {"estimator": config.probe.probe_estimator, "every": config.probe.probe_every,
                   "n_batches": config.probe.probe_batches, "batch_size": config.probe.probe_batch_size}
    if resume_from is not None:
        step = int(resume_from.name.split("-")[-1])
        writer = RunWriter.resume(run_dir, from_step=step)
    elif config.run.resume:  # interrupted before the first checkpoint: start over
        writer = RunWriter.create(run_dir, config=config.to_dict(), fisher=fisher_meta,
                                  env=environment(prepared.model), overwrite=True)
    else:
        writer = RunWriter.create(run_dir, config=config.to_dict(), fisher=fisher_meta,
                                  env=environment(prepared.model), overwrite=config.run.overwrite)
    try:
        trainer = build_trainer(prepared, writer, extra_callbacks)
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from is not None else None)
        if trainer.is_world_process_zero():
            scores = evaluate_languages(prepared, progress=config.run.progress)
            write_task_results(writer, prepared.task, prepared.source_language, scores, trainer.state.global_step)
            writer.finish("completed")
    except BaseException as err:
        writer.finish("failed", error=f"{type(err).__name__}: {err}")
        raise
    return run_dir
