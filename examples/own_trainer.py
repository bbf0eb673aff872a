"""Your own Hugging Face Trainer script, plus three fisherlab lines (marked ``# fisherlab``).

A plain ``transformers.Trainer`` trains a task adapter; :class:`fisherlab.hf.FisherlabRun`
adds scheduled unfreezing, the tr(F) probe and the validation curve, and writes a complete
run directory that ``fisherlab analyze`` reads::

    python examples/own_trainer.py --model bert-base-multilingual-cased --task xnli --run_dir runs/fun-0
    python examples/own_trainer.py --tiny --run_dir runs/tiny-0      # offline: the tiny synthetic testbed

``--tiny`` builds the tiny synthetic world (a small encoder built from a config, seconds on a
CPU; cached) and trains on its task instead of a hub model and dataset.
"""

from __future__ import annotations

import argparse

from adapters import AutoAdapterModel
from transformers import AutoTokenizer, DataCollatorWithPadding, Trainer, TrainingArguments

from fisherlab.hf import FisherlabRun  # fisherlab
from fisherlab.tasks import get_task


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--model", default="bert-base-multilingual-cased", help="hub name or local directory")
    parser.add_argument("--task", default="xnli", help="a fisherlab task (fisherlab tasks lists them)")
    parser.add_argument("--tiny", action="store_true", help="offline: the tiny synthetic testbed's encoder and task")
    parser.add_argument("--testbed", default=None, help="--tiny: testbed directory (default: the cache)")
    parser.add_argument("--run_dir", default="runs/own-trainer")
    parser.add_argument("--strategy", default="fisher:k=50", help="unfreezing strategy string")
    parser.add_argument("--max_steps", type=int, default=2000)
    parser.add_argument("--probe_every", type=int, default=100)
    parser.add_argument("--probe_batches", type=int, default=40)
    parser.add_argument("--eval_steps", type=int, default=500)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_samples", type=int, default=None, help="subsample every split (quick tries)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def load(args: argparse.Namespace):
    """Task, model (with a fresh task adapter and head, adapter training on) and tokenizer."""
    if args.tiny:
        from fisherlab.testbed import build_testbed, tiny_world_config

        testbed = build_testbed(tiny_world_config(seed=0), args.testbed, progress=False)
        task, base = get_task("testbed", path=str(testbed.root)), str(testbed.base_dir)
    else:
        task, base = get_task(args.task), args.model
    tokenizer = getattr(task, "tokenizer", None) or AutoTokenizer.from_pretrained(base)
    model = AutoAdapterModel.from_pretrained(base)
    model.add_adapter(task.name, config="seq_bn")
    model.add_classification_head(task.name, num_labels=task.num_labels)
    model.train_adapter(task.name)  # activates the adapter and its head, freezes the encoder
    return task, model, tokenizer


def split(task, name: str, language: str, tokenizer, limit: int | None):
    data = task.load(name, language, tokenizer)
    return data.select(range(min(limit, len(data)))) if limit else data


def main(argv=None, trainer_class=Trainer) -> str:
    args = parse_args(argv)
    task, model, tokenizer = load(args)
    source = task.source_language
    train = split(task, "train", source, tokenizer, args.max_samples)
    validation = split(task, "validation", source, tokenizer, args.max_samples)
    training_args = TrainingArguments(
        output_dir=f"{args.run_dir}/checkpoints", max_steps=args.max_steps, learning_rate=1e-3,
        per_device_train_batch_size=args.batch_size, eval_strategy="steps", eval_steps=args.eval_steps,
        logging_steps=max(1, args.eval_steps // 2), save_strategy="no", report_to=[], seed=args.seed,
        disable_tqdm=True)
    run = FisherlabRun(args.run_dir, strategy=args.strategy, probe_every=args.probe_every,  # fisherlab
                       probe_batches=args.probe_batches, task=task.name, source_language=source, overwrite=True)
    trainer = trainer_class(model=model, args=training_args, train_dataset=train, eval_dataset=validation,
                            data_collator=DataCollatorWithPadding(tokenizer),
                            compute_metrics=task.trainer_compute_metrics(validation))
    run.attach(trainer)  # fisherlab
    trainer.train()
    results = {lang: task.evaluate(model, split(task, "test", lang, tokenizer, args.max_samples), tokenizer)
               for lang in task.languages}
    run.finish(trainer, results=results)  # fisherlab
    print(f"run written to {args.run_dir}")
    return args.run_dir


if __name__ == "__main__":
    main()
