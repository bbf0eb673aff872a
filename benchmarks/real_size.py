"""Cost ratios at real model size (mBERT-base / XLM-R-base shape, random weights), on CPU or GPU.

Models are built from configs of the real shape (12 layers, hidden 768, 12 heads,
intermediate 3072, vocabulary 119,547 for mBERT / 250,002 for XLM-R, 512 / 514 positions)
with a task module (``seq_bn`` reduction 16, or LoRA r=8 on q,v) and a 3-class head.
Three parts (``--part``), each printing a Markdown table (and ``--json FILE``):

* ``fisher`` -- per-example and exact tr(F), the bare engine, torch.func and Opacus as
  ratios to one forward+backward of the same batch (``fisher_cost.make_methods``), plus
  "forward only" so the exact estimator's floor ``(F + (C-1) B) / (F + B)`` can be read off;
  peak memory of one call (``_timing.peak_memory``) as ratios to forward+backward.
* ``fun`` -- unit costs on the real-size model (a training step with all task blocks
  trainable, one with only the top layer and head, one FUN probe batch = ``FisherProbe``
  with one batch) and the FUN/GU training-time ratio they imply at the paper's settings
  (Table 3: 12 measurements of at most 40 batches, one per k steps; GU's steps between
  decisions are cheaper, interpolated linearly in the number of unfrozen layers);
  ``--trainer-steps N`` also times a short ``Trainer`` run of GU and FUN (``schedule_overhead.train_once``).
* ``reg`` -- the regularisers of ``regulariser_cost.VARIANTS`` per training step, over a plain step.

Timings are medians over repetitions of within-repetition ratios, methods in shuffled
(``fisher``/``reg``) order; ``--clock cpu --threads 1`` measures process CPU time (for a
shared machine).

    python benchmarks/real_size.py --part fisher --preset mbert-base --modules seq_bn,lora --batch 4 \\
        --threads 1 --clock cpu --reps 5 --memory
    python benchmarks/real_size.py --part fun --preset mbert-base --batch 4 --threads 1 --clock cpu
    python benchmarks/real_size.py --part reg --preset mbert-base --batch 4 --threads 1 --clock cpu --reps 5
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import warnings
from collections.abc import Callable

import torch
from _timing import clock, cuda_peak_memory, peak_memory, profile_ops, ratio_spread, time_methods
from fisher_cost import block_params, make_methods
from regulariser_cost import GOALS, VARIANTS
from schedule_overhead import train_once

from fisherlab.blocks import BlockMap
from fisherlab.fisher.probe import FisherProbe
from fisherlab.regularisers import regularised_loss, regulariser_from_string
from fisherlab.tiny import tiny_adapter_model, tiny_batch
from fisherlab.torch_utils import trainable_parameters

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

PRESETS = {  # the real models' configs (bert-base-multilingual-cased, xlm-roberta-base)
    "mbert-base": dict(arch="bert", layers=12, hidden=768, heads=12, intermediate=3072, vocab=119_547,
                       max_positions=512),
    # tiny_config adds RoBERTa's 2 padding positions: 512 -> 514 as in xlm-roberta-base
    "xlmr-base": dict(arch="xlm-roberta", layers=12, hidden=768, heads=12, intermediate=3072, vocab=250_002,
                      max_positions=512),
    "tiny": dict(arch="bert", layers=2, hidden=32, heads=2, intermediate=64, vocab=500, max_positions=512),
}
# The FUN paper's Table 3 (scheduled-unfreezing runs): examples, batch size, epochs, k of FUN.
# n_batches = min(40, batches per epoch) as the probe draws them. SQuAD (QA, seq 384) and COPA
# (multiple choice) are approximated with the unit costs of the classification model measured here.
PAPER_RUNS = {
    "MNLI mBERT": dict(examples=392_702, batch=128, epochs=15, k=50),
    "MNLI XLM-R": dict(examples=392_702, batch=128, epochs=15, k=800),
    "SQuAD mBERT": dict(examples=87_599, batch=32, epochs=5, k=800),
    "SQuAD XLM-R": dict(examples=87_599, batch=32, epochs=15, k=100),
    "COPA mBERT": dict(examples=400, batch=64, epochs=5000, k=50),
    "COPA XLM-R": dict(examples=400, batch=64, epochs=5000, k=1000),
}
PAPER_LAYERS, PAPER_PROBE_BATCHES = 12, 40
TARGETS = {"trace_fisher:per_example": 1.03, "trace_fisher:exact": 1.55}
MEMORY_TARGET = 1.10
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
FUN_TARGET = 1.02


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", required=True, choices=("fisher", "fun", "reg"))
    parser.add_argument("--preset", default="mbert-base", choices=sorted(PRESETS))
    parser.add_argument("--modules", default="seq_bn", help="comma-separated task modules (seq_bn, lora)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", default="cpu", choices=("wall", "cpu"))
    parser.add_argument("--memory", action="store_true", help="fisher: also peak memory per method")
    parser.add_argument("--skip", default="batch,empirical,reference,naive loop",
                        help="fisher: methods of fisher_cost to leave out")
    parser.add_argument("--trainer-steps", type=int, default=0, help="fun: also time GU vs FUN Trainer runs")
    parser.add_argument("--trainer-k", type=int, default=2)
    parser.add_argument("--trainer-reps", type=int, default=1)
    parser.add_argument("--profile", default="", help="fisher: comma-separated methods to profile against "
                        "fwd+bwd (cProfile on process CPU time), instead of timing")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--precision", default="fp32", choices=tuple(PRECISIONS),
                        help="fp32, or bf16/fp16 autocast around every timed call")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def model_args(opts: argparse.Namespace, task_module: str) -> argparse.Namespace:
    """The namespace ``fisher_cost.build``/``make_methods`` read, filled from the preset."""
    p = PRESETS[opts.preset]
    return argparse.Namespace(
        arch=p["arch"], layers=p["layers"], hidden=p["hidden"], heads=p["heads"], intermediate=p["intermediate"],
        vocab=p["vocab"], max_positions=p["max_positions"], batch=opts.batch, seq=opts.seq, classes=opts.classes,
        lora_r=8, reduction_factor=16, attn="eager", engine_method="auto", seed=opts.seed, task_module=task_module,
        device=opts.device,
        skip_set={s.strip() for s in opts.skip.split(",") if s.strip()})


def on_device(opts: argparse.Namespace, fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` run under ``opts.precision``'s autocast on ``opts.device`` (unchanged for fp32)."""
    dtype = PRECISIONS[opts.precision]
    if dtype is None:
        return fn
    device_type = torch.device(opts.device).type

    def wrapped():
        with torch.autocast(device_type, dtype=dtype):
            return fn()
    return wrapped


def timing_kwargs(opts: argparse.Namespace) -> dict:
    """``time_methods`` keyword arguments: the clock, and CUDA synchronisation on a GPU."""
    cuda = torch.device(opts.device).type == "cuda"
    return {"clock": clock(opts.clock), "sync": torch.cuda.synchronize if cuda else None}


def build_model(a: argparse.Namespace, dropout: float = 0.0) -> torch.nn.Module:
    model = tiny_adapter_model(
        a.arch, task_module=a.task_module, num_labels=a.classes, seed=a.seed, lora_r=a.lora_r,
        reduction_factor=a.reduction_factor, attn_implementation=a.attn, num_layers=a.layers, hidden=a.hidden,
        heads=a.heads, intermediate=a.intermediate, vocab=a.vocab, max_positions=a.max_positions, dropout=dropout)
    model.to(a.device).train()
    return model


def make_batch(a: argparse.Namespace, seed: int = 0, size: int | None = None, device: str | None = None
               ) -> dict[str, torch.Tensor]:
    batch = tiny_batch("classification", batch_size=size or a.batch, seq_len=a.seq, vocab=a.vocab,
                       num_labels=a.classes, seed=seed)
    return {k: v.to(device or a.device) for k, v in batch.items()}


def table(rows: list[list[str]], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


# ------------------------------------------------------------------------------ parts
def part_fisher(opts: argparse.Namespace, task_module: str) -> dict:
    a = model_args(opts, task_module)
    model, batch = build_model(a), make_batch(a)
    blocks = BlockMap.from_model(model, adapter="task")
    methods = make_methods(a, model, batch, blocks)

    def forward_only():  # builds the graph as forward+backward does, then drops it
        model(**batch).loss.detach()

    methods = {"fwd+bwd": methods.pop("fwd+bwd"), "forward only": forward_only, **methods}
    methods = {name: on_device(opts, fn) for name, fn in methods.items()}
    failed = {}
    for name, fn in list(methods.items()):
        try:
            fn()
        except Exception as exc:  # report, don't crash (e.g. Opacus on LoRA)
            failed[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:150]}"
            del methods[name]
    if "fwd+bwd" in failed:
        raise RuntimeError(f"real_size: the baseline forward+backward failed: {failed['fwd+bwd']}")
    if opts.profile:
        return {"module": task_module, "profile": profile_ops(methods, opts.profile.split(","))}
    times = time_methods(methods, opts.reps, opts.seed, warmup=False, **timing_kwargs(opts))
    peak = cuda_peak_memory if torch.device(opts.device).type == "cuda" else peak_memory
    memory = {name: peak(fn) for name, fn in methods.items()} if opts.memory else {}
    base = times["fwd+bwd"]
    result = {"module": task_module, "batch": opts.batch, "failed": failed, "methods": {}, "device": opts.device,
              "precision": opts.precision,
              "n_params": sum(p.numel() for ps in block_params(model, blocks).values() for p in ps.values())}
    for name in methods:
        med, lo, hi = ratio_spread(times[name], base)
        entry = {"ratio": med, "min": lo, "max": hi, "median_s": statistics.median(times[name])}
        if memory:
            entry["peak_mib"] = memory[name] / 2**20
            entry["memory_ratio"] = memory[name] / max(memory["fwd+bwd"], 1)
        result["methods"][name] = entry
    fwd = result["methods"]["forward only"]["ratio"]  # F / (F + B)
    result["exact_floor"] = fwd + (opts.classes - 1) * (1 - fwd)  # (F + (C-1)B) / (F + B)
    return result


def print_fisher(opts, result) -> None:
    if "profile" in result:
        for name, p in result["profile"].items():
            print(f"\n### profile {opts.preset}, {result['module']}: {name} {p['total_s']:.2f} s vs fwd+bwd "
                  f"{p['base_total_s']:.2f} s (cProfile self CPU time, one call)\n")
            print(table([[op, f"{b:.3f}", f"{m:.3f}", f"{m - b:+.3f}"] for op, b, m in p["top"]],
                        ["op", "fwd+bwd s", f"{name} s", "difference"]))
        return
    rows = []
    for name, e in result["methods"].items():
        target = TARGETS.get(name)
        row = [name, f"{e['ratio']:.2f} ({e['min']:.2f}-{e['max']:.2f})", f"{e['median_s']:.2f}"]
        if "memory_ratio" in e:
            row += [f"{e['peak_mib']:.0f}", f"{e['memory_ratio']:.2f}"]
        row.append("" if target is None else f"<= {target}: {'met' if e['ratio'] <= target else 'MISSED'}")
        rows.append(row)
    header = ["method", "time ratio (min-max)", "median s"]
    header += ["peak MiB", "mem ratio"] if opts.memory else []
    print(f"\n### {opts.preset}, {result['module']}, batch {opts.batch} x {opts.seq} "
          f"({result['n_params']:,} measured parameters)\n")
    print(table(rows, header + ["target"]))
    print(f"\nexact floor (F + {opts.classes - 1}B) / (F + B) from 'forward only': {result['exact_floor']:.2f}")
    for name, reason in result["failed"].items():
        print(f"{name}: failed: {reason}")


def _freeze_below_top(model: torch.nn.Module, blocks: BlockMap) -> None:
    top = max(blocks[n].layer for n in blocks.names if blocks[n].layer is not None)
    for name in blocks.names:
        if blocks[name].layer is not None and blocks[name].layer < top:
            for p in blocks.parameters(model, name).values():
                p.requires_grad_(False)


def part_fun(opts: argparse.Namespace, task_module: str) -> dict:
    """Unit costs and the FUN/GU ratio they imply (see the module docstring)."""
    a = model_args(opts, task_module)
    full, top = build_model(a, dropout=0.1), build_model(a, dropout=0.1)
    _freeze_below_top(top, BlockMap.from_model(top, adapter="task"))
    data = [{k: v[i] for k, v in make_batch(a, seed=1, size=8 * opts.batch, device="cpu").items()}
            for i in range(8 * opts.batch)]
    batches = [make_batch(a, seed=s) for s in range(4)]
    probe = FisherProbe(n_batches=1, estimator="per_example", batch_size=opts.batch).attach(data)
    blocks = BlockMap.from_model(full, adapter="task")
    state = {"step": 0}

    def stepper(model):
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

        def step():
            state["step"] += 1
            optimizer.zero_grad(set_to_none=True)
            model(**batches[state["step"] % len(batches)]).loss.backward()
            optimizer.step()
        return step

    def probe_batch():
        state["step"] += 1
        probe.measure(full, blocks, step=state["step"])

    methods = {"step (all trainable)": stepper(full), "step (top layer + head)": stepper(top),
               "probe batch": probe_batch}
    methods = {name: on_device(opts, fn) for name, fn in methods.items()}
    times = time_methods(methods, opts.reps, opts.seed, **timing_kwargs(opts))
    base = times["step (all trainable)"]
    unit = {name: ratio_spread(times[name], base)[0] for name in methods}
    result = {"module": task_module, "batch": opts.batch, "step_s": statistics.median(base), "unit": unit,
              "paper": {}}
    for run, cfg in PAPER_RUNS.items():
        result["paper"][run] = paper_run(cfg, unit["probe batch"], unit["step (top layer + head)"])
    if opts.trainer_steps:
        result["trainer"] = trainer_runs(opts, a, unit)
    return result


def paper_run(cfg: dict, probe: float, top: float) -> dict:
    """FUN/GU for one run of the paper's Table 3 (steps = batches per epoch x epochs)."""
    per_epoch = math.ceil(cfg["examples"] / cfg["batch"])
    return fun_over_gu(per_epoch * cfg["epochs"], cfg["k"], min(PAPER_PROBE_BATCHES, per_epoch), probe, top)


def fun_over_gu(steps: int, k: int, n_batches: int, probe: float, top: float, layers: int = PAPER_LAYERS) -> dict:
    """FUN time / GU time over ``steps`` training steps, in units of a full training step.

    GU with ``d`` of ``L`` layers unfrozen costs ``top + (1 - top) (d - 1) / (L - 1)`` per step
    (linear between the measured top-only and all-trainable steps); FUN follows the same
    depth profile (the paper: FUN recovers GU's order) plus ``measurements x n_batches`` probe
    batches of cost ``probe`` each (one measurement per k steps, L of them)."""
    measures = len(range(0, min(k * (layers - 1), steps - 1) + 1, k))
    gu = 0.0
    for d in range(1, layers + 1):
        span = k if d < layers else max(steps - k * (layers - 1), 0)
        gu += min(span, max(steps - k * (d - 1), 0)) * (top + (1 - top) * (d - 1) / max(layers - 1, 1))
    extra = measures * n_batches * probe
    return {"steps": steps, "k": k, "measurements": measures, "n_batches": n_batches, "ratio": 1 + extra / gu}


def trainer_runs(opts: argparse.Namespace, a: argparse.Namespace, unit: dict) -> dict:
    """GU vs FUN through ``transformers.Trainer`` for ``--trainer-steps`` steps at the real size."""
    import tempfile

    from datasets import Dataset

    def build_fn(_):
        data = make_batch(a, seed=1, size=20 * opts.batch)
        return build_model(a, dropout=0.1), Dataset.from_dict({k: v.tolist() for k, v in data.items()})

    t = argparse.Namespace(k=opts.trainer_k, fun_batches=1, estimator="per_example", batch=opts.batch,
                           steps=opts.trainer_steps, probe_every=10**9, probe_batches=1)
    times = {"gradual": [], "fisher": []}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(opts.trainer_reps):
            for config in (["gradual", "fisher"] if rep % 2 == 0 else ["fisher", "gradual"]):
                times[config].append(train_once(t, config, tmp, build_fn=build_fn)[:2])
    which = 1 if opts.clock == "cpu" else 0
    measured = statistics.median(f[which] / g[which] for f, g in zip(times["fisher"], times["gradual"], strict=True))
    predicted = fun_over_gu(opts.trainer_steps, opts.trainer_k, 1, unit["probe batch"],
                            unit["step (top layer + head)"], layers=a.layers)
    return {"steps": opts.trainer_steps, "k": opts.trainer_k, "n_batches": 1, "times": times,
            "measured": measured, "predicted": predicted["ratio"]}


def print_fun(opts, result) -> None:
    print(f"\n### {opts.preset}, {result['module']}, batch {opts.batch} x {opts.seq}: unit costs "
          f"(one full training step = {result['step_s']:.2f} s {opts.clock})\n")
    print(table([[n, f"{v:.2f}"] for n, v in result["unit"].items()], ["unit", "in full training steps"]))
    rows = [[run, str(r["steps"]), str(r["k"]), f"{r['measurements']} x {r['n_batches']}", f"{r['ratio']:.4f}",
             "met" if r["ratio"] <= FUN_TARGET else "MISSED"] for run, r in result["paper"].items()]
    print()
    print(table(rows, ["paper run", "steps N", "k", "measurements x batches", "FUN/GU", f"<= {FUN_TARGET}"]))
    if "trainer" in result:
        t = result["trainer"]
        print(f"\nTrainer, {t['steps']} steps, k={t['k']}, 1 probe batch per decision: FUN/GU measured "
              f"{t['measured']:.3f}x, predicted from unit costs {t['predicted']:.3f}x; {opts.clock} s: "
              + ", ".join(f"{c} {[round(x[1 if opts.clock == 'cpu' else 0], 1) for x in v]}"
                          for c, v in t["times"].items()))


def part_reg(opts: argparse.Namespace, task_module: str) -> dict:
    a = model_args(opts, task_module)
    model, batch = build_model(a, dropout=0.1), make_batch(a)
    optimizer = torch.optim.AdamW(trainable_parameters(model).values(), lr=1e-4)
    terms = {"plain": None, **{name: [regulariser_from_string(spec)] for name, spec in VARIANTS.items()}}

    def make_step(name):
        def step():
            optimizer.zero_grad(set_to_none=True)
            loss = model(**batch).loss if terms[name] is None else regularised_loss(model, batch, terms[name])[0]
            loss.backward()
            optimizer.step()
        return step

    times = time_methods({n: on_device(opts, make_step(n)) for n in terms}, opts.reps, opts.seed,
                         **timing_kwargs(opts))
    return {"module": task_module, "batch": opts.batch, "plain_s": statistics.median(times["plain"]),
            "ratios": {n: ratio_spread(times[n], times["plain"]) for n in VARIANTS}}


def print_reg(opts, result) -> None:
    print(f"\n### {opts.preset}, {result['module']}, batch {opts.batch} x {opts.seq}, dropout 0.1: plain step "
          f"{result['plain_s']:.2f} s {opts.clock}\n")
    rows = []
    for name, (med, lo, hi) in result["ratios"].items():
        goal = GOALS.get(name)
        rows.append([name, f"{med:.2f} ({lo:.2f}-{hi:.2f})",
                     "" if goal is None else f"<= {goal}: {'met' if med <= goal else 'MISSED'}"])
    print(table(rows, ["term", "ratio to a plain step (min-max)", "goal"]))


def main(argv: list[str] | None = None) -> None:
    opts = parse_args(argv)
    torch.set_num_threads(opts.threads)
    warnings.filterwarnings("ignore")
    import transformers

    transformers.logging.set_verbosity_error()
    logging.getLogger("adapters").setLevel(logging.ERROR)  # "adapters available but none are activated"
    try:
        import opacus
        opacus_line = f"opacus {opacus.__version__}"
    except ImportError:
        opacus_line = "opacus not installed"
    print(f"# real_size --part {opts.part} --preset {opts.preset}: torch {torch.__version__}, {opacus_line}, "
          f"{opts.threads} thread(s), clock {opts.clock}, {opts.reps} reps")
    run, show = {"fisher": (part_fisher, print_fisher), "fun": (part_fun, print_fun),
                 "reg": (part_reg, print_reg)}[opts.part]
    results = []
    for task_module in [m.strip() for m in opts.modules.split(",") if m.strip()]:
        result = run(opts, task_module)
        show(opts, result)
        results.append(result)
    if opts.json:
        with open(opts.json, "w") as fh:
            json.dump({"argv": vars(opts), "results": results}, fh, indent=1, default=str)


if __name__ == "__main__":
    main()
