"""One run of the paper's protocol from one config: build, train with callbacks, evaluate, write the run.

The configuration (dataclasses, ``parse_config``, validation, labels) is
:mod:`fisherlab.config`; its names are re-exported here. ``run_training(config)`` builds
the MAD-X model, trains with the Trainer plus the unfreezing and probe callbacks, evaluates
the source-language validation set at eval steps (``metrics.jsonl``: the validation curve of
Figure 4), then evaluates zero-shot on every target language with its language adapter
swapped in and writes the complete run directory (``docs/run-format.md``), with
``run.json["labels"]`` from :meth:`RunConfig.labels`.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fisherlab.config import (  # noqa: F401  (re-exported: fisherlab.train's public names)
    CHECKPOINTS,
    DATACLASSES,
    ConfigError,
    ModelArguments,
    ProbeArguments,
    RunArguments,
    RunConfig,
    ScheduleArguments,
    TaskArguments,
    _parser,
    fields_from_run,
    load_task,
    parse_config,
    parse_lang_adapters,
    split_regularisers,
    validate_static,
)
from fisherlab.config_resolve import resolve_lang_adapters, resolve_task  # noqa: F401  (re-exported)

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# assembly (everything that can fail does so before training)
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



def prepare_run(config: RunConfig) -> Prepared:
    """Build task, model, blocks and data; every configuration error surfaces here, before training."""
    import torch
    from transformers import set_seed

    from fisherlab.blocks import BlockMap
    from fisherlab.models import MadxError, build_madx
    from fisherlab.regularisers.base import RegulariserError
    from fisherlab.regularisers.strings import regulariser_from_spec
    from fisherlab.spec.budget import resolve_interval
    from fisherlab.spec.strategies import StrategyError, strategy_from_string
    from fisherlab.tasks.training import subset

    validate_static(config)
    if config.run.threads:
        torch.set_num_threads(config.run.threads)
    task, resolved = resolve_task(config)
    base, source, languages = resolved["base"], resolved["source_language"], resolved["languages"]
    lang_adapters, reduction = resolved["lang_adapters"], resolved["reduction_factor"]
    config.resolved = {**resolved, "base": str(base),
                       "lang_adapters": {k: str(v) for k, v in (lang_adapters or {}).items()}}
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
    blocks = BlockMap.from_model(model, adapter=adapter, head=task.name, mode="full" if adapter is None else "auto")
    try:
        resolved, note = resolve_interval(config.schedule.strategy, blocks.n_layers, config.training.max_steps)
        if note:  # gradual without k: derived from the budget, and said so
            logger.warning(note)
            config.schedule.strategy = resolved
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
    regularisers = []
    for spec in config.regulariser_specs():
        try:
            regularisers.append(regulariser_from_spec(spec, tokenizer=tokenizer))
        except RegulariserError as err:  # e.g. mvr with a tokenizer it cannot re-segment: name the field
            raise ConfigError(f"regularisers: {spec.to_string()!r} cannot be built for this run: {err}") from err
    return Prepared(config, task, model, blocks, tokenizer, source, languages, train_dataset, eval_dataset,
                    strategy, regularisers)


# --------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------
def environment(model: Any = None, training: Any = None) -> dict[str, Any]:
    """Versions (with fisherlab's git commit, :func:`fisherlab.revision.code_revision`), device,
    attention backend and requested mixed precision for ``run.json`` (the callbacks add the
    effective ``precision`` and ``grad_scaler`` at train begin)."""
    import adapters
    import torch
    import transformers

    import fisherlab
    from fisherlab.revision import code_revision

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
        "mixed_precision": "bf16" if getattr(training, "bf16", False) else
                           "fp16" if getattr(training, "fp16", False) else "no",
        **{f"fisherlab_{key}": value for key, value in code_revision().items() if key != "version"},
    }


def last_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest ``checkpoint-N`` directory of a run, or None."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return None
    found = [p for p in root.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return max(found, key=lambda p: int(p.name.split("-")[-1])) if found else None


def probe_language_sets(prepared: Prepared, languages: Sequence[str] | None = None) -> dict[str, Any]:
    """``{language: dataset}`` of ``languages`` (default ``probe_languages``; ``all``: every
    evaluation language but the source) from ``probe_language_split``, reduced to the
    training data's columns (the collator's input; labels are removed by the probe anyway)."""
    from fisherlab.config import probe_language_list

    config, task = prepared.config, prepared.task
    wanted = list(languages) if languages is not None else probe_language_list(config)
    if not wanted:
        return {}
    if wanted == ["all"]:
        wanted = [lang for lang in prepared.languages if lang != prepared.source_language]
    unknown = [lang for lang in wanted if lang not in task.languages]
    if unknown:
        raise ConfigError(f"probe_languages: {unknown} are not languages of task {task.name!r} "
                          f"({list(task.languages)})")
    keep = set(getattr(prepared.train_dataset, "column_names", None) or [])
    sets = {}
    for language in wanted:
        dataset = task.load(config.probe.probe_language_split, language, prepared.tokenizer)
        extra = [c for c in (getattr(dataset, "column_names", None) or []) if keep and c not in keep]
        sets[language] = dataset.remove_columns(extra) if extra else dataset
    return sets


def language_adapter_context(prepared: Prepared) -> Any:
    """For a MAD-X model with language adapters: ``language -> context`` that stacks that
    language's adapter for the measurement (as zero-shot evaluation does) and restores the
    source's after; None for a model without language adapters."""
    from contextlib import contextmanager

    from fisherlab.models import madx_setup, swap_language

    if not madx_setup(prepared.model).languages:
        return None

    @contextmanager
    def context(language: str):
        swap_language(prepared.model, language)
        try:
            yield
        finally:
            swap_language(prepared.model, prepared.source_language)

    return context


def build_trainer(prepared: Prepared, writer: Any, extra_callbacks: Sequence[Any] = ()) -> Any:
    """The Trainer (AdapterTrainer for adapter runs) with the unfreezing, probe and metric callbacks."""
    from adapters import AdapterTrainer
    from transformers import Trainer

    from fisherlab.hf import (
        FisherProbeCallback,
        UnfreezeCallback,
        ValidationMetricsCallback,
        make_trainer_class,
    )
    from fisherlab.tasks.training import data_collator, trainer_metrics

    config = prepared.config
    base_class = Trainer if config.model.task_module == "full" else AdapterTrainer
    trainer_class = make_trainer_class(base_class, regularisers=bool(prepared.regularisers))
    kwargs: dict[str, Any] = {}
    if prepared.regularisers:
        kwargs["regularisers"] = prepared.regularisers
        kwargs["writer"] = writer
    if config.training.label_names is None:  # adapters models hide the label arguments from the signature
        head = getattr(prepared.task, "head", "classification")
        config.training.label_names = ["start_positions", "end_positions"] if head == "qa" else ["labels"]
    if getattr(prepared.strategy, "data", None) == "target":  # fisher:data=target: the strategy's probe
        probe = prepared.strategy.make_probe()
        size = probe.batch_size or config.training.per_device_train_batch_size
        for language, dataset in probe_language_sets(prepared, prepared.strategy.languages).items():
            probe.add_language(language, dataset, data_collator(prepared.task, prepared.tokenizer),
                               config.probe.probe_language_examples or probe.n_batches * size)
        probe.language_context = language_adapter_context(prepared)
    if config.training.device.type == "cpu" and config.training.dataloader_pin_memory:
        config.training.dataloader_pin_memory = False  # pinning needs an accelerator; torch warns on CPU
    callbacks = [UnfreezeCallback(prepared.strategy, prepared.blocks, writer=writer),
                 ValidationMetricsCallback(writer, prepared.source_language)]
    if config.probe.probe_every:
        probe_callback = FisherProbeCallback(
            every=config.probe.probe_every, n_batches=config.probe.probe_batches,
            estimator=config.probe.probe_estimator, blocks=prepared.blocks, writer=writer,
            seed=config.training.seed, batch_size=config.probe.probe_batch_size,
            languages=probe_language_sets(prepared), language_examples=config.probe.probe_language_examples)
        probe_callback.probe.language_context = language_adapter_context(prepared)
        callbacks.append(probe_callback)
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


def run_training(config: RunConfig, extra_callbacks: Sequence[Any] = (),
                 after_training: Any = None) -> Path:
    """Run one configured experiment end to end; returns the run directory.

    ``after_training(prepared, trainer, writer)``, when given, runs on the main process after
    the zero-shot results are written and before the run is marked completed (e.g. the
    target-language stage of :mod:`fisherlab.two_stage`).

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
    if config.probe.probe_languages:
        fisher_meta.update(languages=config.probe.probe_languages, language_split=config.probe.probe_language_split,
                           language_examples=config.probe.probe_language_examples)
    if resume_from is not None:
        step = int(resume_from.name.split("-")[-1])
        writer = RunWriter.resume(run_dir, from_step=step)
    elif config.run.resume:  # interrupted before the first checkpoint: start over
        writer = RunWriter.create(run_dir, config=config.to_dict(), fisher=fisher_meta, labels=config.labels(),
                                  env=environment(prepared.model, config.training), overwrite=True)
    else:
        writer = RunWriter.create(run_dir, config=config.to_dict(), fisher=fisher_meta, labels=config.labels(),
                                  env=environment(prepared.model, config.training), overwrite=config.run.overwrite)
    try:
        trainer = build_trainer(prepared, writer, extra_callbacks)
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from is not None else None)
        if trainer.is_world_process_zero():
            scores = evaluate_languages(prepared, progress=config.run.progress)
            write_task_results(writer, prepared.task, prepared.source_language, scores, trainer.state.global_step)
            if after_training is not None:
                after_training(prepared, trainer, writer)
            writer.finish("completed")
    except BaseException as err:
        writer.finish("failed", error=f"{type(err).__name__}: {err}")
        raise
    return run_dir
