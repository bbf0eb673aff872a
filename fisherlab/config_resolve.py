"""Resolving a run's configuration against its task: base model, language adapters, languages.

:func:`resolve_task` loads the configured task and fills in what the task provides (base model,
MAD-X language adapters, source and evaluation languages, reduction factor, model name),
raising :class:`~fisherlab.config.ConfigError` naming the field. ``train.prepare_run`` and the
sweep's plan (also ``--dry-run``) both call it, so a plan that is accepted is one the runs accept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fisherlab.config import ConfigError, RunConfig, load_task, parse_lang_adapters


def resolve_lang_adapters(config: RunConfig, defaults: dict[str, Any]) -> dict[str, str]:
    """The run's language adapters: the config's ``lang_adapters`` when given, else the task's.

    The full fine-tuning baseline (``task_module: full``; FUN paper Figure 2, Table 7)
    gets none unless the config names them: the task's default MAD-X language adapters
    belong to the adapter methods.
    """
    given = parse_lang_adapters(config.model.lang_adapters)
    if given is not None:
        return given
    if config.model.task_module == "full":
        return {}
    return dict(defaults.get("lang_adapters") or {})


def resolve_task(config: RunConfig) -> tuple[Any, dict[str, Any]]:
    """The task and the run's settings that need the task but no model: base, language adapters,
    source and evaluation languages, reduction factor, model name. ConfigError names the field.

    ``train.prepare_run`` and the sweep's plan (also ``--dry-run``) both call it, so a plan
    that is accepted is one the runs accept."""
    task = load_task(config)
    defaults = dict(task.model_defaults() or {})
    base = config.model.base or defaults.get("base")
    if base is None:
        raise ConfigError(f"base: required for task {config.task.task!r} (it brings no default base model)")
    if isinstance(base, (str, Path)) and str(base).startswith(("/", ".", "~")) \
            and not Path(str(base)).expanduser().exists():
        raise ConfigError(f"base: model path {str(base)!r} does not exist")
    lang_adapters = resolve_lang_adapters(config, defaults)
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
    model_name = defaults.get("model_name") or (Path(str(base)).name if Path(str(base)).exists() else str(base))
    return task, {"base": base, "lang_adapters": lang_adapters, "source_language": source, "languages": languages,
                  "reduction_factor": reduction, "model_name": model_name}
