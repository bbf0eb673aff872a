"""Synthetic run stores with known answers, for tests, benchmarks and report demos.

:func:`write_synthetic_store` writes complete run directories through
:class:`fisherlab.runs.RunWriter` (so they exercise the real format) whose normalised
tr(F) curve, learning period, area, schedule and results are known in advance. The
truth is stored in each run's config under ``synthetic`` (after loading:
``runs["config.synthetic.peak_value"]`` etc.). No torch, only numpy.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fisherlab.runs import RunWriter

__all__ = ["write_synthetic_store", "SCHEDULE_METHODS", "curve_truth"]

SCHEDULE_METHODS = ("standard", "gradual", "fisher", "permutation", "random", "reverse", "lpft")
_DEFAULT_KNOBS: dict[str, Any] = {
    "models": ("synth-bert",),
    "tasks": ("synth-nli",),
    "languages": ("en", "de", "es", "sw", "th"),
    "source_language": "en",
    "metric": "accuracy",
    "every": 10,
    "shape": "triangle",
    "base": 0.5,
    "peak_range": (2.0, 6.0),
    "center_range": (0.2, 0.45),
    "width_range": (0.1, 0.35),
    "rho": 0.7,
    "driver": "learning_period",
    "result_scale": 3.0,
    "method_effects": {},
    "block_spread": 0.2,
    "frozen_factor": 0.3,
    "head": True,
    "metrics": True,
    "results": True,
    "status": "completed",
    "names": None,
    "estimator": "per_example",
    "created": "2026-01-01T00:00:00Z",
    "language_rho": None,
    "language_scale": 8.0,
    "language_sigma": 0.5,
}


def curve_truth(shape: str, steps: np.ndarray, base: float, amplitude: float, center: float,
                width: float) -> tuple[np.ndarray, dict[str, float]]:
    """The synthetic hill on ``steps`` and its exact (triangle) or nominal (gaussian) features.

    ``triangle``: ``base + amplitude * max(0, 1 - |s - center| / width)``; its width at half
    prominence is ``width`` and its area ``base * span + amplitude * width`` when the hill
    lies inside the steps and its kinks are on the grid. ``gaussian``:
    ``base + amplitude * exp(-(s - center)^2 / (2 sigma^2))`` with ``sigma`` chosen so that the
    full width at half maximum is ``width`` (exact only when the tails reach ``base``).
    """
    steps = np.asarray(steps, dtype=float)
    span = float(steps[-1] - steps[0])
    if shape == "triangle":
        curve = base + amplitude * np.clip(1.0 - np.abs(steps - center) / width, 0.0, None)
        area = base * span + amplitude * width
    elif shape == "gaussian":
        sigma = width / (2.0 * math.sqrt(2.0 * math.log(2.0)))
        curve = base + amplitude * np.exp(-((steps - center) ** 2) / (2.0 * sigma**2))
        area = base * span + amplitude * sigma * math.sqrt(2.0 * math.pi)
    else:
        raise ValueError(f"shape must be 'triangle' or 'gaussian', got {shape!r}")
    truth = {"peak_value": base + amplitude, "peak_step": float(center),
             "learning_period": float(width), "area": float(area)}
    return curve, truth


def _unfreeze_order(method: str, n_blocks: int, rng: np.random.Generator) -> list[list[int]]:
    """Layer indices unfrozen at each event (event j happens at step j * k)."""
    top_down = list(range(n_blocks - 1, -1, -1))
    if method == "standard":
        return [top_down]
    if method == "lpft":
        return [[], top_down]
    if method == "gradual":
        return [[i] for i in top_down]
    if method == "reverse":
        return [[i] for i in range(n_blocks)]
    if method == "fisher":  # top-down with a few adjacent swaps, like a noisy FUN schedule
        order = top_down[:]
        for _ in range(max(1, n_blocks // 4)):
            j = int(rng.integers(1, max(2, n_blocks - 1)))
            if j + 1 < n_blocks:
                order[j], order[j + 1] = order[j + 1], order[j]
        return [[i] for i in order]
    if method == "permutation":
        rest = [i for i in range(n_blocks) if i != n_blocks - 1]
        return [[n_blocks - 1]] + [[int(i)] for i in rng.permutation(rest)]
    if method == "random":
        return [[int(i)] for i in rng.permutation(n_blocks)]
    raise ValueError(f"unknown synthetic method {method!r}; choose from {SCHEDULE_METHODS}")


def write_synthetic_store(
    root: str | os.PathLike,
    n_runs: int = 12,
    methods: Sequence[str] = ("standard", "gradual", "fisher", "permutation"),
    seeds: Sequence[int] = (0, 1, 2),
    n_steps: int = 40,
    n_blocks: int = 6,
    seed: int = 0,
    **knobs: Any,
) -> list[Path]:
    """Write ``n_runs`` synthetic run directories under ``root``; returns their paths.

    Run ``i`` uses ``methods[i % len(methods)]``, ``seeds[(i // len(methods)) % len(seeds)]``
    and cycles over ``models`` x ``tasks`` every ``len(methods) * len(seeds)`` runs. Each run
    has ``n_steps`` probe steps (``0, every, 2*every, ...``) with ``n_blocks`` layer blocks
    ``layer.0..`` (+ ``head``), a schedule per method (one of :data:`SCHEDULE_METHODS`), a
    validation curve and ``results.json``.

    Known answers (stored under ``config["synthetic"]``): the mean trace over the *trainable
    layer* blocks at every step equals the hill from :func:`curve_truth` exactly (trainable
    blocks deviate from it by zero-sum offsets; frozen blocks read ``frozen_factor`` times
    the hill; the head reads 1.0), so ``peak_value``, ``peak_step``, ``learning_period`` and
    ``area`` are exact for ``shape="triangle"`` and an unsmoothed curve. The cross-lingual
    average (mean over target languages) is
    ``60 + method_effects[method] + result_scale * (rho * z + sqrt(1 - rho^2) * e)`` where
    ``z`` is the z-scored ``driver`` feature within the run's (model, task) cell and ``e``
    standard normal noise, so the population correlation of the driver with ``xling_avg``
    is ``rho`` (``rho=0``: the null case). Per-language scores add fixed zero-sum offsets
    (the last language is the lowest) and the source language scores about 80.

    Knobs (defaults in ``_DEFAULT_KNOBS``): ``models``, ``tasks``, ``languages``,
    ``source_language``, ``metric``, ``every`` (training steps between probes), ``shape``
    (``triangle``|``gaussian``), ``base``, ``peak_range`` (hill amplitude), ``center_range``
    and ``width_range`` (fractions of the step span, snapped to the probe grid; a
    triangle is kept inside the probed steps so its baseline is reached on both sides), ``rho``,
    ``driver`` (``learning_period``|``peak_value``|``area``|``peak_step``), ``result_scale``,
    ``method_effects`` (method -> points), ``block_spread``, ``frozen_factor``, ``head``,
    ``metrics``, ``results``, ``status``, ``names`` (run ids, one per run), ``estimator``,
    ``created``. Same arguments, same files (byte for byte).

    Target-language tr(F) (``language_rho`` not None; default None writes none): every
    probe step also gets rows with ``language`` for each target language, whose mean over
    the trainable layer blocks is ``base + shape(t) * A * exp(language_sigma * u)``
    (``shape``: the run's hill scaled to height 1; ``A``: the middle of ``peak_range``;
    ``u`` standard normal per run and language), so that curve's ``peak_value`` is a
    monotone function of ``u``. Per-language results then add
    ``language_scale * (language_rho * u + sqrt(1 - language_rho^2) * e)``, centred over
    the run's target languages (``xling_avg`` is unchanged): the planted relation between
    a language's tr(F) peak and its result (``language_rho=0``: the null case). The truth
    is ``config["synthetic"]["languages"][language] = {"u", "peak_value"}``.
    """
    unknown = set(knobs) - set(_DEFAULT_KNOBS)
    if unknown:
        raise TypeError(f"unknown knob(s) {sorted(unknown)}; known: {sorted(_DEFAULT_KNOBS)}")
    opts = {**_DEFAULT_KNOBS, **knobs}
    if n_runs < 1 or n_steps < 3 or n_blocks < 1:
        raise ValueError("need n_runs >= 1, n_steps >= 3 and n_blocks >= 1")
    if not methods or not seeds:
        raise ValueError("methods and seeds must be non-empty")
    names = opts["names"]
    if names is not None and len(names) != n_runs:
        raise ValueError(f"names has {len(names)} entries, expected n_runs={n_runs}")
    languages = list(opts["languages"])
    source = opts["source_language"]
    if source not in languages or len(languages) < 2:
        raise ValueError("languages must contain source_language and at least one target")
    root = Path(root)
    rng = np.random.default_rng(seed)
    every = int(opts["every"])
    steps = np.arange(n_steps) * every
    span = float(steps[-1])
    n_layers = n_blocks
    k = max(every, every * int(round((n_steps * 0.6) / max(1, n_layers))))

    # Draw every run's hill first: results depend on the z-scored driver within a cell.
    plans = []
    for i in range(n_runs):
        method = methods[i % len(methods)]
        run_seed = int(seeds[(i // len(methods)) % len(seeds)])
        cell = i // (len(methods) * len(seeds))
        model = opts["models"][cell % len(opts["models"])]
        task = opts["tasks"][(cell // len(opts["models"])) % len(opts["tasks"])]
        amplitude = float(rng.uniform(*opts["peak_range"]))
        width = every * max(2, round(float(rng.uniform(*opts["width_range"])) * span / every))
        center = every * round(float(rng.uniform(*opts["center_range"])) * span / every)
        if opts["shape"] == "triangle":  # keep the whole hill inside the probed steps
            width = min(width, every * max(1, int(span / every) // 2 - 1))
            center = min(max(center, width + every), span - width - every)
        curve, truth = curve_truth(opts["shape"], steps, float(opts["base"]), amplitude, center, width)
        plans.append({"method": method, "seed": run_seed, "model": model, "task": task,
                      "curve": curve, "truth": truth, "noise": float(rng.standard_normal()),
                      "lang_noise": rng.normal(0.0, 0.5, size=len(languages) - 1),
                      "source_noise": float(rng.normal(0.0, 1.0)),
                      "schedule_rng": int(rng.integers(2**31))})
    driver = opts["driver"]
    rho = float(opts["rho"])
    cells: dict[tuple[str, str], list[int]] = {}
    for i, plan in enumerate(plans):
        cells.setdefault((plan["model"], plan["task"]), []).append(i)
    for members in cells.values():
        values = np.array([plans[i]["truth"][driver] for i in members])
        sd = values.std()
        z = (values - values.mean()) / sd if sd > 0 else np.zeros_like(values)
        for i, zi in zip(members, z, strict=True):
            plans[i]["z"] = float(zi)

    targets = [lang for lang in languages if lang != source]
    offsets = np.linspace(3.0, -6.0, len(targets)) if len(targets) > 1 else np.zeros(1)
    offsets = offsets - offsets.mean()
    effects: Mapping[str, float] = opts["method_effects"]
    planted = _plant_languages(plans, targets, opts, rng) if opts["language_rho"] is not None else None
    paths = []
    for i, plan in enumerate(plans):
        run_id = names[i] if names is not None else (
            f"{plan['model']}-{plan['task']}-{plan['method']}-s{plan['seed']}-{i:04d}")
        run_dir = root / _safe_dir_name(run_id, i)
        xling = 60.0 + float(effects.get(plan["method"], 0.0)) + float(opts["result_scale"]) * (
            rho * plan["z"] + math.sqrt(max(0.0, 1.0 - rho**2)) * plan["noise"])
        truth = {**plan["truth"], "xling_avg": xling, "z": plan["z"], "shape": opts["shape"]}
        if planted is not None:
            truth["languages"] = planted[i]["truth"]
        config = {"method": plan["method"], "seed": plan["seed"], "model": plan["model"],
                  "task": plan["task"], "task_module": "seq_bn",
                  "unfreezing": {"strategy": plan["method"], "k": k},
                  "synthetic": truth}
        writer = RunWriter.create(run_dir, config, run_id=run_id, overwrite=True,
                                  fisher={"estimator": opts["estimator"], "every": every, "n_batches": 4},
                                  env={"fisherlab": "synthetic"}, created=opts["created"], fsync=False)
        order = _unfreeze_order(plan["method"], n_layers, np.random.default_rng(plan["schedule_rng"]))
        unfrozen_at = {}
        for j, layers in enumerate(order):
            blocks = [f"layer.{layer}" for layer in layers]
            if j == 0 and opts["head"]:
                blocks = ["head", *blocks]
            for layer in layers:
                unfrozen_at[layer] = j * k
            if blocks:
                writer.log_schedule(j * k, blocks, plan["method"],
                                    scores={b: round(float(n_layers - idx), 3) for idx, b in enumerate(blocks)})
        curve = plan["curve"]
        spread = float(opts["block_spread"])
        for s_idx, step in enumerate(steps):
            trainable = [layer for layer in range(n_layers) if unfrozen_at.get(layer, math.inf) <= step]
            deviation = {}
            if len(trainable) > 1:
                centred = np.arange(len(trainable)) - (len(trainable) - 1) / 2.0
                centred = centred / np.abs(centred).max()
                deviation = dict(zip(trainable, spread * centred, strict=True))
            rows = []
            for layer in range(n_layers):
                is_trainable = layer in unfrozen_at and unfrozen_at[layer] <= step
                factor = 1.0 + deviation.get(layer, 0.0) if is_trainable else float(opts["frozen_factor"])
                rows.append({"block": f"layer.{layer}", "layer": layer,
                             "trace": float(curve[s_idx] * factor), "stderr": float(0.05 * curve[s_idx]),
                             "trainable": bool(is_trainable), "n_examples": 32})
            if opts["head"]:
                rows.append({"block": "head", "layer": None, "trace": 1.0, "stderr": 0.01,
                             "trainable": True, "n_examples": 32})
            if planted is not None:
                rows += [{**row, "trace": float(target_curve[s_idx] / curve[s_idx] * row["trace"]),
                          "language": lang}
                         for lang, target_curve in planted[i]["curves"].items() for row in rows
                         if row["layer"] is not None]
            writer.log_fisher(rows, step=int(step))
            if opts["metrics"]:
                value = 40.0 + 40.0 / (1.0 + math.exp(-(step - plan["truth"]["peak_step"]) / max(every, 1)))
                writer.log_metric(int(step), "validation", source, opts["metric"], round(value, 4))
        if opts["results"]:
            per_language = {source: 80.0 + plan["source_noise"]}
            noise = plan["lang_noise"] - plan["lang_noise"].mean()
            for lang, offset, eps in zip(targets, offsets, noise, strict=True):
                per_language[lang] = xling + float(offset) + float(eps)
                if planted is not None:
                    per_language[lang] += planted[i]["result_shift"][lang]
            writer.write_results(opts["metric"], source, per_language, split="test")
        if opts["status"] != "running":
            writer.finish(opts["status"], finished=opts["created"])
        paths.append(run_dir)
    return paths


def _plant_languages(plans: list[dict], targets: list[str], opts: Mapping[str, Any],
                     rng: np.random.Generator) -> list[dict]:
    """Per run: target-language curves, the (centred) result shifts and the truth (see
    ``write_synthetic_store``'s target-language paragraph)."""
    rho, scale, sigma = float(opts["language_rho"]), float(opts["language_scale"]), float(opts["language_sigma"])
    if not -1.0 <= rho <= 1.0:
        raise ValueError(f"language_rho must be in [-1, 1], got {rho}")
    height = (opts["peak_range"][0] + opts["peak_range"][1]) / 2.0
    base = float(opts["base"])
    out = []
    for plan in plans:
        u = rng.standard_normal(len(targets))
        e = rng.standard_normal(len(targets))
        shift = scale * (rho * u + math.sqrt(max(0.0, 1.0 - rho**2)) * e)
        shift = shift - shift.mean()
        hill = plan["curve"] - base
        shape = hill / hill.max() if hill.max() > 0 else np.zeros_like(hill)
        curves = {lang: base + shape * height * math.exp(sigma * float(ui)) for lang, ui in zip(targets, u, strict=True)}
        out.append({"curves": curves, "result_shift": dict(zip(targets, map(float, shift), strict=True)),
                    "truth": {lang: {"u": float(ui), "peak_value": float(curves[lang].max())}
                              for lang, ui in zip(targets, u, strict=True)}})
    return out


def _safe_dir_name(run_id: str, index: int) -> str:
    """A directory name for ``run_id`` that cannot escape ``root`` (weird ids are kept in run.json)."""
    cleaned = "".join(ch if ch.isalnum() or ch in "-_.=+" else "_" for ch in run_id).strip(".")
    return cleaned[:80] or f"run-{index:04d}"
