"""Does the default testbed world show a real, movable cross-lingual gap, and is it cheap?

Builds (or reuses) the testbed, then for each seed trains a standard MAD-X task
adapter on the source language (``build_madx`` + the testbed task, a plain
AdamW loop) and evaluates every language zero-shot with its own language
adapter (``swap_language``) and, as a control, with the source adapter kept.

Acceptance (issue 5): build <= 6 min on 2 cores; source accuracy >= 70; at least
three target languages with chance + 5 <= accuracy <= source - 5 (means over
seeds); one run (task adapter + evaluation of all languages) <= 2 min.
Issue 13 (language adapters matter): the *swap gain* per language, own adapter
minus source adapter kept, paired per task-adapter seed, with a 95% Student-t
interval over seeds (``scipy.stats.t``); and the accuracy on items whose subject
is a private (non-anchor) word, with an exact one-sided binomial test against
chance on the pooled items of all seeds.
Prints wall and CPU seconds (on a shared machine wall time is inflated by load).

    python benchmarks/testbed_quality.py --seeds 0 1 2 --threads 1
    python benchmarks/testbed_quality.py --variant <name> --base-from <testbed dir> --out <dir>   # a variant
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
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


def t_interval(values: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided Student-t interval of ``values`` (independent seeds); nan bounds for one value."""
    from scipy import stats

    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def variant_config(name: str, seed: int):
    """World settings of a named variant measured for issue 13 (``VARIANTS``)."""
    if name not in VARIANTS:
        raise SystemExit(f"--variant: unknown {name!r}; expected one of {sorted(VARIANTS)}")
    return VARIANTS[name](seed)


def _with_adapters(config, **changes):
    return dataclasses.replace(config, adapters=dataclasses.replace(config.adapters, **changes))


def _variants():
    """Variants measured for issue 13 (see benchmarks/RESULTS.md); ``default`` is the kept one."""
    from fisherlab.testbed import default_world_config, old_default_world_config

    def held_out_lexical_150(seed):
        """The default world with the issue-5 language-adapter budget (150 steps, one lr) plus lexical tables."""
        return _with_adapters(default_world_config(seed), steps=150, lexical_lr=None)

    def pretrain_2_threads(seed):
        """The default world pretrained on 2 torch threads: the same recipe, other float rounding."""
        default = default_world_config(seed)
        return dataclasses.replace(default, pretrain=dataclasses.replace(default.pretrain, threads=2))

    def lexical_250(seed):
        """The pretrain-2-threads world with 250-step language adapters (for the 6-minute build budget)."""
        return _with_adapters(pretrain_2_threads(seed), steps=250)

    return {
        "old-default": old_default_world_config,
        "held-out+lexical-150": held_out_lexical_150,
        "pretrain-2-threads": pretrain_2_threads,
        "lexical-250": lexical_250,
        "default": default_world_config,
    }


VARIANTS = {}


def one_run(task, seed: int, args) -> dict:
    from fisherlab.models import build_madx, swap_language

    wall0, cpu0 = time.perf_counter(), time.process_time()
    defaults = {**task.model_defaults(), **({"reduction_factor": args.reduction_factor} if args.reduction_factor else {})}
    model = build_madx(**defaults, task=task, task_module=args.task_module, seed=seed)
    train = task.load("train", task.source_language)
    t = task.training_defaults()
    losses = train_task_adapter(model, train, task.tokenizer, steps=args.steps or t["steps"],
                                batch_size=t["batch_size"], lr=args.lr or t["lr"], seed=seed)
    swapped, kept, private, private_kept = {}, {}, {}, {}
    tests = {lang: task.load("test", lang) for lang in task.languages}
    anchors = subject_is_anchor(task)

    def score(lang: str) -> tuple[float, float]:
        """Accuracy on all test items and on the private-subject items (nan without any)."""
        predictions = task.predict(model, tests[lang], task.tokenizer)
        labels = list(tests[lang]["labels"])
        mine = [i for i, shared in enumerate(anchors[lang]) if not shared]
        part = (task.compute_metrics([predictions[i] for i in mine], [labels[i] for i in mine])["accuracy"]
                if mine else float("nan"))
        return task.compute_metrics(predictions, labels)["accuracy"], part

    for lang in task.languages:
        swap_language(model, lang)
        swapped[lang], private[lang] = score(lang)
    swap_language(model, task.source_language)
    for lang in task.languages:
        kept[lang], private_kept[lang] = score(lang)
    return {"seed": seed, "swapped": swapped, "kept": kept, "private_subject": private,
            "private_subject_kept": private_kept, "final_loss": statistics.fmean(losses[-20:]),
            "wall": time.perf_counter() - wall0, "cpu": time.process_time() - cpu0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", default="default")
    parser.add_argument("--variant", default=None, help="a named variant world (overrides --world)")
    parser.add_argument("--base-from", default=None, help="copy the pretrained base of this testbed (variants "
                        "that differ only in language-adapter settings)")
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
        VARIANTS.update(_variants())
        config = (variant_config(args.variant, args.world_seed) if args.variant
                  else world_config(args.world, args.world_seed))
        testbed = build_testbed(config, args.out, threads=args.threads, progress=False, force=args.force,
                                base_from=args.base_from)
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
    private_kept = {lang: statistics.fmean(r["private_subject_kept"][lang] for r in runs) for lang in task.languages}
    anchors = subject_is_anchor(task)
    labels = [task._world.label(m) for m in task.testbed.world().split_meanings("test")]
    majority = {}  # the best constant prediction on each language's private-subject items (percent)
    for lang in task.languages:
        mine = [labels[i] for i, shared in enumerate(anchors[lang]) if not shared]
        majority[lang] = 100.0 * max(mine.count(c) for c in set(mine)) / len(mine) if mine else math.nan
    print(f"\naccuracy % over seeds {args.seeds} (chance {chance:.1f}); band = [chance+5, source-5]")
    print("own adapter = Stack(lang, task) (MAD-X zero-shot); source adapter = the source language's kept;")
    print("private subject = items whose subject noun is not an anchor token (transfer beyond shared words)")
    print("swap gain = own - source adapter, paired per seed, mean [95% t-interval over seeds];")
    print("private subject: mean [95% t-interval over seeds], own adapter; then with the source adapter kept,")
    print("and the majority-class rate of those items (the floor a constant prediction reaches)")
    pretrained = {spec.code: spec.pretrain_sentences for spec in task.testbed.config.languages}
    print(f"{'lang':6s} {'pretrain':>8s} {'own adapter':>16s} {'source adapter':>15s} {'swap gain':>24s} "
          f"{'private subject':>30s} {'kept':>5s} {'major':>5s}  in band")
    in_band, gains, private_ci = [], {}, {}
    for lang in task.languages:
        ok = lang != src and chance + 5 <= mean[lang] <= mean[src] - 5
        in_band += [lang] if ok else []
        n_private = sum(not a for a in anchors[lang])
        gains[lang] = t_interval([r["swapped"][lang] - r["kept"][lang] for r in runs])
        private_ci[lang] = (t_interval([r["private_subject"][lang] for r in runs]) if n_private
                            else (math.nan,) * 3)
        g, p = gains[lang], private_ci[lang]
        print(f"{lang:6s} {pretrained[lang]:8d} {mean[lang]:9.1f} +-{std[lang]:4.1f} {kept[lang]:15.1f} "
              f"{g[0]:+7.1f} [{g[1]:+6.1f}, {g[2]:+6.1f}] {p[0]:7.1f} [{p[1]:5.1f}, {p[2]:5.1f}] (n={n_private:4d})"
              f" {private_kept[lang]:5.1f} {majority[lang]:5.1f}  {'yes' if ok else ''}")
    gain_langs = [lang for lang in task.languages if lang != src and gains[lang][0] >= 3 and gains[lang][1] > 0]
    held = [lang for lang in gain_langs if pretrained[lang] == 0]
    private_langs = [lang for lang in task.languages
                     if lang != src and private_ci[lang][1] > max(chance, majority[lang])]
    print(f"swap gain >= 3 with interval above 0: {gain_langs} (held out of pretraining: {held}); "
          f"goal (>= 2, one held out): {len(gain_langs) >= 2 and bool(held)}")
    print(f"private-subject accuracy above chance (interval above chance and the majority rate): {private_langs} "
          f"(goal >= 2: {len(private_langs) >= 2})")
    run_wall = [r["wall"] for r in runs]
    run_cpu = [r["cpu"] for r in runs]
    print(f"\nsource {src}: {mean[src]:.1f} (>= 70: {mean[src] >= 70}); languages in band: {len(in_band)} "
          f"{in_band} (>= 3: {len(in_band) >= 3})")
    print(f"one run (task adapter + evaluation of {len(task.languages)} languages x2): median "
          f"{statistics.median(run_wall):.1f} s wall / {statistics.median(run_cpu):.1f} s CPU")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"runs": runs, "mean": mean, "std": std, "kept": kept, "private_subject": private,
                       "private_subject_kept": private_kept, "private_majority": majority,
                       "in_band": in_band, "swap_gain": gains, "private_subject_ci": private_ci,
                       "build": recorded, "args": vars(args)}, fh, indent=1)


if __name__ == "__main__":
    main()
