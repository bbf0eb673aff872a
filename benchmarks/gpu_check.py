"""One GPU check: oracle agreement on CUDA, bf16 vs fp32 tr(F), real-size cost ratios, a short FUN run.

Run it once on a machine with a CUDA device; it writes ``gpu_check.json`` and ``gpu_check.md``
into ``--out`` and prints one line per stage:

1. **oracle** -- a tiny model in float64 on the device: ``trace_fisher`` (per_example, exact,
   empirical) against the brute-force float64 oracle of ``tests/fisher_oracle.py`` (one
   autograd call per example and class); passes at relative error <= 1e-6.
2. **precision** -- tr(F) per block under ``torch.autocast`` (bf16; fp16 too on CUDA) against
   fp32 on the same batches, with the label-free estimators (exact, empirical) so both runs
   use the same labels. Reported: the largest relative difference over blocks.
3. **costs** -- ``real_size.py``'s three parts at ``--preset`` size (mBERT-base by default)
   under bf16 autocast: per_example / exact tr(F), torch.func and Opacus as ratios to one
   forward+backward, peak memory ratios, examples per second; the regularisers per step;
   the FUN/GU ratio at the paper's settings from unit costs.
4. **fun** -- a short ``transformers.Trainer`` run (``--fun-steps`` steps) of a base-shaped
   model with ``UnfreezeCallback("fisher:...")`` and ``FisherProbeCallback`` (bf16 on a GPU
   that supports it), and the same run with ``gradual``: wall times, FUN's order, the
   number of probe measurements and whether every logged tr(F) is finite.

Without a CUDA device (and ``--device cuda``, the default) it exits with status 2 and says
so. ``--device cpu --quick`` runs every stage at tiny sizes in seconds (a smoke test; the
test suite runs it).

    python benchmarks/gpu_check.py --out gpu-check/
    python benchmarks/gpu_check.py --device cpu --quick --out /tmp/gpu-check
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from real_size import parse_args as real_size_args
from real_size import part_fisher, part_fun, part_reg

from fisherlab.blocks import BlockMap
from fisherlab.fisher import trace_fisher
from fisherlab.fisher.outputs import infer_output
from fisherlab.hf import FisherProbeCallback, UnfreezeCallback, make_trainer_class
from fisherlab.tiny import tiny_adapter_model, tiny_batch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import fisher_oracle as oracle  # noqa: E402  (tests/fisher_oracle.py: the float64 brute-force oracle)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ORACLE_RTOL = 1e-6
ORACLE_ESTIMATORS = {"per_example": "sample", "exact": None, "empirical": "data"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu (smoke test)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes everywhere (seconds)")
    parser.add_argument("--preset", default=None, help="real_size preset for the costs (default mbert-base; "
                                                         "tiny with --quick)")
    parser.add_argument("--batch", type=int, default=None, help="default 32 (2 with --quick)")
    parser.add_argument("--seq", type=int, default=None, help="default 128 (16 with --quick)")
    parser.add_argument("--reps", type=int, default=None, help="default 7 (1 with --quick)")
    parser.add_argument("--fun-steps", type=int, default=None, help="default 48 (6 with --quick)")
    opts = parser.parse_args(argv)
    quick = opts.quick
    opts.preset = opts.preset or ("tiny" if quick else "mbert-base")
    opts.batch = opts.batch or (2 if quick else 32)
    opts.seq = opts.seq or (16 if quick else 128)
    opts.reps = opts.reps or (1 if quick else 7)
    opts.fun_steps = opts.fun_steps or (6 if quick else 48)
    return opts


def say(message: str) -> None:
    print(f"[gpu_check] {message}", flush=True)


# ------------------------------------------------------------------------------ stages
def check_oracle(device: torch.device) -> dict:
    """trace_fisher vs the float64 oracle on ``device`` (tiny bert, seq_bn, two padded batches)."""
    model = tiny_adapter_model("bert", dtype=torch.float64).to(device).eval()
    blocks = BlockMap.from_model(model, adapter="task")
    batches = [{k: v.to(device) for k, v in tiny_batch("classification", batch_size=b, seq_len=6, seed=10 + i).items()}
               for i, b in enumerate((3, 2))]
    kind = infer_output(model)
    out = {}
    for estimator, how in ORACLE_ESTIMATORS.items():
        measured = trace_fisher(model, batches, blocks, estimator=estimator, seed=3)
        gen = torch.Generator().manual_seed(3)
        rows = []
        for batch in batches:
            if estimator == "exact":
                rows += oracle.exact_per_example(model, batch, kind, blocks)
            else:
                labels = oracle.labels_for(model, batch, kind, how, gen)
                rows += oracle.per_example_sq_norms(model, batch, kind, blocks, labels)
        expected = oracle.mean_over_examples(rows)
        err = max(abs(measured.traces[n] - v) / max(abs(v), 1e-300) for n, v in expected.items())
        out[estimator] = {"max_rel_err": err, "ok": err <= ORACLE_RTOL}
    return out


def check_precision(opts: argparse.Namespace, device: torch.device) -> dict:
    """Largest relative difference over blocks of tr(F) under autocast vs fp32, same batches."""
    size = {} if opts.quick else dict(num_layers=12, hidden=768, heads=12, intermediate=3072, vocab=119_547,
                                      max_positions=512, reduction_factor=16)
    vocab = size.get("vocab", 64)
    model = tiny_adapter_model("bert", **size).to(device).eval()
    batches = [{k: v.to(device) for k, v in tiny_batch("classification", batch_size=opts.batch, seq_len=opts.seq,
                                                        vocab=vocab, seed=20 + i).items()} for i in range(2)]
    dtypes = {"bf16": torch.bfloat16} | ({"fp16": torch.float16} if device.type == "cuda" else {})
    out = {}
    for estimator in ("exact", "empirical"):
        ref = trace_fisher(model, batches, estimator=estimator).traces
        for name, dtype in dtypes.items():
            with torch.autocast(device.type, dtype=dtype):
                got = trace_fisher(model, batches, estimator=estimator).traces
            rel = {b: abs(got[b] - v) / abs(v) if v else math.nan for b, v in ref.items()}
            finite = all(math.isfinite(x) for x in got.values())
            out[f"{estimator} {name}"] = {"max_rel_diff": max(rel.values()), "finite": finite,
                                          "blocks": len(rel)}
    return out


def check_costs(opts: argparse.Namespace, device: torch.device) -> dict:
    """real_size's fisher / reg / fun parts at ``opts.preset`` size under bf16 autocast."""
    ns = real_size_args(["--part", "fisher", "--preset", opts.preset, "--batch", str(opts.batch), "--seq",
                         str(opts.seq), "--reps", str(opts.reps), "--clock", "wall", "--memory",
                         "--device", str(device), "--precision", "bf16"])
    fisher = part_fisher(ns, "seq_bn")
    for entry in fisher["methods"].values():
        entry["examples_per_s"] = opts.batch / entry["median_s"]
    say(f"costs: fisher done (per_example {fisher['methods']['trace_fisher:per_example']['ratio']:.2f}x)")
    reg = part_reg(ns, "seq_bn")
    say("costs: regularisers done")
    fun = part_fun(ns, "seq_bn")
    return {"fisher": fisher, "reg": reg, "fun": fun}


def fun_run(opts: argparse.Namespace, device: torch.device, strategy: str) -> dict:
    """A short Trainer run with the probe on; ``strategy`` is ``fisher`` or ``gradual``."""
    from datasets import Dataset
    from transformers import PrinterCallback, Trainer, TrainingArguments

    size = dict(num_layers=2, hidden=32, heads=2, intermediate=64, vocab=500) if opts.quick else dict(
        num_layers=12, hidden=768, heads=12, intermediate=3072, vocab=119_547, reduction_factor=16)
    model = tiny_adapter_model("bert", max_positions=512, dropout=0.1, **size)
    layers = size["num_layers"]
    k = max(1, opts.fun_steps // (2 * layers))
    data = tiny_batch("classification", batch_size=opts.batch * 16, seq_len=opts.seq, vocab=size["vocab"], seed=5)
    dataset = Dataset.from_dict({key: v.tolist() for key, v in data.items()})
    spec = f"fisher:k={k};n_batches=2" if strategy == "fisher" else f"gradual:k={k}"
    unfreeze = UnfreezeCallback(spec, "task")
    probe = FisherProbeCallback(every=max(1, opts.fun_steps // 4), n_batches=2, blocks="task")
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(output_dir=tmp, report_to=[], use_cpu=device.type == "cpu", bf16=bf16,
                                 per_device_train_batch_size=opts.batch, max_steps=opts.fun_steps,
                                 learning_rate=5e-4, logging_steps=10**9, save_strategy="no",
                                 label_names=["labels"], disable_tqdm=True, seed=0)
        trainer = make_trainer_class(Trainer)(model=model, args=args, train_dataset=dataset,
                                              callbacks=[unfreeze, probe])
        trainer.remove_callback(PrinterCallback)
        start = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - start
    order = [unfreeze.blocks[b].layer for e in unfreeze.schedule.events for b in e.blocks]
    traces = [v for m in probe.history for v in m.traces.values()]
    return {"strategy": spec, "steps": opts.fun_steps, "bf16": bf16, "wall_s": wall, "order": order,
            "probe_measurements": len(probe.history), "all_finite": all(math.isfinite(v) for v in traces)}


# ------------------------------------------------------------------------------ report
def markdown(result: dict) -> str:
    env = result["env"]
    lines = [f"# gpu_check: {env['device_name']} ({env['device']}), torch {env['torch']}, {env['date']}", ""]
    lines += ["## Oracle (float64 on the device)", "", "| estimator | max rel. error | <= 1e-6 |", "|---|---|---|"]
    lines += [f"| {k} | {v['max_rel_err']:.1e} | {'ok' if v['ok'] else 'FAILED'} |" for k, v in result["oracle"].items()]
    lines += ["", "## Autocast vs fp32 tr(F) (same batches)", "", "| estimator, precision | max rel. diff over blocks "
              "| finite |", "|---|---|---|"]
    lines += [f"| {k} | {v['max_rel_diff']:.2e} | {v['finite']} |" for k, v in result["precision"].items()]
    costs = result["costs"]
    f = costs["fisher"]
    lines += ["", f"## Costs at {result['preset']} size, bf16 autocast, batch {f['batch']} (seq_bn)", "",
              "| method | time ratio | peak mem ratio | examples/s |", "|---|---|---|---|"]
    lines += [f"| {k} | {e['ratio']:.2f} | {e.get('memory_ratio', math.nan):.2f} | {e['examples_per_s']:.1f} |"
              for k, e in f["methods"].items()]
    lines += [f"| {k} | failed: {v} | | |" for k, v in f["failed"].items()]
    lines += ["", "| regulariser | ratio to a plain step |", "|---|---|"]
    lines += [f"| {k} | {v[0]:.2f} |" for k, v in costs["reg"]["ratios"].items()]
    lines += ["", "| paper run (unit costs) | FUN/GU |", "|---|---|"]
    lines += [f"| {k} | {v['ratio']:.4f} |" for k, v in costs["fun"]["paper"].items()]
    lines += ["", "## Short Trainer runs (probe on)", "", "| strategy | steps | bf16 | wall s | order | probe "
              "measurements | finite |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['strategy']} | {r['steps']} | {r['bf16']} | {r['wall_s']:.1f} | {r['order']} | "
              f"{r['probe_measurements']} | {r['all_finite']} |" for r in result["fun"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    device = torch.device(opts.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"gpu_check: no CUDA device is available (torch {torch.__version__}, "
              f"CUDA build {torch.version.cuda}); run it on a machine with a GPU, or use --device cpu --quick "
              "for a smoke test", file=sys.stderr)
        return 2
    warnings.filterwarnings("ignore")
    import transformers

    transformers.logging.set_verbosity_error()
    logging.getLogger("adapters").setLevel(logging.ERROR)  # "adapters available but none are activated"
    if device.type == "cpu":
        torch.set_num_threads(1)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    result: dict = {"env": {"device": str(device), "device_name": name, "torch": torch.__version__,
                            "cuda": torch.version.cuda, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                            "argv": sys.argv[1:]}, "preset": opts.preset}
    result["oracle"] = check_oracle(device)
    say("oracle: " + ", ".join(f"{k} {v['max_rel_err']:.1e}" for k, v in result["oracle"].items()))
    result["precision"] = check_precision(opts, device)
    say("precision: " + ", ".join(f"{k} {v['max_rel_diff']:.1e}" for k, v in result["precision"].items()))
    result["costs"] = check_costs(opts, device)
    result["fun"] = [fun_run(opts, device, s) for s in ("fisher", "gradual")]
    say("fun: " + ", ".join(f"{r['strategy']} {r['wall_s']:.1f}s" for r in result["fun"]))
    (out / "gpu_check.json").write_text(json.dumps(result, indent=1, default=str))
    (out / "gpu_check.md").write_text(markdown(result))
    say(f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}")
    failed = [k for k, v in result["oracle"].items() if not v["ok"]]
    if failed:
        print(f"gpu_check: oracle disagreement for {failed} (see {out / 'gpu_check.md'})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
