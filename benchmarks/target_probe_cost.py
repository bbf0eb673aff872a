"""Cost of the probe over target-language input sets, as a fraction of training time.

A tiny BERT-shaped MAD-X model (``fisherlab.tiny``: seq_bn task adapter + head trainable)
trains with AdamW on random batches; the probe measures at the paper's settings
(``--n-batches 40`` batches of ``--batch`` examples per set, ``per_example`` estimator)
on the source data and on ``--languages`` target-language sets (random inputs of the
same shape; what matters for the cost is the number and size of the batches). Prints the
median time of one training step, of one source measurement and of one measurement over
source + all target sets, and the probe's fraction of training time when it measures
every ``--every`` steps: ``(1 + n_languages) * t_set / (every * t_step)``.

    python benchmarks/target_probe_cost.py                 # 6 languages, 40 x 32, every 50 and 100
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--n-batches", type=int, default=40)
    parser.add_argument("--languages", type=int, default=6)
    parser.add_argument("--every", default="50,100", help="probe intervals (steps) to report")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps")
    parser.add_argument("--reps", type=int, default=3, help="timed probe repetitions")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from fisherlab.blocks import BlockMap
    from fisherlab.fisher.probe import FisherProbe
    from fisherlab.tiny import tiny_adapter_model, tiny_batch

    device = torch.device(args.device)
    model = tiny_adapter_model("bert", num_layers=args.layers, hidden=args.hidden, intermediate=4 * args.hidden,
                               vocab=1000, max_positions=args.seq + 8, heads=4).to(device)
    blocks = BlockMap.from_model(model, adapter="task")

    def examples(seed: int, n: int) -> list[dict]:
        batch = tiny_batch("classification", batch_size=n, seq_len=args.seq, vocab=1000, seed=seed)
        return [{k: v[i] for k, v in batch.items()} for i in range(n)]

    n = args.n_batches * args.batch
    probe = FisherProbe(n_batches=args.n_batches, batch_size=args.batch, seed=0)
    probe.attach(examples(0, n))
    names = [f"lang{i}" for i in range(args.languages)]
    for i, name in enumerate(names):
        probe.add_language(name, examples(100 + i, n), n_examples=n)

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    train = {k: v.to(device) for k, v in tiny_batch("classification", batch_size=args.batch, seq_len=args.seq,
                                                     vocab=1000, seed=7).items()}
    step_times = []
    for step in range(args.steps + 2):
        sync()
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        model(**train).loss.backward()
        optimizer.step()
        sync()
        if step >= 2:
            step_times.append(time.perf_counter() - t0)
    t_step = statistics.median(step_times)
    source_times, all_times = [], []
    for rep in range(args.reps + 1):
        sync()
        t0 = time.perf_counter()
        probe.measure(model, blocks, step=10 * rep + 1)
        sync()
        t1 = time.perf_counter()
        probe.measure_sets(model, blocks, step=10 * rep + 2)
        sync()
        t2 = time.perf_counter()
        if rep:
            source_times.append(t1 - t0)
            all_times.append(t2 - t1)
    t_set, t_all = statistics.median(source_times), statistics.median(all_times)
    print(f"device {device}, {args.layers} layers, hidden {args.hidden}, batch {args.batch} x seq {args.seq}")
    print(f"training step (fwd+bwd+AdamW): {t_step * 1e3:.1f} ms")
    print(f"one source measurement ({args.n_batches} batches): {t_set:.2f} s = {t_set / t_step:.1f} steps")
    print(f"source + {args.languages} languages: {t_all:.2f} s = {t_all / t_set:.2f} x one set")
    for every in (int(x) for x in args.every.split(",")):
        print(f"probe every {every} steps: source only {t_set / (every * t_step):.1%} of training time, "
              f"source + {args.languages} languages {t_all / (every * t_step):.1%}")


if __name__ == "__main__":
    main()
