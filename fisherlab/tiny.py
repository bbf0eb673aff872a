"""Tiny models and batches built from configs, for tests, benchmarks and smoke checks.

Nothing here touches a hub: models are made with ``AutoAdapterModel.from_config``
from a small config of the chosen architecture, so the same code paths that load
``bert-base-multilingual-cased`` run offline on two CPU cores.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

ARCHITECTURES = ("bert", "xlm-roberta", "deberta-v2")
HEAD_KINDS = ("classification", "multiple_choice", "qa", "tagging", "mlm")
TASK_MODULES = ("seq_bn", "seq_bn_inv", "double_seq_bn", "lora", None)


def tiny_config(
    arch: str = "bert",
    *,
    num_layers: int = 2,
    hidden: int = 16,
    heads: int = 2,
    intermediate: int = 32,
    vocab: int = 64,
    max_positions: int = 64,
    attn_implementation: str = "eager",
    dropout: float = 0.0,
) -> Any:
    """A small ``PretrainedConfig`` of architecture ``arch`` (bert, xlm-roberta, deberta-v2)."""
    from transformers import BertConfig, DebertaV2Config, XLMRobertaConfig

    common = dict(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=max_positions,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        pad_token_id=0,
    )
    if arch == "bert":
        config = BertConfig(**common)
    elif arch == "xlm-roberta":
        # RoBERTa positions start after the padding index.
        config = XLMRobertaConfig(**{**common, "max_position_embeddings": max_positions + 2, "pad_token_id": 1})
    elif arch == "deberta-v2":
        config = DebertaV2Config(**common, relative_attention=True, position_buckets=8, max_relative_positions=-1,
                                 pos_att_type=["p2c", "c2p"], type_vocab_size=0)
    else:
        raise ValueError(f"tiny_config: unknown arch {arch!r}; expected one of {ARCHITECTURES}")
    config._attn_implementation = attn_implementation
    return config


def tiny_adapter_model(
    arch: str = "bert",
    *,
    task: str = "task",
    task_module: str | None = "seq_bn",
    head: str = "classification",
    num_labels: int = 3,
    num_choices: int = 2,
    lang_adapters: Sequence[str] = (),
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    lora_r: int = 2,
    reduction_factor: int = 4,
    **config_kwargs: Any,
) -> torch.nn.Module:
    """An ``AutoAdapterModel`` with optional language adapters, a task module and a head.

    ``task_module`` is a bottleneck config name (``seq_bn``, ``seq_bn_inv``,
    ``double_seq_bn``), ``"lora"`` (LoRA on query and value), or ``None`` for full
    fine-tuning (no task adapter; the head is still named ``task``). The active setup
    is ``Stack(*lang_adapters[:1], task)`` and only the task module and head train.
    Parameters are random but non-trivial (adapter up-projections and LoRA B are
    re-initialised away from zero so every block has a non-zero gradient).
    """
    from adapters import (
        AutoAdapterModel,
        DoubleSeqBnConfig,
        LoRAConfig,
        SeqBnConfig,
        SeqBnInvConfig,
    )
    from adapters.composition import Stack

    if head not in HEAD_KINDS:
        raise ValueError(f"tiny_adapter_model: unknown head {head!r}; expected one of {HEAD_KINDS}")
    from fisherlab.models import add_head, quiet_train_adapter

    config = tiny_config(arch, **config_kwargs)
    # Seed the initialisation without touching the caller's global RNG stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoAdapterModel.from_config(config)
        for lang in lang_adapters:
            model.add_adapter(lang, config=SeqBnInvConfig(reduction_factor=reduction_factor))
        bottleneck = {"seq_bn": SeqBnConfig, "seq_bn_inv": SeqBnInvConfig, "double_seq_bn": DoubleSeqBnConfig}
        if task_module in bottleneck:
            model.add_adapter(task, config=bottleneck[task_module](reduction_factor=reduction_factor))
        elif task_module == "lora":
            model.add_adapter(task, config=LoRAConfig(r=lora_r, alpha=lora_r, selfattn_lora=True,
                                                      attn_matrices=["q", "v"]))
        elif task_module is not None:
            raise ValueError(f"tiny_adapter_model: unknown task_module {task_module!r}; "
                             f"expected one of {TASK_MODULES}")
        add_head(model, task, head, num_labels=num_labels, num_choices=num_choices)
    if task_module is not None:
        with quiet_train_adapter():  # train_adapter warns "none activated" before it activates
            model.train_adapter(task)
        model.active_adapters = Stack(*lang_adapters[:1], task) if lang_adapters else task
    else:
        model.active_head = task
        if lang_adapters:
            model.active_adapters = Stack(lang_adapters[0])
    # Zero-initialised up-projections / LoRA-B give zero gradients to the down side:
    # move them off zero so tests see every parameter.
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.abs().sum() == 0 and param.dim() >= 1 and ("adapter" in name or "lora" in name):
                param.copy_(torch.randn(param.shape, generator=gen) * 0.1)
    return model.to(dtype)


def tiny_batch(
    head: str = "classification",
    *,
    batch_size: int = 4,
    seq_len: int = 8,
    vocab: int = 64,
    num_labels: int = 3,
    num_choices: int = 2,
    padding: bool = True,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """A random batch for a tiny model: ids in [5, vocab), ragged padding, data labels.

    Padding (id 0, attention 0) is placed at the end of every other example so
    masks matter. Labels are those a real dataset would carry for ``head``.
    """
    gen = torch.Generator().manual_seed(seed)
    shape = (batch_size, num_choices, seq_len) if head == "multiple_choice" else (batch_size, seq_len)
    input_ids = torch.randint(5, vocab, shape, generator=gen)
    attention_mask = torch.ones(shape, dtype=torch.long)
    if padding:
        lengths = torch.randint(max(2, seq_len // 2), seq_len + 1, shape[:-1], generator=gen)
        lengths.view(-1)[0] = seq_len
        positions = torch.arange(seq_len).expand(shape)
        attention_mask = (positions < lengths.unsqueeze(-1)).long()
        input_ids = input_ids.masked_fill(attention_mask == 0, 0)
    batch: dict[str, torch.Tensor] = {"input_ids": input_ids, "attention_mask": attention_mask}
    if head in ("classification",):
        batch["labels"] = torch.randint(0, num_labels, (batch_size,), generator=gen)
    elif head == "multiple_choice":
        batch["labels"] = torch.randint(0, num_choices, (batch_size,), generator=gen)
    elif head == "qa":
        lengths = attention_mask.sum(-1)
        start = (torch.rand(batch_size, generator=gen) * lengths).long()
        end = torch.minimum(start + 1, lengths - 1)
        batch["start_positions"], batch["end_positions"] = start, end
    elif head == "tagging":
        labels = torch.randint(0, num_labels, (batch_size, seq_len), generator=gen)
        batch["labels"] = labels.masked_fill(attention_mask == 0, -100)
    elif head == "mlm":
        labels = torch.full((batch_size, seq_len), -100)
        chosen = (torch.rand(batch_size, seq_len, generator=gen) < 0.3) & (attention_mask == 1)
        chosen[:, 1] = True
        labels[chosen] = input_ids[chosen]
        batch["labels"] = labels
    return batch


TOKENIZER_KINDS = ("wordpiece", "unigram")


def tiny_tokenizer(kind: str = "wordpiece", pieces: Sequence[str] = (), *, model_max_length: int = 60) -> Any:
    """A tiny ``PreTrainedTokenizerFast``: ``wordpiece`` (BERT-style: [PAD]=0, [UNK], [CLS], [SEP],
    [MASK], ``a..z``, ``##a..##z`` plus ``pieces``) or ``unigram`` (XLM-R-style SentencePiece:
    <s>=0, <pad>=1, </s>, <unk>, ``a..z``, ``▁a..▁z``, ``▁`` plus ``pieces`` at a higher score).
    Every lower-case ASCII word is encodable; other characters become the unknown token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    letters = "abcdefghijklmnopqrstuvwxyz"
    if kind == "wordpiece":
        base = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *letters, *("##" + c for c in letters)]
        vocab = {t: i for i, t in enumerate(dict.fromkeys([*base, *pieces]))}
        tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
        return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                       sep_token="[SEP]", mask_token="[MASK]", model_max_length=model_max_length)
    if kind == "unigram":
        scored = {"<s>": 0.0, "<pad>": 0.0, "</s>": 0.0, "<unk>": 0.0, "▁": -3.0}
        scored.update({c: -4.0 for c in letters})
        scored.update({"▁" + c: -4.5 for c in letters})
        scored.update({p: -2.0 for p in pieces if p not in scored})
        tok = Tokenizer(models.Unigram(list(scored.items()), unk_id=3, byte_fallback=False))
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
        return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                                       eos_token="</s>", cls_token="<s>", sep_token="</s>",
                                       model_max_length=model_max_length)
    raise ValueError(f"tiny_tokenizer: unknown kind {kind!r}; expected one of {TOKENIZER_KINDS}")
