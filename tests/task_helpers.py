"""Shared helpers of the task tests: fixture paths, a word-level fast tokenizer, a saved tiny base."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def word_tokenizer(texts: Iterable[str], max_length: int = 512):
    """A word-level fast tokenizer over the words of ``texts`` (no hub needed; offsets work).

    Like BERT's: CJK characters are words of their own, punctuation runs split from words.
    """
    from tokenizers import normalizers, pre_tokenizers

    from fisherlab.testbed.tokenizer import build_tokenizer

    normalizer = normalizers.BertNormalizer(clean_text=False, handle_chinese_chars=True, strip_accents=False,
                                            lowercase=False)
    splitter = pre_tokenizers.Whitespace()
    words = (w for t in texts for w, _ in splitter.pre_tokenize_str(normalizer.normalize_str(t)))
    tokenizer = build_tokenizer(words, model_max_length=max_length)
    tokenizer.backend_tokenizer.normalizer = normalizer
    tokenizer.backend_tokenizer.pre_tokenizer = splitter
    return tokenizer


def fixture_texts(root: Path) -> list[str]:
    """Every string in the fixture files under ``root`` (TSV fields, JSON strings), for a vocabulary."""
    texts: list[str] = []

    def walk(value):
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    for path in sorted(Path(root).rglob("*")):
        if path.suffix == ".tsv":
            texts.extend(path.read_text(encoding="utf-8").replace("\n", "\t").split("\t"))
        elif path.suffix == ".json":
            walk(json.loads(path.read_text(encoding="utf-8")))
        elif path.suffix == ".jsonl":
            for line in path.read_text(encoding="utf-8").splitlines():
                walk(json.loads(line))
    return texts


def with_edited_line(source: Path, target: Path, relative: str, number: int, edit) -> Path:
    """A copy of the fixture tree ``source`` at ``target`` whose file ``relative`` has its line
    ``number`` (1-based) replaced by ``edit(line)``; returns ``target``."""
    import shutil

    if not target.exists():
        shutil.copytree(source, target)
    path = target / relative
    original = (source / relative).read_text(encoding="utf-8").splitlines()
    original[number - 1] = edit(original[number - 1])
    path.write_text("\n".join(original) + "\n", encoding="utf-8")
    return target


def save_tiny_base(path: Path, tokenizer, max_positions: int = 128) -> str:
    """A tiny BERT (``AutoAdapterModel`` from a config) and ``tokenizer`` saved as a base model directory."""
    import torch
    from adapters import AutoAdapterModel

    from fisherlab.tiny import tiny_config

    torch.manual_seed(0)
    model = AutoAdapterModel.from_config(tiny_config("bert", vocab=len(tokenizer), max_positions=max_positions))
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return str(path)


def train_steps(task, data, tokenizer, steps: int = 20, lr: float = 1e-2, seed: int = 0):
    """``steps`` Adam steps of a tiny model (built from a config, every weight trained) on one batch of ``data``;
    returns the losses. The task's head kind and label count pick the head."""
    import torch

    from fisherlab.tasks.base import pad_features
    from fisherlab.tiny import tiny_adapter_model

    torch.manual_seed(seed)
    model = tiny_adapter_model("bert", head=task.head, num_labels=task.num_labels, vocab=len(tokenizer),
                               max_positions=tokenizer.model_max_length, seed=seed, task_module=None)
    columns = [c for c in ("input_ids", "token_type_ids", "attention_mask") if c in data.column_names]
    rows = data[0:8]
    batch = pad_features(rows, columns, tokenizer)
    targets = ["start_positions", "end_positions"] if task.head == "qa" else ["labels"]
    for name in targets:
        batch[name] = torch.tensor(rows[name])
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses
