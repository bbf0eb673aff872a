"""Sanity-check a checkpoint's Fisher traces: the library side of ``fisherlab fisher``.

Builds a tiny model (``fisherlab.tiny``) or loads one (``AutoAdapterModel`` with an
adapter chosen by name or loaded from a directory; a plain ``AutoModelFor*``
checkpoint is loaded through ``AutoAdapterModel`` too, its head converted), makes
batches (random token ids, or ``--data`` JSONL text tokenised by the model's
tokenizer) and measures tr(F) per block with :func:`trace_fisher`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fisherlab._jsonl import iter_json_objects
from fisherlab.blocks import BlockMap, BlockMapError
from fisherlab.fisher.estimators import FisherMeasurement, trace_fisher
from fisherlab.fisher.outputs import FisherError, OutputKind, infer_output


@dataclass
class LoadedModel:
    model: torch.nn.Module
    blocks: BlockMap
    output: OutputKind
    source: str
    tokenizer_source: str | None = None  # where the tokenizer for --data comes from


def build_tiny(arch: str = "bert", layers: int = 2, task_module: str | None = "seq_bn",
               head: str = "classification", seed: int = 0) -> LoadedModel:
    """A tiny built-in adapters model (random weights) and its blocks."""
    from fisherlab.tiny import tiny_adapter_model

    try:
        model = tiny_adapter_model(arch, task_module=task_module, head=head, num_layers=layers, seed=seed)
    except ValueError as err:
        raise FisherError(str(err)) from err
    adapter = "task" if task_module is not None else None
    blocks = BlockMap.from_model(model, adapter=adapter)
    return LoadedModel(model.eval(), blocks, infer_output(model), f"tiny {arch} ({layers} layers, "
                       f"{task_module or 'full'}, {head})")


def _load_named_adapter(model: Any, adapter: str, what: str) -> str:
    """``adapter`` as a name in the model, or load it from a saved adapter directory."""
    if Path(adapter).is_dir():
        try:
            return model.load_adapter(adapter)
        except (OSError, ValueError, KeyError) as err:
            raise FisherError(f"cannot load {what} from {adapter!r}: {err}") from err
    return adapter


def load_checkpoint(path_or_name: str, adapter: str | None = None, lang_adapter: str | None = None) -> LoadedModel:
    """Load ``path_or_name`` with ``AutoAdapterModel``; activate ``adapter`` (a name in the
    checkpoint or a directory saved with ``save_adapter``), stacked after ``lang_adapter`` when
    given (MAD-X), and the head named like the adapter if there is one."""
    from adapters import AutoAdapterModel
    from adapters.composition import Stack

    looks_local = path_or_name.startswith((".", "/", "~")) or Path(path_or_name).exists()
    if looks_local and not Path(path_or_name).expanduser().is_dir():
        raise FisherError(f"--model {path_or_name!r}: no such directory")
    try:
        model = AutoAdapterModel.from_pretrained(path_or_name)
    except (OSError, ValueError, KeyError) as err:
        raise FisherError(f"cannot load a model from {path_or_name!r}: {err}") from err
    if adapter is not None:
        adapter = _load_named_adapter(model, adapter, "an adapter")
    if lang_adapter is not None:
        lang_adapter = _load_named_adapter(model, lang_adapter, "a language adapter")
    known = sorted(getattr(model.adapters_config, "adapters", {}))
    if adapter is None and lang_adapter is None and len(known) == 1:
        adapter = known[0]
    elif adapter is None and known:
        raise FisherError(f"{path_or_name!r} has adapters {known}; pass --adapter NAME to choose the task module")
    for name in (lang_adapter, adapter):
        if name is not None and name not in known:
            listed = ", ".join(known) if known else "none"
            raise FisherError(f"no adapter named {name!r} in {path_or_name!r}; its adapters are: {listed}")
    if adapter is not None:
        model.set_active_adapters(Stack(lang_adapter, adapter) if lang_adapter else adapter)
        if adapter in model.heads:
            model.active_head = adapter
    try:
        blocks = BlockMap.from_model(model, adapter=adapter)
    except BlockMapError as err:
        raise FisherError(str(err)) from err
    return LoadedModel(model.eval(), blocks, infer_output(model), str(path_or_name), str(path_or_name))


def _head_config(model: torch.nn.Module) -> dict[str, Any]:
    heads = getattr(model, "heads", None)
    active = getattr(model, "active_head", None)
    if heads is not None and isinstance(active, str) and active in heads:
        return dict(heads[active].config)
    return {}


def random_batches(model: torch.nn.Module, output: OutputKind, n_batches: int, batch_size: int,
                   seq_len: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Random token batches the model accepts, with ragged padding and random data labels."""
    if n_batches < 1 or batch_size < 1 or seq_len < 2:
        raise FisherError(f"need batches >= 1, batch size >= 1, seq len >= 2; got {n_batches}, {batch_size}, {seq_len}")
    config = model.config
    vocab = int(config.vocab_size)
    max_len = int(getattr(config, "max_position_embeddings", seq_len + 2)) - 2
    seq_len = max(2, min(seq_len, max_len))
    pad = int(getattr(config, "pad_token_id", 0) or 0)
    low = min(1000, vocab // 4) if vocab > 8 else 0
    head = _head_config(model)
    try:
        config_labels = int(config.num_labels)
    except (TypeError, ValueError, AttributeError):  # e.g. id2label None on MLM configs
        config_labels = 2
    num_labels = int(head.get("num_labels") or config_labels or 2)
    num_choices = int(head.get("num_choices", 2) or 2)
    gen = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n_batches):
        shape = (batch_size, num_choices, seq_len) if output.name == "multiple_choice" else (batch_size, seq_len)
        ids = torch.randint(low, vocab, shape, generator=gen)
        lengths = torch.randint(max(2, seq_len // 2), seq_len + 1, shape[:-1], generator=gen)
        mask = (torch.arange(seq_len).expand(shape) < lengths.unsqueeze(-1)).long()
        batch = {"input_ids": ids.masked_fill(mask == 0, pad), "attention_mask": mask}
        if output.name == "classification":
            batch["labels"] = torch.randint(0, num_labels, (batch_size,), generator=gen)
        elif output.name == "multiple_choice":
            batch["labels"] = torch.randint(0, num_choices, (batch_size,), generator=gen)
        elif output.name == "qa":
            start = (torch.rand(batch_size, generator=gen) * mask.sum(-1)).long()
            batch["start_positions"], batch["end_positions"] = start, start
        elif output.name == "mlm":  # ~15% of the real tokens are scored (at least the first), labels = ids
            chosen = (torch.rand(shape, generator=gen) < 0.15) & (mask == 1)
            chosen[:, 0] = True
            batch["labels"] = batch["input_ids"].masked_fill(~chosen, -100)
        else:
            labels = torch.randint(0, num_labels, shape, generator=gen)
            batch["labels"] = labels.masked_fill(mask == 0, -100)
        batches.append(batch)
    return batches


def load_tokenizer(source: str | None) -> Any:
    """The tokenizer saved with a checkpoint (a clear error when there is none)."""
    if source is None:
        raise FisherError("--data needs a tokenizer: give --model with a checkpoint that has one")
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(source)
    except Exception as err:  # noqa: BLE001 - any failure means "no usable tokenizer here"
        raise FisherError(f"--data needs the tokenizer of {source!r}, which cannot be loaded: "
                          f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}") from err


def jsonl_batches(path: str | Path, tokenizer: Any, output: OutputKind, n_batches: int, batch_size: int,
                  seq_len: int, text_fields: list[str] | None = None, label_field: str = "label"
                  ) -> list[dict[str, torch.Tensor]]:
    """Batches from a JSONL file of text rows (one or two text fields; an integer label if present)."""
    path = Path(path)
    if output.name not in ("classification", "tagging", "mlm", "qa"):
        raise FisherError(f"--data {path}: text rows cannot be made into {output.name!r} inputs here; "
                          "use random batches")
    rows = []
    try:
        for number, row in iter_json_objects(path, lambda n, what: FisherError(f"--data {path}: line {n} {what}")):
            rows.append((number, row))
            if len(rows) >= n_batches * batch_size:
                break
    except OSError as err:
        raise FisherError(f"--data {path}: cannot read the file ({err})") from err
    if not rows:
        raise FisherError(f"--data {path}: no rows")
    fields = text_fields or (["text"] if "text" in rows[0][1] else
                             [k for k, v in rows[0][1].items() if isinstance(v, str)][:2])
    if not fields or len(fields) > 2:
        raise FisherError(f"--data {path}: need one or two text fields (--text-field); row 1 has {sorted(rows[0][1])}")
    for number, row in rows:
        missing = [f for f in fields if not isinstance(row.get(f), str)]
        if missing:
            raise FisherError(f"--data {path}: line {number} has no text field(s) {missing}")
    batches = []
    for start in range(0, len(rows), batch_size):
        chunk = [row for _, row in rows[start:start + batch_size]]
        texts = [[row[f] for row in chunk] for f in fields]
        batch = dict(tokenizer(*texts, padding=True, truncation=True, max_length=seq_len, return_tensors="pt"))
        labels = [row.get(label_field) for row in chunk]
        if output.name == "classification" and all(isinstance(y, int) for y in labels):
            batch["labels"] = torch.tensor(labels)
        batches.append(batch)
    return batches


def measure(loaded: LoadedModel, batches: list[dict[str, torch.Tensor]], estimator: str, seed: int,
            progress: bool = False) -> FisherMeasurement:
    return trace_fisher(loaded.model, batches, loaded.blocks, estimator=estimator, seed=seed,
                        output=loaded.output, progress=progress)


def format_table(measurement: FisherMeasurement) -> str:
    """A fixed-width table: block, layer, trace, stderr, trainable."""
    lines = [f"{'block':<12} {'layer':>5} {'trace':>12} {'stderr':>12} {'trainable':>9}"]
    for row in measurement.to_records():
        layer = "" if row["layer"] is None else str(row["layer"])
        lines.append(f"{row['block']:<12} {layer:>5} {row['trace']:>12.4e} {row['stderr']:>12.4e} "
                     f"{'yes' if row['trainable'] else 'no':>9}")
    return "\n".join(lines)


def to_json(measurement: FisherMeasurement, source: str) -> dict[str, Any]:
    """A strict-JSON document (NaN standard errors become null)."""
    records = [{k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}
               for row in measurement.to_records()]
    return {"model": source, "n_examples": measurement.n_examples, "meta": measurement.meta, "records": records}
