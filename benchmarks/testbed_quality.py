"""Does the default testbed world show a real, movable cross-lingual gap, and is it cheap?

Builds (or reuses) the testbed, then for each seed trains a standard MAD-X task
adapter on the source language (``build_madx`` + the testbed task, a plain
AdamW loop) and evaluates every language zero-shot with its own language
adapter (``swap_language``) and, as a control, with the source adapter kept.

Acceptance (issue 5): build <= 6 min on 2 cores; source accuracy >= 70; at least
three target languages with chance + 5 <= accuracy <= source - 5 (means over
seeds); one run (task adapter + evaluation of all languages) <= 2 min.
Prints wall and CPU seconds (on a shared machine wall time is inflated by load).

    python benchmarks/testbed_quality.py --seeds 0 1 2 --threads 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch


def train_task_adapter(model, dataset, tokenizer, *, steps: int, batch_size: int, lr: float, seed: int) -> list[float]:
    """AdamW on the trainable parameters, constant lr, clip 1; batches drawn by a seeded generator."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    columns = [c for c in ("input_ids", "token_type_ids", "attention_mask") if c in dataset.column_names]
    rows = {c: list(dataset[c]) for c in [*columns, "labels"]}
    losses = []
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        order, cursor = torch.randperm(len(dataset), generator=gen), 0
        for _ in range(steps):
            if cursor + batch_size > len(order):
                order, cursor = torch.randperm(len(dataset), generator=gen), 0
            idx = order[cursor:cursor + batch_size].tolist()
            cursor += batch_size
            batch = tokenizer.pad([{c: rows[c][i] for c in columns} for i in idx], return_tensors="pt")
            batch["labels"] = torch.tensor([rows["labels"][i] for i in idx])
            loss = model(**batch).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            losses.append(float(loss.detach()))
    model.eval()
    return losses


def subject_is_anchor(task) -> dict[str, list[bool]]:
    """Per language and test item: is the subject noun spelled as in the source (a shared anchor token)?"""
    lexicons = task.testbed.manifest["lexicons"]
    source = lexicons[task.source_language]
    meanings = task.testbed.world().split_meanings("test")
    return {lang: [lexicons[lang][f"noun{m.subject}"] == source[f"noun{m.subject}"] for m in meanings]
            for lang in task.languages}


def one_run(task, seed: int, args) -> dict:
    from fisherlab.models import build_madx, swap_language

    wall0, cpu0 = time.perf_counter(), time.process_time()
    defaults = {**task.model_defaults(), **({"reduction_factor": args.reduction_factor} if args.reduction_factor else {})}
    model = build_madx(**defaults, task=task, task_module=args.task_module, seed=seed)
    train = task.load("train", task.source_language)
    t = task.training_defaults()
    losses = train_task_adapter(model, train, task.tokenizer, steps=args.steps or t["steps"],
                                batch_size=t["batch_size"], lr=args.lr or t["lr"], seed=seed)
    swapped, kept, private = {}, {}, {}
    tests = {lang: task.load("test", lang) for lang in task.languages}
    anchors = subject_is_anchor(task)
    for lang in task.languages:
        swap_language(model, lang)
        predictions = task.predict(model, tests[lang], task.tokenizer)
        labels = list(tests[lang]["labels"])
        swapped[lang] = task.compute_metrics(predictions, labels)["accuracy"]
        mine = [i for i, shared in enumerate(anchors[lang]) if not shared]
        private[lang] = (task.compute_metrics([predictions[i] for i in mine], [labels[i] for i in mine])["accuracy"]
                         if mine else float("nan"))
    swap_language(model, task.source_language)
    for lang in task.languages:
        kept[lang] = task.evaluate(model, tests[lang], task.tokenizer)["accuracy"]
    return {"seed": seed, "swapped": swapped, "kept": kept, "private_subject": private, "final_loss": statistics.fmean(losses[-20:]),
            "wall": time.perf_counter() - wall0, "cpu": time.process_time() - cpu0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", default="default")
    parser.add_argument("--world-seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="testbed directory (default: the cache)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--task-module", default="seq_bn", choices=["seq_bn", "lora", "full"])
    parser.add_argument("--reduction-factor", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--force", action="store_true", help="rebuild the testbed even if cached")
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args()

    from fisherlab.tasks import get_task
    from fisherlab.testbed import build_testbed, load_testbed, world_config

    torch.set_num_threads(args.threads)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    if args.out and (Path(args.out) / "world.json").is_file() and not args.force:
        testbed = load_testbed(args.out)  # whatever world is there (e.g. a variant built elsewhere)
    else:
        testbed = build_testbed(world_config(args.world, args.world_seed), args.out, threads=args.threads,
                                progress=False, force=args.force)
    build_wall, build_cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    recorded = testbed.manifest["build"]
    print(f"testbed {testbed.root} (hash {testbed.manifest['hash']})")
    print(f"build: this call {build_wall:.1f} s wall / {build_cpu:.1f} s CPU; recorded build "
          f"{recorded['wall_seconds']:.1f} s wall / {recorded['cpu_seconds']:.1f} s CPU "
          f"(threads={recorded['threads']}, pretraining {recorded['pretrain_seconds']:.1f} s)")

    task = get_task("testbed", path=testbed.root)
    runs = [one_run(task, seed, args) for seed in args.seeds]
    chance = 100.0 / task.num_labels
    src = task.source_language
    mean = {lang: statistics.fmean(r["swapped"][lang] for r in runs) for lang in task.languages}
    std = {lang: statistics.pstdev([r["swapped"][lang] for r in runs]) for lang in task.languages}
    kept = {lang: statistics.fmean(r["kept"][lang] for r in runs) for lang in task.languages}
    private = {lang: statistics.fmean(r["private_subject"][lang] for r in runs) for lang in task.languages}
    anchors = subject_is_anchor(task)
    print(f"\naccuracy % over seeds {args.seeds} (chance {chance:.1f}); band = [chance+5, source-5]")
    print("own adapter = Stack(lang, task) (MAD-X zero-shot); source adapter = the source language's kept;")
    print("private subject = items whose subject noun is not an anchor token (transfer beyond shared words)")
    print(f"{'lang':6s} {'own adapter':>16s} {'source adapter':>15s} {'private subject':>22s}  in band")
    in_band = []
    for lang in task.languages:
        ok = lang != src and chance + 5 <= mean[lang] <= mean[src] - 5
        in_band += [lang] if ok else []
        n_private = sum(not a for a in anchors[lang])
        print(f"{lang:6s} {mean[lang]:9.1f} +-{std[lang]:4.1f} {kept[lang]:15.1f} {private[lang]:11.1f} "
              f"(n={n_private:4d})  {'yes' if ok else ''}")
    run_wall = [r["wall"] for r in runs]
    run_cpu = [r["cpu"] for r in runs]
    print(f"\nsource {src}: {mean[src]:.1f} (>= 70: {mean[src] >= 70}); languages in band: {len(in_band)} "
          f"{in_band} (>= 3: {len(in_band) >= 3})")
    print(f"one run (task adapter + evaluation of {len(task.languages)} languages x2): median "
          f"{statistics.median(run_wall):.1f} s wall / {statistics.median(run_cpu):.1f} s CPU")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"runs": runs, "mean": mean, "std": std, "kept": kept, "private_subject": private,
                       "in_band": in_band,
                       "build": recorded, "args": vars(args)}, fh, indent=1)


if __name__ == "__main__":
    main()
