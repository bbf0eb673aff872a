"""MAD-X assembly: base model + language adapters + task adapter/LoRA + task head; language swap.

``build_madx`` follows Pfeiffer et al. (2020) as used by the FUN paper (§3.1):
language adapters (``seq_bn_inv``) are loaded (or trained and saved on demand),
a task module is added on top (``seq_bn`` bottleneck, reduction factor 16, or
LoRA r=8, alpha=8 on query and value), ``Stack(source_language, task)`` is
activated, and only the task module and the task head are trainable. Zero-shot
transfer swaps the language adapter (``swap_language``). ``task_module="full"``
is the full fine-tuning baseline: the whole base model and the head train.

The set of task-module and head parameters is discovered by what each
``add_*`` call created, not by matching names, so any encoder the ``adapters``
library supports works.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fisherlab.errors import FisherlabError

TASK_MODULES = ("seq_bn", "lora", "full")
HEAD_KINDS = ("classification", "multiple_choice", "qa", "tagging")
LANGUAGE_ADAPTER_CONFIG = "seq_bn_inv"

LanguageAdapterTrainer = Callable[[torch.nn.Module, str, Path], None]
"""``trainer(model, language, path)``: train adapter ``language`` in ``model`` and save it to ``path``."""


class MadxError(FisherlabError, ValueError):
    """A MAD-X model cannot be built or switched as asked (the message names the field)."""


@dataclass(frozen=True)
class MadxSetup:
    """What ``build_madx`` assembled; kept on the model as ``model.fisherlab_madx``."""

    task: str
    task_module: str
    head: str
    source_language: str | None
    active_language: str | None
    languages: tuple[str, ...]
    trainable: tuple[str, ...]  # parameter names that build_madx left trainable
    model_name: str  # display name of the base (hub name, directory name, or as given)
    task_parameters: tuple[str, ...]  # the task module (or the base model, for "full")
    head_parameters: tuple[str, ...]


@contextlib.contextmanager
def quiet_train_adapter() -> Iterator[None]:
    """Silence the spurious "adapters available but none activated" warning ``train_adapter`` logs internally."""
    logger = logging.getLogger("adapters.model_mixin")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~", ".\\")) or os.path.isabs(name) or (
        os.sep in name and name.count("/") != 1) or name.endswith((".bin", ".safetensors"))


def load_base(base: str | Path, **kwargs: Any) -> torch.nn.Module:
    """``AutoAdapterModel.from_pretrained(base)``: a local directory or a hub name."""
    from adapters import AutoAdapterModel

    text = os.fspath(base)
    path = Path(text).expanduser()
    if isinstance(base, Path) or _looks_like_path(text) or path.exists():
        if not path.is_dir():
            raise MadxError(f"build_madx: base {text!r} does not exist (expected a model directory or a hub name)")
        if not (path / "config.json").is_file():
            raise MadxError(f"build_madx: base directory {text!r} has no config.json (not a save_pretrained model)")
        return AutoAdapterModel.from_pretrained(str(path), **kwargs)
    try:
        return AutoAdapterModel.from_pretrained(text, **kwargs)
    except OSError as err:
        raise MadxError(f"build_madx: base {text!r} could not be loaded from the hub or a local path ({err})") from err


def _added_parameters(model: torch.nn.Module, add: Callable[[], Any]) -> list[str]:
    """Run ``add`` and return the names of the parameters it created."""
    before = {id(p) for p in model.parameters()}
    add()
    return [name for name, p in model.named_parameters() if id(p) not in before]


def _load_adapter_dir(model: torch.nn.Module, language: str, path: Path) -> None:
    """``load_adapter`` plus the adapter's lexical table (private-token embeddings), if it carries one."""
    from fisherlab.testbed.lexical import load_lexical

    model.load_adapter(str(path), load_as=language, with_head=False)
    load_lexical(model, language, path)


def load_language_adapter(model: torch.nn.Module, language: str, source: str | Path,
                          trainer: LanguageAdapterTrainer | None = None) -> list[str]:
    """Load language adapter ``language`` from a directory or AdapterHub/HF id; train it if missing.

    A local path that does not exist is trained with ``trainer`` and saved there;
    without a trainer it is an error. Returns the names of the loaded parameters.
    """
    text = os.fspath(source)
    path = Path(text).expanduser()
    if isinstance(source, Path) or _looks_like_path(text) or path.exists():
        if not (path / "adapter_config.json").is_file():
            if trainer is None:
                raise MadxError(
                    f"build_madx: lang_adapters[{language!r}] = {text!r} is not an adapter directory "
                    "(no adapter_config.json) and no trainer was given to create it")
            path.parent.mkdir(parents=True, exist_ok=True)
            return _added_parameters(model, lambda: trainer(model, language, path))
        return _added_parameters(model, lambda: _load_adapter_dir(model, language, path))
    try:
        return _added_parameters(model, lambda: model.load_adapter(text, load_as=language, with_head=False))
    except Exception as err:  # the hub client raises many types; name the field instead
        raise MadxError(f"build_madx: lang_adapters[{language!r}] = {text!r} could not be loaded ({err})") from err


ADDABLE_HEADS = (*HEAD_KINDS, "mlm")


def add_head(model: torch.nn.Module, name: str, head: str, *, num_labels: int = 2, num_choices: int = 2) -> None:
    """Add an ``adapters`` prediction head called ``name`` of kind ``head`` (one of ``ADDABLE_HEADS``)."""
    if head == "classification":
        model.add_classification_head(name, num_labels=num_labels)
    elif head == "multiple_choice":
        model.add_multiple_choice_head(name, num_choices=num_choices)
    elif head == "qa":
        model.add_qa_head(name)
    elif head == "tagging":
        model.add_tagging_head(name, num_labels=num_labels)
    elif head == "mlm":
        model.add_masked_lm_head(name)
    else:
        raise MadxError(f"add_head: head {head!r} unknown; expected one of {ADDABLE_HEADS}")


def task_module_config(task_module: str, reduction_factor: int = 16, lora_r: int = 8, lora_alpha: int = 8):
    """The ``adapters`` config of a task module (MAD-X bottleneck or LoRA on q and v)."""
    from adapters import LoRAConfig, SeqBnConfig

    if task_module == "seq_bn":
        return SeqBnConfig(reduction_factor=reduction_factor)
    if task_module == "lora":
        return LoRAConfig(r=lora_r, alpha=lora_alpha, selfattn_lora=True, attn_matrices=["q", "v"])
    raise MadxError(f"build_madx: task_module {task_module!r} unknown; expected one of {TASK_MODULES}")


def build_madx(
    base: str | Path | torch.nn.Module,
    task: Any,
    *,
    task_module: str = "seq_bn",
    head: str | None = None,
    num_labels: int | None = None,
    num_choices: int = 2,
    lang_adapters: Mapping[str, str | Path] | None = None,
    source_language: str | None = "en",
    reduction_factor: int = 16,
    lora_r: int = 8,
    lora_alpha: int = 8,
    train_missing: LanguageAdapterTrainer | None = None,
    seed: int = 0,
    model_name: str | None = None,
) -> torch.nn.Module:
    """Assemble a MAD-X model for ``task`` and activate ``Stack(source_language, task)``.

    ``base``: hub name (``bert-base-multilingual-cased``), local ``save_pretrained``
    directory, or an already loaded adapter model. ``task``: a task name or a
    ``fisherlab.tasks`` Task (its ``name``, ``head`` and ``num_labels`` are used
    unless given). ``lang_adapters``: language -> adapter directory or hub id; a
    missing local directory is created with ``train_missing`` when given. The
    task module and head are initialised under a forked RNG seeded with
    ``seed``. Existing prediction heads of the base (e.g. its MLM head) are removed.
    ``model_name`` is a display name of the base kept in the setup (default: the
    hub name or directory name).
    Returns the model in eval mode with ``model.fisherlab_madx`` (a ``MadxSetup``).
    """

    task_name = task if isinstance(task, str) else getattr(task, "name", None)
    if not task_name or not isinstance(task_name, str):
        raise MadxError(f"build_madx: task must be a name or a Task with a .name, got {task!r}")
    head = head or getattr(task, "head", None) or "classification"
    if num_labels is None:
        num_labels = getattr(task, "num_labels", None) or 2
    if head not in HEAD_KINDS:
        raise MadxError(f"build_madx: head {head!r} unknown; expected one of {HEAD_KINDS}")
    if task_module not in TASK_MODULES:
        raise MadxError(f"build_madx: task_module {task_module!r} unknown; expected one of {TASK_MODULES}")
    for field_name, value in (("reduction_factor", reduction_factor), ("lora_r", lora_r), ("lora_alpha", lora_alpha)):
        if value <= 0:
            raise MadxError(f"build_madx: {field_name} must be positive, got {value}")
    lang_adapters = dict(lang_adapters or {})
    if lang_adapters and source_language is not None and source_language not in lang_adapters:
        raise MadxError(f"build_madx: source_language {source_language!r} has no entry in lang_adapters "
                        f"(languages given: {sorted(lang_adapters)})")
    if not lang_adapters:
        source_language = None

    model = base if isinstance(base, torch.nn.Module) else load_base(base)
    for existing in list(getattr(model, "heads", {}).keys()):
        model.delete_head(existing)
    language_params: list[str] = []
    for language, source in lang_adapters.items():
        language_params += load_language_adapter(model, language, source, train_missing)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if task_module == "full":
            adapter_names = set(language_params)
            task_params = [n for n, _ in model.named_parameters() if n not in adapter_names]
        else:
            config = task_module_config(task_module, reduction_factor, lora_r, lora_alpha)
            task_params = _added_parameters(model, lambda: model.add_adapter(task_name, config=config))
        head_params = _added_parameters(model, lambda: add_head(model, task_name, head, num_labels=num_labels,
                                                                       num_choices=num_choices))

    if task_module != "full":
        with quiet_train_adapter():
            model.train_adapter(task_name)
    trainable = set(task_params) | set(head_params)
    for name, param in model.named_parameters():
        param.requires_grad_(name in trainable)
    if model_name is None:
        model_name = type(base).__name__ if isinstance(base, torch.nn.Module) else Path(os.fspath(base)).name
    setup = MadxSetup(task=task_name, task_module=task_module, head=head, source_language=source_language,
                      active_language=None, languages=tuple(lang_adapters), model_name=model_name,
                      trainable=tuple(n for n, _ in model.named_parameters() if n in trainable),
                      task_parameters=tuple(task_params), head_parameters=tuple(head_params))
    model.fisherlab_madx = setup
    _activate(model, source_language)
    model.eval()
    return model


def madx_setup(model: torch.nn.Module) -> MadxSetup:
    """The ``MadxSetup`` of a model made by ``build_madx``."""
    setup = getattr(model, "fisherlab_madx", None)
    if not isinstance(setup, MadxSetup):
        raise MadxError("model was not built by fisherlab.models.build_madx (no fisherlab_madx setup)")
    return setup


def _activate(model: torch.nn.Module, language: str | None) -> None:
    from adapters.composition import Stack

    setup = madx_setup(model)
    if setup.task_module == "full":
        model.active_adapters = Stack(language) if language is not None else None
    else:
        model.active_adapters = Stack(language, setup.task) if language is not None else Stack(setup.task)
    model.active_head = setup.task
    model.fisherlab_madx = dataclasses.replace(setup, active_language=language)


def swap_language(model: torch.nn.Module, language: str) -> None:
    """Activate ``Stack(language, task)`` (zero-shot evaluation in ``language``); trainability is unchanged."""
    setup = madx_setup(model)
    if language not in setup.languages:
        raise MadxError(f"swap_language: language {language!r} has no language adapter in this model; "
                        f"loaded: {list(setup.languages)}")
    _activate(model, language)
