"""Per-step cost of each regulariser as a ratio over a plain training step.

A step is zero_grad + forward + backward + AdamW step on a small adapter model. Every
repetition times each variant for ``--steps`` steps, in a rotated order (so load drifts
hit all variants alike); the ratio is variant / plain *within* a repetition, and the
median over repetitions is printed, for CPU time (the process's, robust to a loaded
machine when ``--threads 1``) and wall time. Goals (issue 6): finite-difference Fisher
penalty <= 2.2x, double backprop <= 3x, two-view consistency <= 2.1x. The default
finite difference (``task_at=auto`` -> perturbed) costs 2 forwards + 2 backwards; the
exact-task-gradient variant (``task_at=theta``) 2 forwards + 3 backwards.

    python benchmarks/regulariser_cost.py --threads 1 --repeats 7
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from fisherlab.regularisers import regularised_loss, regulariser_from_string
from fisherlab.tiny import tiny_adapter_model, tiny_batch
from fisherlab.torch_utils import trainable_parameters

VARIANTS = {
    "fisher_penalty (finite_difference)": "fisher_penalty:alpha=0.01;method=finite_difference",
    "fisher_penalty (finite_difference, task_at=theta)": "fisher_penalty:alpha=0.01;task_at=theta",
    "fisher_penalty (double_backprop)": "fisher_penalty:alpha=0.01;method=double_backprop",
    "fisher_penalty (finite_difference, sub_batch=0.5)": "fisher_penalty:alpha=0.01;sub_batch=0.5",
    "consistency (dropout)": "consistency:view=dropout;weight=1.0",
    "consistency (embedding_noise)": "consistency:view=embedding_noise;eps=1e-5;weight=1.0",
    "consistency (parameter_noise)": "consistency:view=parameter_noise;sigma=1e-3;weight=1.0",
    "l2 (init)": "l2:weight=0.01;to=init",
}
GOALS = {"fisher_penalty (finite_difference)": 2.2, "fisher_penalty (double_backprop)": 3.0,
         "consistency (dropout)": 2.1, "consistency (embedding_noise)": 2.1, "consistency (parameter_noise)": 2.1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="bert")
    parser.add_argument("--task-module", default="seq_bn", help="seq_bn | lora | none (full fine-tuning)")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3, help="steps per variant per repetition")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    model = tiny_adapter_model(args.arch, task_module=None if args.task_module == "none" else args.task_module,
                               hidden=args.hidden, heads=4, intermediate=4 * args.hidden, num_layers=args.layers,
                               max_positions=args.seq_len + 8, vocab=512, dropout=0.1).to(device)
    model.train()
    batch = {k: v.to(device) for k, v in tiny_batch("classification", batch_size=args.batch_size,
                                                      seq_len=args.seq_len, vocab=512).items()}
    optimizer = torch.optim.AdamW(trainable_parameters(model).values(), lr=1e-4)
    terms = {name: [regulariser_from_string(spec)] for name, spec in VARIANTS.items()}
    terms = {"plain": None, **terms}

    def step(name: str, index: int) -> None:
        optimizer.zero_grad(set_to_none=True)
        if terms[name] is None:
            loss = model(**batch).loss
        else:
            loss = regularised_loss(model, batch, terms[name], step=index)[0]
        loss.backward()
        optimizer.step()

    def timed(name: str) -> tuple[float, float]:
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(args.steps):
            step(name, i)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.process_time() - cpu, time.perf_counter() - wall

    for name in terms:  # warm-up
        step(name, 0)
    names = list(terms)
    ratios: dict[str, dict[str, list[float]]] = {n: {"cpu": [], "wall": []} for n in names if n != "plain"}
    plain_times = []
    for rep in range(args.repeats):
        order = names[rep % len(names):] + names[:rep % len(names)]
        times = {name: timed(name) for name in order}
        plain_times.append(times["plain"][1] / args.steps)
        for name in ratios:
            ratios[name]["cpu"].append(times[name][0] / times["plain"][0])
            ratios[name]["wall"].append(times[name][1] / times["plain"][1])

    print(f"model: {args.arch} hidden={args.hidden} layers={args.layers} task_module={args.task_module} "
          f"batch={args.batch_size}x{args.seq_len} device={device} threads={args.threads} "
          f"repeats={args.repeats} steps={args.steps}")
    print(f"plain step: median {statistics.median(plain_times) * 1e3:.1f} ms wall")
    print(f"{'variant':52s} {'cpu ratio':>9s} {'wall ratio':>10s} {'goal':>6s}")
    for name, values in ratios.items():
        goal = GOALS.get(name)
        cpu, wall = statistics.median(values["cpu"]), statistics.median(values["wall"])
        verdict = "" if goal is None else (f"<={goal}" + (" ok" if cpu <= goal else " MISSED"))
        print(f"{name:52s} {cpu:9.2f} {wall:10.2f} {verdict:>6s}")


if __name__ == "__main__":
    main()
