"""The documented fixture of README.md's "Use it" snippets: the objects of an ordinary HF script, tiny.

``readme_namespace(testbed, cache)`` returns ``model`` (the tiny testbed encoder with a fresh
active task adapter and head), ``batches`` (a few tokenised training batches), ``args``
(small ``TrainingArguments``), ``train``/``validation`` (datasets), ``test`` (language ->
dataset), ``task`` and ``tokenizer``. Everything is built offline from the tiny synthetic world.
"""

from __future__ import annotations

from typing import Any


def readme_namespace(testbed: Any) -> dict[str, Any]:
    from adapters import AutoAdapterModel
    from transformers import DataCollatorWithPadding, TrainingArguments

    from fisherlab.models import quiet_train_adapter
    from fisherlab.tasks import get_task

    task = get_task("testbed", path=str(testbed.root))
    tokenizer = task.tokenizer
    model = AutoAdapterModel.from_pretrained(str(testbed.base_dir))
    model.add_adapter("xnli", config="seq_bn")
    model.add_classification_head("xnli", num_labels=task.num_labels)
    with quiet_train_adapter():
        model.train_adapter("xnli")
    source = task.source_language

    def small(split: str, language: str, n: int):
        data = task.load(split, language, tokenizer)
        return data.select(range(min(n, len(data))))

    train, validation = small("train", source, 64), small("validation", source, 32)
    collate = DataCollatorWithPadding(tokenizer)
    columns = ["input_ids", "attention_mask", "labels"]
    batches = [collate([{c: train[i][c] for c in columns} for i in range(j, j + 8)]) for j in (0, 8)]
    args = TrainingArguments(output_dir="checkpoints", max_steps=12, per_device_train_batch_size=8,
                             learning_rate=3e-3, eval_strategy="steps", eval_steps=6, logging_steps=3,
                             save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True, seed=0)
    test = {language: small("test", language, 32) for language in task.languages}
    return {"model": model, "batches": batches, "args": args, "train": train, "validation": validation,
            "test": test, "task": task, "tokenizer": tokenizer}
