"""The FUN paper's hyper-parameters (Liu et al., 2024, Appendix B and G.4) as sweep presets.

Transcribed from the paper's text: Table 3 (main experiments, MAD-X task adapters),
Table 4 (reduced task training data: 1k / 5k / 10k examples) and Table 15 (LoRA task
adapters). "x/y" in the tables is x for standard adapter training and y for every
scheduled unfreezing method; ``k-LPFT``, ``k-GU`` and ``k-FUN`` are the unfreezing
intervals of LPFT, GU and FUN. Common to all: AdamW, no warm-up, maximum gradient norm 1
(Appendix B); tr(F) every 100 steps, every 50 for XCOPA (footnote 8); task adapters with
reduction factor 16 (Appendix B); LoRA ``r=8, alpha=8`` (G.4).

Choices the tables leave open, stated here and in ``analyses/fun/README.md``: ``+Rand``
(``random``) uses k-FUN (it is FUN's random-choice control); the permutation schedules and
the top-down order (``permutation``, ``top_down``) use k-GU ("the remaining experimental
conditions are unchanged", section 5.2, i.e. GU's); Table 4 gives one k per data size for
all scheduled methods; Table 15 has no LPFT column.

Each preset is a :class:`SweepPreset`: ``base`` config fields (``fisherlab train`` names)
and ``method_overrides`` (per method label: ``k`` and config fields), the form
``fisherlab.sweep.plan_sweep`` takes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fisherlab.errors import FisherlabError

__all__ = ["FUN_PRESETS", "PresetError", "SweepPreset", "fun_preset", "preset_names"]


class PresetError(FisherlabError, ValueError):
    """An unknown preset name."""

MODELS = {"mbert": "bert-base-multilingual-cased", "xlmr": "xlm-roberta-base"}
"""The paper's base models (Table 1: mBERT and XLM-R base)."""

TASKS = {"squad": ("mlqa", "xquad"), "copa": ("xcopa",), "mnli": ("xnli",)}
"""Training dataset of a table row -> the fisherlab tasks evaluated on it."""

SCHEDULED = ("lpft", "gradual", "fisher", "random", "permutation", "top_down")
"""Method labels that take the tables' "y" (scheduled unfreezing) values."""


@dataclass(frozen=True)
class SweepPreset:
    """A sweep's per-run settings from a paper table (``source`` names the table and row)."""

    name: str
    source: str
    base: Mapping[str, Any]
    method_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


def _row(table: str, data: str, model: str, epochs: tuple[float, float], lr: tuple[float, float],
         batch: int, schedule: str, k: Mapping[str, int], module: str = "seq_bn",
         extra_name: str = "") -> dict[str, SweepPreset]:
    """Presets of one table row, one per fisherlab task trained on ``data``."""
    std_epochs, sched_epochs = epochs
    std_lr, sched_lr = lr
    out = {}
    for task in TASKS[data]:
        base = {"task": task, "base": MODELS[model], "task_module": module, "num_train_epochs": std_epochs,
                "learning_rate": std_lr, "per_device_train_batch_size": batch, "lr_scheduler_type": schedule,
                "warmup_steps": 0, "max_grad_norm": 1.0, "probe_every": 50 if data == "copa" else 100}
        if module == "seq_bn":
            base["reduction_factor"] = 16
        overrides: dict[str, dict[str, Any]] = {}
        for method in SCHEDULED:
            key = {"lpft": "lpft", "gradual": "gu", "fisher": "fun", "random": "fun",
                   "permutation": "gu", "top_down": "gu"}[method]
            if key not in k:
                continue
            entry: dict[str, Any] = {"k": k[key]}
            if sched_epochs != std_epochs:
                entry["num_train_epochs"] = sched_epochs
            if sched_lr != std_lr:
                entry["learning_rate"] = sched_lr
            overrides[method] = entry
        name = f"{table}/{model}-{task}{extra_name}"
        out[name] = SweepPreset(name=name, source=f"Liu et al. (2024) {_TABLE_NAMES[table]}, "
                                f"{data.upper()} {model}{extra_name}", base=base, method_overrides=overrides)
    return out


_TABLE_NAMES = {"table3": "Table 3", "table4": "Table 4", "table15": "Table 15"}


def _build() -> dict[str, SweepPreset]:
    presets: dict[str, SweepPreset] = {}
    # Table 3: main experiments (MAD-X task adapters)
    presets |= _row("table3", "squad", "mbert", (5, 5), (5e-4, 5e-4), 32, "linear", {"lpft": 800, "gu": 800, "fun": 800})
    presets |= _row("table3", "squad", "xlmr", (15, 15), (2e-4, 5e-4), 32, "linear", {"lpft": 800, "gu": 800, "fun": 100})
    presets |= _row("table3", "copa", "mbert", (500, 5000), (1e-4, 1e-5), 64, "constant", {"lpft": 800, "gu": 50, "fun": 50})
    presets |= _row("table3", "copa", "xlmr", (500, 5000), (1e-4, 1e-5), 64, "constant",
                    {"lpft": 800, "gu": 1000, "fun": 1000})
    presets |= _row("table3", "mnli", "mbert", (15, 15), (5e-4, 5e-4), 128, "linear", {"lpft": 25, "gu": 800, "fun": 50})
    presets |= _row("table3", "mnli", "xlmr", (15, 15), (5e-4, 5e-4), 128, "linear", {"lpft": 800, "gu": 800, "fun": 800})
    # Table 4: reduced task training data; one k per data size for every scheduled method
    for data, batch, epochs, ks in (("squad", 32, 20, {"mbert": (10, 50, 50), "xlmr": (10, 50, 50)}),
                                    ("mnli", 128, 50, {"mbert": (1, 25, 25), "xlmr": (1, 25, 10)})):
        for model, per_size in ks.items():
            for size, k in zip((1000, 5000, 10000), per_size, strict=True):
                rows = _row("table4", data, model, (epochs, epochs), (5e-4, 5e-4), batch, "linear",
                            {"lpft": k, "gu": k, "fun": k}, extra_name=f"-{size // 1000}k")
                for name, preset in rows.items():
                    rows[name] = SweepPreset(preset.name, preset.source,
                                             {**preset.base, "max_train_samples": size}, preset.method_overrides)
                presets |= rows
    # Table 15: LoRA task adapters (r=8, alpha=8); no LPFT
    lora = {"lora_r": 8, "lora_alpha": 8}
    for data, model, epochs, lr, batch, sched, gu, fun in (
            ("squad", "mbert", (5, 5), (5e-4, 8e-4), 32, "linear", 800, 800),
            ("squad", "xlmr", (15, 15), (5e-4, 5e-4), 32, "linear", 800, 800),
            ("copa", "mbert", (500, 5000), (1e-4, 1e-4), 64, "constant", 50, 100),
            ("copa", "xlmr", (500, 5000), (1e-4, 1e-4), 64, "constant", 100, 200),
            ("mnli", "mbert", (15, 15), (5e-4, 5e-4), 128, "linear", 50, 50),
            ("mnli", "xlmr", (15, 15), (5e-4, 5e-4), 128, "linear", 800, 800)):
        rows = _row("table15", data, model, epochs, lr, batch, sched, {"gu": gu, "fun": fun}, module="lora")
        presets |= {n: SweepPreset(p.name, p.source, {**p.base, **lora}, p.method_overrides) for n, p in rows.items()}
    return presets


FUN_PRESETS: dict[str, SweepPreset] = _build()
"""Preset name (``table3/mbert-xnli``, ``table4/xlmr-mlqa-5k``, ``table15/mbert-xcopa``) -> preset."""


def preset_names() -> list[str]:
    """All preset names, sorted."""
    return sorted(FUN_PRESETS)


def fun_preset(name: str) -> SweepPreset:
    """The preset called ``name``; an unknown name raises :class:`PresetError` listing the known ones."""
    try:
        return FUN_PRESETS[name]
    except KeyError:
        raise PresetError(f"preset: unknown preset {name!r}; known presets: {', '.join(preset_names())}") from None
