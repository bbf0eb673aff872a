"""Wall-time cost of FUN over gradual unfreezing, and of the Fisher probe callback, as ratios.

Each repetition trains a fresh small adapters model for the same number of steps with
``transformers.Trainer`` in four configurations, in rotating order:

* ``gradual``  -- ``UnfreezeCallback("gradual:k=K")``
* ``fisher``   -- ``UnfreezeCallback("fisher:k=K;n_batches=B")`` (FUN: L measurements of B batches)
* ``replay``   -- ``UnfreezeCallback("permutation:order=<FUN's order>;k=K")``: FUN's schedule
  without measuring. FUN may unfreeze lower layers earlier than GU, which makes every
  backward deeper; ``fisher/replay`` is the cost of FUN's measurements and decisions
  alone, ``fisher/gradual`` also contains that difference of schedule.
* ``plain``    -- no callback (all task blocks trainable)
* ``probe``    -- ``FisherProbeCallback(every=E, n_batches=P)``

and prints the medians over repetitions of ``fisher/gradual``, ``fisher/replay`` and
``probe/plain`` (each ratio taken within one repetition). It also times one training step and one probe batch
and extrapolates to the paper's setting (mBERT on MNLI: L=12, k=50, FUN measures 12 times
on up to 40 batches; 392,702 examples / batch 128 x 15 epochs = ~46k steps).

Defaults keep the probe density of the paper's FUN run (probe batches per training step:
L*B/N = 4*1/300 = 0.013 here vs 12*40/46,020 = 0.010 there). Times are wall and process
CPU time (all threads); on a shared machine the CPU-time ratio is the steadier one.

    python benchmarks/schedule_overhead.py                  # defaults: 4 layers, hidden 64, 300 steps
    python benchmarks/schedule_overhead.py --reps 5 --steps 1000 --threads 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

PAPER = {"layers": 12, "k": 50, "n_batches": 40, "steps": round(392_702 / 128) * 15}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=32)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--fun-batches", type=int, default=1, help="n_batches of the fisher strategy")
    parser.add_argument("--estimator", default="per_example")
    parser.add_argument("--probe-every", type=int, default=100)
    parser.add_argument("--probe-batches", type=int, default=5)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def build(opts: argparse.Namespace):
    from datasets import Dataset

    from fisherlab.tiny import tiny_adapter_model, tiny_batch

    model = tiny_adapter_model("bert", num_layers=opts.layers, hidden=opts.hidden, heads=4,
                               intermediate=4 * opts.hidden, vocab=1000, max_positions=opts.seq + 2, seed=0)
    batch = tiny_batch("classification", batch_size=opts.batch * 50, seq_len=opts.seq, vocab=1000, seed=1)
    data = Dataset.from_dict({k: v.tolist() for k, v in batch.items()})
    return model, data


def train_once(opts: argparse.Namespace, config: str, out: str, order: list[int] | None = None,
               build_fn=None) -> tuple[float, float, list]:
    """(wall, CPU) seconds of ``trainer.train()`` for one configuration (model construction excluded).

    ``build_fn(opts) -> (model, dataset)`` defaults to :func:`build` (the small bert)."""
    from transformers import PrinterCallback, Trainer, TrainingArguments

    from fisherlab.hf import FisherProbeCallback, UnfreezeCallback, bind_callbacks

    model, data = (build_fn or build)(opts)
    callbacks = {
        "gradual": lambda: [UnfreezeCallback(f"gradual:k={opts.k}", "task")],
        "fisher": lambda: [UnfreezeCallback(f"fisher:k={opts.k};n_batches={opts.fun_batches};"
                                            f"estimator={opts.estimator}", "task")],
        "replay": lambda: [UnfreezeCallback(f"permutation:order={','.join(map(str, order or []))};k={opts.k}",
                                            "task")],
        "plain": lambda: [],
        "probe": lambda: [FisherProbeCallback(every=opts.probe_every, n_batches=opts.probe_batches,
                                              estimator=opts.estimator, blocks="task", at_end=False)],
    }[config]()
    args = TrainingArguments(output_dir=out, report_to=[], use_cpu=True, per_device_train_batch_size=opts.batch,
                             max_steps=opts.steps, learning_rate=5e-4, logging_steps=10**9, save_strategy="no",
                             label_names=["labels"], disable_tqdm=True, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=callbacks)
    bind_callbacks(trainer)  # a plain Trainer: bind explicitly
    trainer.remove_callback(PrinterCallback)
    start, cpu = time.perf_counter(), time.process_time()
    trainer.train()
    return time.perf_counter() - start, time.process_time() - cpu, callbacks


def unit_costs(opts: argparse.Namespace) -> tuple[float, float]:
    """Seconds per training step (forward+backward+AdamW) and per probe batch on this model."""
    from transformers import default_data_collator

    from fisherlab.blocks import BlockMap
    from fisherlab.fisher.probe import FisherProbe

    model, data = build(opts)
    blocks = BlockMap.from_model(model, adapter="task")
    probe = FisherProbe(n_batches=8, estimator=opts.estimator, batch_size=opts.batch).attach(data, default_data_collator)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batches = probe.batches(0)
    model.train()
    for batch in batches[:2]:  # warm-up
        model(**batch).logits.sum().backward()
    optimizer.zero_grad()
    step_times, probe_times = [], []
    for rep in range(3):
        start = time.perf_counter()
        for batch in batches:
            loss = torch.nn.functional.cross_entropy(model(**{k: v for k, v in batch.items() if k != "labels"}).logits,
                                                     batch["labels"])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        step_times.append((time.perf_counter() - start) / len(batches))
        probe._cache = None
        start = time.perf_counter()
        probe.measure(model, blocks, step=rep + 1)
        probe_times.append((time.perf_counter() - start) / len(batches))
    return statistics.median(step_times), statistics.median(probe_times)


def main(argv: list[str] | None = None) -> None:
    opts = parse_args(argv)
    torch.set_num_threads(opts.threads)
    warnings.filterwarnings("ignore")
    import transformers

    transformers.logging.set_verbosity_error()
    configs = ["gradual", "fisher", "replay", "plain", "probe"]
    times: dict[str, list[tuple[float, float]]] = {c: [] for c in configs}
    with tempfile.TemporaryDirectory() as tmp:
        # warm-up (imports, allocator) that also yields FUN's order (deterministic) for the replay
        fun = train_once(opts, "fisher", tmp)[2][0]
        fun_order = [fun.blocks[b].layer for e in fun.schedule.events for b in e.blocks]
        fun_order += [i for i in range(opts.layers) if i not in fun_order]
        for rep in range(opts.reps):
            order = configs[rep % len(configs):] + configs[:rep % len(configs)]
            for config in order:
                times[config].append(train_once(opts, config, tmp, fun_order)[:2])

    def ratio(a: str, b: str, which: int) -> float:
        return statistics.median(x[which] / y[which] for x, y in zip(times[a], times[b], strict=True))

    fun_ratio, fun_cpu = ratio("fisher", "gradual", 0), ratio("fisher", "gradual", 1)
    rep_ratio, rep_cpu = ratio("fisher", "replay", 0), ratio("fisher", "replay", 1)
    probe_ratio, probe_cpu = ratio("probe", "plain", 0), ratio("probe", "plain", 1)
    step_s, probe_s = unit_costs(opts)
    rel = probe_s / step_s

    L, k, N = opts.layers, opts.k, opts.steps
    fun_measures = len(range(0, min(k * (L - 1), N - 1) + 1, k))
    probe_measures = len(range(0, N + 1, opts.probe_every))
    print(f"model: bert {L} layers, hidden {opts.hidden}, batch {opts.batch}, seq {opts.seq}; {N} steps; "
          f"estimator {opts.estimator}; {opts.reps} reps, {opts.threads} threads")
    for config in configs:
        walls = ", ".join(f"{w:.2f}" for w, _ in times[config])
        cpus = ", ".join(f"{c:.2f}" for _, c in times[config])
        print(f"  {config:8s} wall s: {walls}   CPU s: {cpus}")
    pred_fun = 1 + fun_measures * opts.fun_batches * rel / N
    print(f"FUN / GU (fisher:k={k};n_batches={opts.fun_batches} vs gradual:k={k}): wall {fun_ratio:.3f}x, "
          f"CPU {fun_cpu:.3f}x  [FUN order {fun_order} vs GU {list(range(L - 1, -1, -1))}]")
    print(f"FUN / replay of FUN's order (measurement + decision cost): wall {rep_ratio:.3f}x, CPU {rep_cpu:.3f}x, "
          f"from unit costs {pred_fun:.3f}x  [{fun_measures} measurements x {opts.fun_batches} batches over "
          f"{N} steps]  goal <= 1.05x (CPU): {'met' if rep_cpu <= 1.05 else 'NOT met'}")
    print(f"probe on / off (every={opts.probe_every}, n_batches={opts.probe_batches}): wall {probe_ratio:.3f}x, "
          f"CPU {probe_cpu:.3f}x, from unit costs {1 + probe_measures * opts.probe_batches * rel / N:.3f}x  "
          f"[{probe_measures} measurements]")
    print(f"unit costs: training step {1e3 * step_s:.1f} ms, probe batch {1e3 * probe_s:.1f} ms "
          f"(probe batch = {rel:.2f} training steps)")
    paper_batches = PAPER["layers"] * PAPER["n_batches"]
    paper_over = paper_batches * rel / PAPER["steps"]
    print(f"paper (mBERT/MNLI): FUN measures L={PAPER['layers']} times x {PAPER['n_batches']} batches = "
          f"{paper_batches} probe batches over {PAPER['steps']} steps = {paper_batches / PAPER['steps']:.4f} "
          f"per step; at {rel:.2f} steps per probe batch: +{100 * paper_over:.2f}% -> FUN/GU ~ {1 + paper_over:.3f}x")
    every_paper = 100
    probe_paper = (PAPER["steps"] // every_paper + 1) * 40 * rel / PAPER["steps"]
    print(f"paper-scale probe every {every_paper} steps x 40 batches: +{100 * probe_paper:.0f}%; "
          f"every 1000 steps: +{100 * probe_paper / 10:.1f}%")


if __name__ == "__main__":
    main()
