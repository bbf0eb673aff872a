"""The ``fisherlab`` command line (typer).

Each command is a thin wrapper: it parses options, imports its module lazily
(so ``fisherlab analyze`` never imports torch) and calls one library function.
"""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(
    name="fisherlab",
    help="Fisher-information learning dynamics for multilingual adapter fine-tuning.",
    no_args_is_help=True,
    add_completion=False,
)


testbed_app = typer.Typer(help="The offline synthetic multilingual testbed.", no_args_is_help=True)
app.add_typer(testbed_app, name="testbed")


@testbed_app.command("build")
def testbed_build(
    world: str = typer.Option("default", help="World preset: default, deep (6 layers) or tiny."),
    seed: int = typer.Option(0, help="World seed (part of the cache key)."),
    out: str = typer.Option(None, help="Testbed directory (default: ~/.cache/fisherlab/testbed/<hash>)."),
    threads: int = typer.Option(None, help="Language adapters trained at once, in worker processes (default: the "
                                           "number of CPU cores). The world does not depend on it."),
    force: bool = typer.Option(False, help="Rebuild even if a complete testbed is cached."),
    quiet: bool = typer.Option(False, help="No progress bars."),
) -> None:
    """Build (or reuse) a testbed: tiny encoder + tokenizer + one language adapter per language."""
    from fisherlab.testbed import TestbedError, build_testbed, world_config

    try:
        testbed = build_testbed(world_config(world, seed), out, threads=threads, progress=not quiet, force=force)
    except (TestbedError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    build = testbed.manifest["build"]
    typer.echo(f"testbed {testbed.root}")
    typer.echo(f"languages {', '.join(testbed.languages)} (source {testbed.source_language}); built in "
               f"{build['wall_seconds']:.0f} s wall / {build['cpu_seconds']:.0f} s CPU ({build['threads']} adapter process(es))")


@app.command("fisher")
def fisher(
    model: str = typer.Option(None, "--model", help="Checkpoint path or hub name (AutoAdapterModel; plain "
                              "AutoModelFor* checkpoints work too). Default: a tiny built-in model."),
    adapter: str = typer.Option(None, help="Task adapter: a name in the checkpoint or a saved adapter directory."),
    lang_adapter: str = typer.Option(None, help="Language adapter stacked before the task adapter (name or directory)."),
    arch: str = typer.Option("bert", help="Built-in model architecture: bert, xlm-roberta, deberta-v2."),
    layers: int = typer.Option(2, help="Built-in model: number of layers."),
    task_module: str = typer.Option("seq_bn", help="Built-in model: seq_bn, seq_bn_inv, double_seq_bn, lora, none."),
    head: str = typer.Option("classification", help="Built-in model: classification, multiple_choice, qa, tagging, mlm."),
    data: str = typer.Option(None, help="JSONL file of text rows, tokenised by the model's tokenizer "
                             "(default: random token batches)."),
    text_field: Annotated[list[str] | None, typer.Option(
        help="Text field(s) of --data rows (default: 'text' or the first string fields).")] = None,
    estimator: str = typer.Option("per_example", help="per_example, exact, batch, empirical or reference."),
    batches: int = typer.Option(4, help="Number of batches."),
    batch_size: int = typer.Option(8, help="Examples per batch."),
    seq_len: int = typer.Option(16, help="Tokens per sequence (random data) / truncation length (--data)."),
    seed: int = typer.Option(0, help="Seed of the data generator and the label sampler."),
    out: str = typer.Option(None, help="Write the measurement as JSON here (otherwise print only)."),
    progress: bool = typer.Option(False, help="Show a progress bar over batches."),
) -> None:
    """Measure tr(F) per block of a model (sanity-check a checkpoint); see docs/cli.md."""
    import json
    from pathlib import Path

    from fisherlab.fisher.outputs import FisherError
    from fisherlab.fisher.sanity import (
        build_tiny,
        format_table,
        jsonl_batches,
        load_checkpoint,
        load_tokenizer,
        measure,
        random_batches,
        to_json,
    )

    try:
        if model is None:
            module = None if task_module.lower() == "none" else task_module
            loaded = build_tiny(arch, layers, module, head, seed=seed)
        else:
            loaded = load_checkpoint(model, adapter, lang_adapter)
        if data is not None:
            tokenizer = load_tokenizer(loaded.tokenizer_source)
            made = jsonl_batches(data, tokenizer, loaded.output, batches, batch_size, seq_len,
                                 list(text_field or []) or None)
        else:
            made = random_batches(loaded.model, loaded.output, batches, batch_size, seq_len, seed)
        measurement = measure(loaded, made, estimator, seed, progress=progress)
    except (FisherError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    meta = measurement.meta
    typer.echo(f"model {loaded.source}; output {meta['output']}; estimator {meta['estimator']} "
               f"({meta['labels']} labels); {measurement.n_examples} examples in {meta['n_batches']} batches; "
               f"{meta['mode']} mode, {meta['dtype']}, attention {meta['attn_implementation']}")
    typer.echo(format_table(measurement))
    if out is not None:
        path = Path(out)
        path.write_text(json.dumps(to_json(measurement, loaded.source), indent=2) + "\n", encoding="utf-8")
        typer.echo(f"wrote {path}")


@app.command("train", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train(
    ctx: typer.Context,
    config: str = typer.Argument(None, help="YAML or JSON config file (fields of the run dataclasses and "
                                 "transformers.TrainingArguments)."),
    help_fields: bool = typer.Option(False, "--help-fields", help="List every config field and exit."),
    from_run: str = typer.Option(None, "--from-run", help="Start from the config of an earlier run (its "
                                 "run.json); give --run_dir for the new run. A config file and flags override it."),
) -> None:
    """One run: build the MAD-X model, train with unfreezing + probe callbacks, evaluate zero-shot, write the run.

    Any config field can be given or overridden as a flag after the file, HF-style:
    ``fisherlab train run.yaml --strategy gradual:k=50 --seed 3 --run_dir runs/gu-3``.
    """
    from pathlib import Path

    args = list(ctx.args)
    if config is not None and config.startswith("-"):  # no file: the first flag landed here
        args, config = [config, *args], None
    # fail fast (before torch is imported) on what needs no parser
    for what, value, check in (("config file", config, Path.is_file), ("--from-run", from_run, Path.is_dir)):
        if value is not None and not help_fields and not check(Path(value)):
            typer.echo(f"error: {what} {value!r} does not exist", err=True)
            raise typer.Exit(2)

    from fisherlab.errors import FisherlabError
    from fisherlab.train import ConfigError, _parser, fields_from_run, parse_config, run_training

    if help_fields:
        typer.echo(_parser().format_help())
        raise typer.Exit(0)
    try:
        stored = fields_from_run(from_run) if from_run is not None else {}
        if from_run is not None and config is not None:  # precedence: stored run < file < flags
            parsed = parse_config(config, args, overrides={**stored, **_file_fields(config)})
        else:
            parsed = parse_config(config, args, overrides=stored)
        run_dir = run_training(parsed)
    except (ConfigError, FisherlabError) as err:  # e.g. a missing or malformed task data file
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    typer.echo(f"run written to {run_dir}")


def _file_fields(config: str) -> dict:
    """The fields of a YAML/JSON config file (for ``--from-run`` with a file on top)."""
    import json
    from pathlib import Path

    import yaml

    try:
        text = Path(config).read_text()
        loaded = yaml.safe_load(text) if config.endswith((".yaml", ".yml")) else json.loads(text)
    except (OSError, ValueError, yaml.YAMLError):
        return {}  # parse_config reads the file again and names the problem
    return dict(loaded) if isinstance(loaded, dict) else {}


@app.command("two-stage", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def two_stage(
    ctx: typer.Context,
    config: str = typer.Argument(None, help="Stage-1 config (as `fisherlab train` takes it)."),
    targets: str = typer.Option(..., help="Comma-separated target languages of stage 2, e.g. de,es,zh."),
    stage2_epochs: float = typer.Option(None, help="Stage-2 epochs (default: stage 1's)."),
    stage2_max_steps: int = typer.Option(None, help="Stage-2 optimizer steps (overrides epochs)."),
    stage2_lr: float = typer.Option(None, help="Stage-2 learning rate (default: stage 1's)."),
) -> None:
    """Stickland & Murray's two-stage protocol: train on English, then per target language on its
    train split, evaluating on its validation split before/after; writes `two_stage_gain` rows."""
    from fisherlab.errors import FisherlabError
    from fisherlab.train import ConfigError, parse_config
    from fisherlab.two_stage import run_two_stage

    args = list(ctx.args)
    if config is not None and config.startswith("-"):
        args, config = [config, *args], None
    try:
        run_dir = run_two_stage(parse_config(config, args), targets.split(","), epochs=stage2_epochs,
                                max_steps=stage2_max_steps, learning_rate=stage2_lr)
    except (ConfigError, FisherlabError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    typer.echo(f"run written to {run_dir} (two_stage_gain rows in metrics.jsonl)")


@app.command("tasks")
def tasks() -> None:
    """List the registered tasks with training data, test languages, metric and hub ids (docs/tasks.md)."""
    from fisherlab.tasks import available_tasks
    from fisherlab.tasks.catalog import CATALOG

    known = {info.name: info for info in CATALOG}
    for name in available_tasks():
        info = known.get(name)
        if info is None:
            typer.echo(f"{name}: (registered; no description)")
            continue
        languages = ", ".join(info.languages) or "the world's languages"
        typer.echo(f"{name}: train {info.training}; test {languages}; metric {info.metric}")
        typer.echo(f"  hub: {', '.join(info.hub) or 'none (files only)'}; files: {info.layout}")


@app.command("analyze")
def analyze(
    runs: list[str] = typer.Argument(..., metavar="RUNS", help="Run directories, parents of run directories (any depth) or globs."),  # noqa: B008
    out: str = typer.Option(..., "--out", "-o", help="Output directory: report.html, figures/, tables/, summary.json."),
    baseline: str = typer.Option(None, help="Method the relative figure and tables compare against "
                                 "(default: 'full' if present, else 'standard')."),
    metric: str = typer.Option(None, help="Result metric to keep, e.g. f1 (default: each run's own)."),
    delta: float = typer.Option(1.0, help="Grouping threshold in result points (FUN footnote 10)."),
    window: int = typer.Option(5, help="Centred moving-average window over probe points."),
    figures: str = typer.Option("all", help="Comma-separated figures: trace, trace_validation, order, relative, "
                                "feature_result, regulariser, two_stage, language_trace, language_relation, "
                                "language_ranking, or 'all'."),
    estimators: str = typer.Option("facet", help="Runs with different tr(F) estimators: 'facet' (a panel per "
                                   "estimator) or 'refuse' (skip such figures, saying why)."),
    correlation: str = typer.Option("spearman", help="spearman, pearson or kendall."),
    n_boot: int = typer.Option(2000, help="Bootstrap resamples for confidence intervals."),
    n_perm: int = typer.Option(2000, help="Permutations for correlation p-values."),
    seed: int = typer.Option(0, help="Seed of every bootstrap and permutation."),
    validation_split: str = typer.Option("validation", help="metrics.jsonl split drawn with tr(F) in trace_validation."),
    regulariser_column: str = typer.Option(None, help="Run column naming the regulariser (default: auto-detected)."),
    weight_column: str = typer.Option(None, help="Run column with the regulariser weight (default: auto-detected)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar over runs."),
) -> None:
    """Analyse a run store: HTML report, PDF/PNG figures, CSV tables, summary.json (see docs/analysis-report.md)."""
    from fisherlab.report import ReportError, build_report, parse_figures

    try:
        result = build_report(
            runs, out, baseline=baseline, metric=metric, delta=delta, window=window,
            figures=parse_figures(figures), estimator_policy=estimators, correlation=correlation,
            n_boot=n_boot, n_perm=n_perm, seed=seed, validation_split=validation_split,
            regulariser_column=regulariser_column, weight_column=weight_column, progress=progress,
        )
    except ReportError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    summary = result.summary
    typer.echo(f"{summary['n_runs']} runs, {summary['n_problems']} problems; "
               f"{len(result.figures)} figures, {len(result.tables)} tables")
    for name, reason in result.skipped.items():
        typer.echo(f"skipped figure {name}: {reason}")
    typer.echo(f"wrote {result.html}")


@app.command("demo")
def demo(
    out: str = typer.Option("fisherlab-demo", help="Output directory: runs/ and report/ go here."),
    world: str = typer.Option("default", help="Testbed world preset: default, deep (6 layers) or tiny."),
    methods: str = typer.Option("standard,gradual,fisher",
                                help="Comma-separated: standard, gradual, fisher, random, lpft, reverse."),
    seeds: int = typer.Option(2, help="Seeds per method (0..N-1)."),
    steps: int = typer.Option(None, help="Training steps per run (default: the world's budget)."),
    k: int = typer.Option(None, help="Unfreezing interval (default: steps // (4 * layers))."),
    probe_every: int = typer.Option(20, help="Measure tr(F) every N steps."),
    probe_batches: int = typer.Option(8, help="Batches per tr(F) measurement."),
    threads: int = typer.Option(1, help="torch CPU threads of the training runs (1 is fastest on a loaded 2-core machine)."),
    quiet: bool = typer.Option(False, help="No progress bars."),
    verbose: bool = typer.Option(False, help="Every run's full Trainer output (log dicts, progress bars) on the "
                                             "console instead of RUN_DIR/train.log."),
) -> None:
    """Testbed -> methods x seeds training runs with the tr(F) probe -> `analyze` report (offline, CPU).

    The console shows one progress bar over the runs and one status line per run (method,
    seed, step, last validation score); each run's full log is in its train.log."""
    from fisherlab.demo import run_demo

    try:
        result = run_demo(out, world=world, methods=[m.strip() for m in methods.split(",") if m.strip()],
                          seeds=list(range(seeds)), steps=steps, k=k, probe_every=probe_every,
                          probe_batches=probe_batches, threads=threads, progress=not quiet, verbose=verbose)
    except ValueError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    trained = sum(v == "trained" for v in result.runs.values())
    typer.echo(f"{len(result.runs)} runs in {result.runs_dir} ({trained} trained, "
               f"{len(result.runs) - trained} reused); report: {result.report_dir / 'report.html'}")


@app.command("sweep", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def sweep(
    ctx: typer.Context,
    config: str = typer.Argument(None, help="Base YAML/JSON config of every run (as `fisherlab train` takes it)."),
    methods: str = typer.Option(",".join(("standard", "gradual", "fisher")),
                                help="Comma-separated: standard, gradual, fisher, random, lpft, reverse ('' for none)."),
    seeds: int = typer.Option(1, help="Seeds per schedule (0..N-1)."),
    permutations: int = typer.Option(0, help="Random permutation schedules (FUN section 5.2) to add."),
    permutation_seed: int = typer.Option(0, help="Seed of the permutation sampler."),
    k: int = typer.Option(None, help="Unfreezing interval (default: the k= of the base config's strategy)."),
    out: str = typer.Option("runs", help="Sweep directory: one run directory per run, plus sweep.json."),
    executor: str = typer.Option("local", help="local (one run after the other) or slurm (submitit)."),
    slurm: Annotated[list[str] | None, typer.Option(
        help="submitit parameter KEY=VALUE (repeatable), e.g. timeout_min=120, slurm_partition=gpu.")] = None,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan; run and write nothing."),
    quiet: bool = typer.Option(False, help="No progress bar or per-run status lines."),
    verbose: bool = typer.Option(False, help="Every run's full Trainer output on the console instead of "
                                             "RUN_DIR/train.log."),
    jobs: int = typer.Option(1, help="Local runs at once (one process each; one GPU each when there are "
                                     "GPUs, else CPU threads split)."),
    runs_per_gpu: int = typer.Option(1, help="With --jobs: runs that may share one GPU."),
) -> None:
    """Many runs: methods x seeds (+ sampled permutation schedules); see docs/cli.md.

    Flags after `--` are `fisherlab train` flags given to every run, e.g.
    `fisherlab sweep base.yaml --seeds 3 --permutations 9 --k 50 --out runs/ -- --max_steps 2000`.
    """
    from fisherlab.sweep import format_plan, parse_slurm_options, plan_sweep, run_sweep
    from fisherlab.train import ConfigError

    args = list(ctx.args)
    if config is not None and config.startswith("-"):  # no file: the first extra flag landed here
        args, config = [config, *args], None
    from fisherlab.sweep.study import is_sweep_file, plan_study

    try:
        if is_sweep_file(config):  # a sweep file (`sweep:` section) says methods, seeds, preset itself
            plan = plan_study(config, args, out=None if out == "runs" else out)
        else:
            plan = plan_sweep(config, args, methods=[m.strip() for m in methods.split(",") if m.strip()],
                              seeds=list(range(seeds)), permutations=permutations,
                              permutation_seed=permutation_seed, k=k, out=out)
        result = run_sweep(plan, executor=executor, dry_run=dry_run, progress=not (quiet or dry_run),
                           slurm_options=parse_slurm_options(slurm or []), verbose=verbose, jobs=jobs,
                           runs_per_gpu=runs_per_gpu)
    except ConfigError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    typer.echo(format_plan(plan, result.statuses))
    if dry_run:
        typer.echo(f"{len(plan)} runs planned in {result.sweep_dir} (dry run: nothing ran)")
        return
    counts = {s: list(result.statuses.values()).count(s) for s in dict.fromkeys(result.statuses.values())}
    typer.echo(f"{len(plan)} runs ({', '.join(f'{n} {s}' for s, n in counts.items())}); manifest: {result.manifest}")
    for record in result.records:
        if record["status"] == "failed":
            typer.echo(f"failed {record['name']}: {record['error']}", err=True)
    typer.echo(f"next: fisherlab analyze {result.sweep_dir} --out {result.sweep_dir / 'report'}")
    if result.failed:
        raise typer.Exit(1)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
