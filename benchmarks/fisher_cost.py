"""Cost of per-example Fisher-trace estimators, as ratios to one plain forward+backward.

For a BERT-shaped adapters model (bottleneck adapter, then LoRA) and one batch, every
method is timed in each repetition, in alternating order, next to the baseline (one
``model(**batch).loss.backward()`` of the same batch); the script prints per method the
median over repetitions of ``time(method) / time(baseline in that repetition)``.

Methods: ``fisherlab.fisher.trace_fisher`` with each estimator; the bare per-example
engine (``PerExampleGradNorms``: forward + one autograd.grad + einsums); ``torch.func``
per-example gradients (``functional_call`` + ``vmap(grad)``); a naive loop (one
forward+backward per example); Opacus ``GradSampleModule`` where it is installed.

Peak memory (``--memory``): torch.profiler with ``profile_memory=True``, peak of the
CPU allocator's "Total Allocated" over the ``[memory]`` events of one call, i.e. the
most memory torch held at once *above what was allocated before the call* (model
weights excluded). This sees every torch CPU allocation; tracemalloc does not.

    python benchmarks/fisher_cost.py                       # defaults: 4 layers, hidden 128, batch 16, seq 64
    python benchmarks/fisher_cost.py --memory --reps 9 --threads 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from collections.abc import Callable

import torch
from _timing import peak_memory, time_methods

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ESTIMATOR_METHODS = ("per_example", "exact", "batch", "empirical", "reference")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="bert", choices=("bert", "xlm-roberta", "deberta-v2"))
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--intermediate", type=int, default=None, help="default: 4 * hidden")
    parser.add_argument("--vocab", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--max-positions", type=int, default=None, help="position table size (default: --seq)")
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--reduction-factor", type=int, default=16)
    parser.add_argument("--attn", default="eager", choices=("eager", "sdpa"))
    parser.add_argument("--modules", default="seq_bn,lora", help="comma-separated task modules")
    parser.add_argument("--reps", type=int, default=7, help="repetitions (>= 5 recommended)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--skip", default="", help="comma-separated methods to skip (e.g. loop,vmap)")
    parser.add_argument("--memory", action="store_true", help="also report peak memory per method")
    parser.add_argument("--engine-method", default="auto", choices=("auto", "materialise", "gram"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clock", default="wall", choices=("wall", "cpu"),
                        help="wall: perf_counter; cpu: process_time (steadier on a loaded machine, "
                             "but counts busy-waiting threads: use with --threads 1)")
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error("--reps must be >= 1")
    return args


# ------------------------------------------------------------------------- setup


def build(args: argparse.Namespace, task_module: str):
    from fisherlab.blocks import BlockMap
    from fisherlab.tiny import tiny_adapter_model, tiny_batch

    model = tiny_adapter_model(
        args.arch, task_module=task_module, num_labels=args.classes, seed=args.seed,
        lora_r=args.lora_r, reduction_factor=args.reduction_factor, attn_implementation=args.attn,
        num_layers=args.layers, hidden=args.hidden, heads=args.heads,
        intermediate=args.intermediate or 4 * args.hidden, vocab=args.vocab,
        max_positions=args.max_positions or args.seq,
    )
    model.train()
    batch = tiny_batch("classification", batch_size=args.batch, seq_len=args.seq, vocab=args.vocab,
                       num_labels=args.classes, seed=args.seed)
    blocks = BlockMap.from_model(model, adapter="task")
    return model, batch, blocks


def block_params(model, blocks) -> dict[str, dict[str, torch.nn.Parameter]]:
    return {name: blocks.parameters(model, name) for name in blocks.names}


def log_probs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits, -1).gather(-1, labels[:, None]).squeeze(-1)


def make_methods(args, model, batch, blocks) -> dict[str, Callable[[], object]]:
    """name -> zero-argument callable doing one measurement of the whole batch."""
    from fisherlab.fisher import trace_fisher
    from fisherlab.fisher.persample import PerExampleGradNorms

    params = block_params(model, blocks)
    flat = [p for ps in params.values() for p in ps.values()]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    labels = batch["labels"]
    n = labels.shape[0]
    methods: dict[str, Callable[[], object]] = {}

    def forward_backward():
        model(**batch).loss.backward()
        for p in model.parameters():
            p.grad = None

    methods["fwd+bwd"] = forward_backward
    for estimator in ESTIMATOR_METHODS:
        methods[f"trace_fisher:{estimator}"] = (
            lambda e=estimator: trace_fisher(model, [batch], blocks, estimator=e, method=args.engine_method))

    def engine():
        with PerExampleGradNorms(model, blocks, method=args.engine_method) as probe:
            logits = model(**inputs).logits
            return probe.sq_norms(log_probs(logits, labels).sum(), n)

    methods["engine (fwd + 1 grad + einsum)"] = engine

    def loop():
        out = {}
        for i in range(n):
            logits = model(**{k: v[i:i + 1] for k, v in inputs.items()}).logits
            grads = torch.autograd.grad(log_probs(logits, labels[i:i + 1]).sum(), flat, allow_unused=True)
            out[i] = sum(float(g.square().sum()) for g in grads if g is not None)
        return out

    methods["naive loop"] = loop

    from torch.func import functional_call, grad, vmap

    detached = {name: p.detach() for ps in params.values() for name, p in ps.items()}

    def one(theta, ids, mask, label):
        logits = functional_call(model, theta, args=(), kwargs={"input_ids": ids[None], "attention_mask": mask[None]},
                                 strict=False).logits
        return log_probs(logits, label[None]).sum()

    per_example_grad = vmap(grad(one), in_dims=(None, 0, 0, 0))

    def func_vmap():
        grads = per_example_grad(detached, inputs["input_ids"], inputs["attention_mask"], labels)
        return {block: sum(grads[name].flatten(1).square().sum(1) for name in ps) for block, ps in params.items()}

    methods["torch.func vmap"] = func_vmap

    try:
        import opacus  # noqa: F401
    except ImportError:
        pass
    else:
        methods["opacus GradSampleModule"] = opacus_method(model, batch, params)
    return {k: v for k, v in methods.items() if k.split(":")[-1] not in args.skip_set and k not in args.skip_set}


def opacus_method(model, batch, params) -> Callable[[], object]:
    """Wraps ``model`` inside each timed call and unwraps it after (as the engine installs and
    removes its hooks inside each call), so no Opacus hook slows the other methods."""
    from opacus import GradSampleModule

    inputs = {k: v for k, v in batch.items() if k != "labels"}
    labels = batch["labels"]

    def run():
        gsm = GradSampleModule(model, batch_first=True, loss_reduction="sum")
        try:
            logits = gsm(**inputs).logits
            (-log_probs(logits, labels).sum()).backward()
            norms = {block: sum(p.grad_sample.flatten(1).square().sum(1) for p in ps.values())
                     for block, ps in params.items()}
        finally:
            for p in model.parameters():
                p.grad = None
                if hasattr(p, "grad_sample"):
                    p.grad_sample = None
            gsm._close()
        return norms

    return run


# ------------------------------------------------------------------------- measuring


def report(title: str, methods: dict[str, Callable[[], object]], times: dict[str, list[float]],
           memory: dict[str, int] | None) -> None:
    base = times["fwd+bwd"]
    print(f"\n## {title}")
    header = f"{'method':34s} {'median ratio':>12s} {'[min, max]':>16s} {'median ms':>10s}"
    if memory is not None:
        header += f" {'peak MiB':>9s} {'mem ratio':>9s}"
    print(header)
    for name in methods:
        ratios = [t / b for t, b in zip(times[name], base, strict=True)]
        spread = f"[{min(ratios):.2f}, {max(ratios):.2f}]"
        line = (f"{name:34s} {statistics.median(ratios):12.2f} {spread:>16s} "
                f"{1000 * statistics.median(times[name]):10.1f}")
        if memory is not None:
            mib = memory[name] / 2**20
            line += f" {mib:9.1f} {memory[name] / max(memory['fwd+bwd'], 1):9.2f}"
        print(line)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.skip_set = {s.strip() for s in args.skip.split(",") if s.strip()}
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    import transformers

    transformers.logging.set_verbosity_error()
    try:
        import opacus
        opacus_line = f"opacus {opacus.__version__}"
    except ImportError:
        opacus_line = "opacus: not installed"
    print(f"# fisher_cost: {args.arch}, {args.layers} layers, hidden {args.hidden}, batch {args.batch}, "
          f"seq {args.seq}, {args.classes} classes, attn {args.attn}, threads {args.threads}, reps {args.reps}, "
          f"clock {args.clock}")
    print(f"# torch {torch.__version__}, {opacus_line}; ratios are time(method) / time(fwd+bwd) "
          "in the same repetition (median, [min, max])")
    for task_module in [m.strip() for m in args.modules.split(",") if m.strip()]:
        model, batch, blocks = build(args, task_module)
        methods = make_methods(args, model, batch, blocks)
        failed = {}
        for name, fn in list(methods.items()):
            try:
                fn()
            except Exception as exc:  # report, don't crash: e.g. vmap over an unsupported op
                failed[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:150]}"
                del methods[name]
        clock = time.process_time if args.clock == "cpu" else time.perf_counter
        times = time_methods(methods, args.reps, args.seed, clock)
        memory = {name: peak_memory(fn) for name, fn in methods.items()} if args.memory else None
        n_params = sum(p.numel() for ps in block_params(model, blocks).values() for p in ps.values())
        report(f"{task_module}: {len(blocks)} blocks, {n_params} measured parameters", methods, times, memory)
        for name, reason in failed.items():
            print(f"{name:34s} failed: {reason}")
        if "opacus GradSampleModule" not in methods and "opacus GradSampleModule" not in failed:
            print(f"{'opacus GradSampleModule':34s} {opacus_line}")


if __name__ == "__main__":
    main()
