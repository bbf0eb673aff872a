"""Consistency regularisers: a divergence between the model's predictions on two views.

``Consistency(view, divergence, stop_grad, weight, reduction)`` adds
``weight * D(p_clean, p_view)`` where the predictive distributions are those of
:mod:`fisherlab.fisher.outputs` (lists of categorical factors). ``D`` is computed per
factor row and summed over the rows of each example (token-level heads: over tokens),
then reduced over the batch:

* ``reduction="batchmean"``: sum over rows of an example, mean over examples;
* ``reduction="rowmean"``: mean over the rows of each factor, summed over factors
  (per-token mean for token-level heads).

Both are batch-size invariant (duplicating the batch leaves them unchanged).
``divergence="kl"`` is ``KL(p_clean || p_view)``; ``"sym_kl"`` is
``(KL(p||q) + KL(q||p)) / 2``. ``stop_grad=True`` detaches the clean distribution.

Views:

* :class:`Dropout` (R-Drop): the same inputs again; the second dropout mask differs.
* :class:`EmbeddingNoise` (R3F): ``U(-eps, eps)`` or ``N(0, eps^2)`` noise added to the
  word embeddings (the output of ``get_input_embeddings()``, before positions).
* :class:`ParameterNoise`: the model at ``theta + e``, ``e ~ N(0, sigma^2 I)`` on the
  trainable parameters; ``E_e KL = (sigma^2 / 2) tr(F) + O(sigma^3)`` (Stickland &
  Murray). The perturbed forward replays the clean forward's dropout masks.
* :class:`Resegment` (multi-view subword regularisation): the raw words re-tokenised
  with sampled segmentation. Needs ``batch["words"]`` (see its docstring).

``Dropout``, ``EmbeddingNoise`` and ``Resegment`` are *fusable*: the Trainer
integration (:mod:`fisherlab.regularise`) appends their rows to the batch and runs one
forward on ``2B`` examples, so DDP and gradient checkpointing see a single forward.
Called directly, a term runs the view's forward itself. Every random view draws from its
own generator seeded with ``step_seed(seed, step)``; only dropout uses the global RNG.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fisherlab.fisher.outputs import Categorical, OutputKind
from fisherlab.fisher.penalty import (
    RegulariserError,
    RNGSnapshot,
    batch_size_of,
    forward_outputs,
    model_inputs,
    resolve_output,
    step_seed,
    swapped_parameters,
    trainable_parameters,
    unwrap_model,
)

DIVERGENCES = ("sym_kl", "kl")
REDUCTIONS = ("batchmean", "rowmean")
TOKEN_KINDS = ("tagging", "mlm")


# --------------------------------------------------------------------------------------
# divergences
# --------------------------------------------------------------------------------------
def row_kl(p_logits: Tensor, q_logits: Tensor) -> Tensor:
    """``[N]``: ``KL(p || q)`` per row, in float32 or wider; classes with ``p = 0`` contribute 0."""
    dtype = torch.promote_types(p_logits.dtype, torch.float32)
    log_p = torch.log_softmax(p_logits.to(dtype), dim=-1)
    log_q = torch.log_softmax(q_logits.to(dtype), dim=-1)
    support = torch.isfinite(log_p)
    log_p = log_p.masked_fill(~support, 0.0)
    log_q = log_q.masked_fill(~support, 0.0)
    return (log_p.exp() * (log_p - log_q)).masked_fill(~support, 0.0).sum(-1)


def factor_divergence(clean: Sequence[Categorical], view: Sequence[Categorical], size: int, *,
                      divergence: str = "sym_kl", stop_grad: bool = False,
                      reduction: str = "batchmean") -> Tensor:
    """Reduce per-row divergences between matching factors (same rows, same ``example``)."""
    if divergence not in DIVERGENCES:
        raise RegulariserError(f"unknown divergence {divergence!r}; expected one of {DIVERGENCES}")
    if reduction not in REDUCTIONS:
        raise RegulariserError(f"unknown reduction {reduction!r}; expected one of {REDUCTIONS}")
    if len(clean) != len(view):
        raise RegulariserError(f"the views have different factors: {[f.name for f in clean]} vs "
                               f"{[f.name for f in view]}")
    total = None
    for a, b in zip(clean, view, strict=True):
        if a.logits.shape != b.logits.shape:
            raise RegulariserError(f"factor {a.name!r}: clean rows {tuple(a.logits.shape)} and view rows "
                                   f"{tuple(b.logits.shape)} do not match")
        p = a.logits.detach() if stop_grad else a.logits
        q = b.logits
        rows = row_kl(p, q) if divergence == "kl" else 0.5 * (row_kl(p, q) + row_kl(q, p))
        if reduction == "batchmean":
            value = rows.sum() / size
        else:
            value = rows.mean() if rows.numel() else rows.sum()
        total = value if total is None else total + value
    if total is None:
        raise RegulariserError("no factors to compare")
    return total


# --------------------------------------------------------------------------------------
# views
# --------------------------------------------------------------------------------------
@dataclass
class ViewRows:
    """A view's rows for a fused forward: ``batch`` (model inputs, no labels), the context
    to enter around the fused forward (given the view's row offset and the fused size), and
    anything the term needs to compare the rows (``alignment`` for token-level Resegment)."""

    batch: dict[str, Any]
    alignment: list[tuple[list[int], list[int]]] | None = None
    view: Any = None
    step: int = 0

    def context(self, model: torch.nn.Module, offset: int, total: int):
        return self.view.context(model, self, offset, total) if self.view is not None else nullcontext()


class View:
    """A second view of the batch. Subclasses set ``name`` and ``fusable``."""

    name = "view"
    fusable = True

    def rows(self, model: torch.nn.Module, batch: Mapping[str, Any], step: int) -> ViewRows:
        """The view's input rows (same number of examples as ``batch``)."""
        return ViewRows(batch=model_inputs(batch), view=self, step=step)

    def context(self, model: torch.nn.Module, rows: ViewRows, offset: int, total: int):
        return nullcontext()

    def params(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


class Dropout(View):
    """R-Drop: the same inputs through a second dropout mask."""

    name = "dropout"


class EmbeddingNoise(View):
    """R3F: noise on the word embeddings (before position embeddings are added)."""

    name = "embedding_noise"
    DISTS = ("uniform", "normal")

    def __init__(self, eps: float = 1e-5, dist: str = "uniform", seed: int = 0) -> None:
        if dist not in self.DISTS:
            raise RegulariserError(f"EmbeddingNoise: unknown dist {dist!r}; expected one of {self.DISTS}")
        if not (math.isfinite(eps) and eps >= 0):
            raise RegulariserError(f"EmbeddingNoise: eps must be a finite number >= 0; got {eps!r}")
        self.eps, self.dist, self.seed = float(eps), dist, int(seed)

    def params(self) -> dict[str, Any]:
        return {"eps": self.eps, "dist": self.dist, "seed": self.seed}

    @contextmanager
    def context(self, model: torch.nn.Module, rows: ViewRows, offset: int, total: int) -> Iterator[None]:
        embeddings = unwrap_model(model).get_input_embeddings()
        if embeddings is None:
            raise RegulariserError("EmbeddingNoise: model.get_input_embeddings() returned None")
        size = batch_size_of(rows.batch)
        state = {"generator": None}

        def hook(module: torch.nn.Module, args: Any, output: Tensor) -> Tensor:
            if output.shape[0] % total:
                raise RegulariserError(f"EmbeddingNoise: embedding output has {output.shape[0]} rows, not a "
                                       f"multiple of the {total} examples in the batch")
            per = output.shape[0] // total  # >1 for multiple choice (examples x choices)
            if state["generator"] is None:
                state["generator"] = torch.Generator(device=output.device).manual_seed(
                    step_seed(self.seed, rows.step, 1))
            shape = (size * per, *output.shape[1:])
            gen = state["generator"]
            if self.dist == "uniform":
                noise = (torch.rand(shape, generator=gen, device=output.device) * 2 - 1) * self.eps
            else:
                noise = torch.randn(shape, generator=gen, device=output.device) * self.eps
            noise = noise.to(output.dtype)
            pad_before = offset * per
            pad_after = output.shape[0] - pad_before - shape[0]
            full = torch.nn.functional.pad(noise, [0, 0] * (noise.dim() - 1) + [pad_before, pad_after])
            return output + full

        handle = embeddings.register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()


class ParameterNoise(View):
    """The model at ``theta + e`` (``e ~ N(0, sigma^2)`` on trainable parameters, own generator).
    Not fusable: runs a second forward with the perturbed parameters swapped in (bypassing
    DDP), replaying the clean forward's dropout masks. Gradients reach ``theta`` through both
    views. Incompatible with gradient checkpointing (the recomputation would see ``theta``)."""

    name = "parameter_noise"
    fusable = False

    def __init__(self, sigma: float = 1e-3, seed: int = 0) -> None:
        if not (math.isfinite(sigma) and sigma >= 0):
            raise RegulariserError(f"ParameterNoise: sigma must be a finite number >= 0; got {sigma!r}")
        self.sigma, self.seed = float(sigma), int(seed)

    def params(self) -> dict[str, Any]:
        return {"sigma": self.sigma, "seed": self.seed}

    def perturbed_outputs(self, model: torch.nn.Module, batch: Mapping[str, Any], step: int,
                          rng: RNGSnapshot | None) -> Any:
        inner = unwrap_model(model)
        if any(getattr(m, "gradient_checkpointing", False) is True for m in inner.modules()):
            raise RegulariserError("ParameterNoise cannot be used with gradient checkpointing: the "
                                   "recomputed forward would use the unperturbed parameters")
        params = trainable_parameters(inner)
        gen = torch.Generator(device="cpu").manual_seed(step_seed(self.seed, step, 2))
        shifted = {}
        for name, p in params.items():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p.device, p.dtype)
            shifted[name] = p + self.sigma * noise
        with swapped_parameters(inner, shifted), (rng.replay() if rng is not None else nullcontext()):
            return forward_outputs(inner, batch)


@dataclass
class _Segmenter:
    """Sampled segmentation of one pre-token string over a tokenizer's vocabulary."""

    kind: str  # "WordPiece" | "Unigram"
    vocab: dict[str, int]
    scores: dict[str, float]
    prefix: str
    unk: str | None
    max_piece: int

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> _Segmenter:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise RegulariserError("Resegment needs a fast tokenizer (PreTrainedTokenizerFast); got "
                                   f"{type(tokenizer).__name__}")
        model = json.loads(backend.to_str())["model"]
        specials = set(getattr(tokenizer, "all_special_tokens", [])) | set(tokenizer.get_added_vocab())
        if model["type"] == "WordPiece":
            vocab = {t: i for t, i in model["vocab"].items() if t not in specials}
            return cls("WordPiece", vocab, {}, model.get("continuing_subword_prefix", "##"),
                       model.get("unk_token"), max((len(t) for t in vocab), default=1))
        if model["type"] == "Unigram":
            pieces = model["vocab"]
            unk_id = model.get("unk_id")
            unk = pieces[unk_id][0] if unk_id is not None else None
            vocab_all = tokenizer.get_vocab()
            scores = {p: float(s) for p, s in pieces if p not in specials and p != unk}
            vocab = {p: vocab_all[p] for p in scores if p in vocab_all}
            return cls("Unigram", vocab, scores, "", unk, max((len(t) for t in vocab), default=1))
        raise RegulariserError(f"Resegment supports WordPiece (BERT-style) and Unigram (SentencePiece, "
                               f"XLM-R-style) tokenizers; this one has a {model['type']!r} model")

    def split_word(self, tokens: Sequence[str]) -> list[str]:
        """A word's deterministic tokens -> the strings to re-segment (WordPiece: one per
        pre-token, i.e. per token without the continuation prefix; Unigram: the whole word)."""
        if self.kind == "Unigram":
            return ["".join(tokens)]
        pieces: list[list[str]] = []
        for tok in tokens:
            if pieces and self.prefix and tok.startswith(self.prefix) and pieces[-1][0] != self.unk:
                pieces[-1].append(tok[len(self.prefix):])
            else:
                pieces.append([tok])
        return ["".join(p) for p in pieces]

    def _piece(self, text: str, i: int, j: int) -> str:
        return text[i:j] if (i == 0 or self.kind == "Unigram") else self.prefix + text[i:j]

    def sample(self, text: str, rng: np.random.Generator, dropout: float, alpha: float) -> list[str] | None:
        """Sampled pieces of ``text`` using only vocabulary pieces; None when none exists."""
        n = len(text)
        if self.kind == "WordPiece":
            ok = [False] * (n + 1)
            ok[n] = True
            for i in range(n - 1, -1, -1):
                ok[i] = any(ok[j] and self._piece(text, i, j) in self.vocab
                            for j in range(min(n, i + self.max_piece), i, -1))
            if not ok[0]:
                return None
            out, i = [], 0
            while i < n:
                candidates = [j for j in range(min(n, i + self.max_piece), i, -1)
                              if ok[j] and self._piece(text, i, j) in self.vocab]
                chosen = candidates[-1]
                for j in candidates[:-1]:
                    if rng.random() >= dropout:
                        chosen = j
                        break
                out.append(self._piece(text, i, chosen))
                i = chosen
            return out
        # Unigram: forward filtering, backward sampling from p(seg) ~ prod p(piece)^alpha
        fwd = np.full(n + 1, -np.inf)
        fwd[0] = 0.0
        for j in range(1, n + 1):
            for i in range(max(0, j - self.max_piece), j):
                score = self.scores.get(text[i:j])
                if score is not None and fwd[i] > -np.inf:
                    fwd[j] = np.logaddexp(fwd[j], fwd[i] + alpha * score)
        if fwd[n] == -np.inf:
            return None
        out, j = [], n
        while j > 0:
            starts, logw = [], []
            for i in range(max(0, j - self.max_piece), j):
                score = self.scores.get(text[i:j])
                if score is not None and fwd[i] > -np.inf:
                    starts.append(i)
                    logw.append(fwd[i] + alpha * score)
            w = np.exp(np.asarray(logw) - np.max(logw))
            i = starts[int(rng.choice(len(starts), p=w / w.sum()))]
            out.append(text[i:j])
            j = i
        return out[::-1]


class Resegment(View):
    """Multi-view subword regularisation: the same words with a sampled segmentation.

    The batch carries its raw text as ``batch["words"]``: a list with one entry per example,
    either a list of words (one sequence) or a pair ``(words_a, words_b)`` (sentence pairs),
    exactly as given to ``tokenizer(..., is_split_into_words=True)`` by the collator (same
    truncation; ``max_length`` here). A collator keeps them by copying the field through;
    the Trainer integration adds ``words`` to the columns the Trainer keeps.

    WordPiece tokenizers (BERT): WordPiece dropout -- greedy longest match where each
    candidate piece is skipped with probability ``dropout``, restricted to pieces after
    which the rest of the word is still segmentable, so a word the deterministic tokenizer
    encodes without UNK never becomes UNK (unencodable words stay as they are). Unigram
    tokenizers (SentencePiece, XLM-R): a segmentation sampled with probability
    proportional to ``prod p(piece)^alpha`` over the vocabulary (special tokens excluded).
    Special tokens and the word structure are kept; only each word's pieces change.
    Re-sampled every step from ``numpy.random.default_rng(step_seed(seed, step))``.
    Token-level heads compare the first sub-token of each word in both views.
    Words are re-segmented left to right while the sequence fits ``max_length`` (else the
    tokenizer's ``model_max_length`` when finite); later words keep their segmentation.
    """

    name = "resegment"

    def __init__(self, tokenizer: Any, dropout: float = 0.1, alpha: float = 0.2, seed: int = 0,
                 max_length: int | None = None) -> None:
        if tokenizer is None:
            raise RegulariserError("Resegment needs the tokenizer that made the batch (tokenizer=...)")
        if not 0 <= dropout < 1:
            raise RegulariserError(f"Resegment: dropout must lie in [0, 1); got {dropout!r}")
        if not alpha >= 0:
            raise RegulariserError(f"Resegment: alpha must be >= 0; got {alpha!r}")
        self.tokenizer, self.dropout, self.alpha, self.seed = tokenizer, float(dropout), float(alpha), int(seed)
        limit = max_length if max_length is not None else getattr(tokenizer, "model_max_length", None)
        self.max_length = int(limit) if limit is not None and limit < 1_000_000 else None
        self.segmenter = _Segmenter.from_tokenizer(tokenizer)

    def params(self) -> dict[str, Any]:
        return {"dropout": self.dropout, "alpha": self.alpha, "seed": self.seed, "max_length": self.max_length}

    def _encode(self, words: Any) -> Any:
        kwargs: dict[str, Any] = {"is_split_into_words": True, "truncation": self.max_length is not None}
        if self.max_length is not None:
            kwargs["max_length"] = self.max_length
        if isinstance(words, tuple) and len(words) == 2 and not isinstance(words[0], str):
            return self.tokenizer(list(words[0]), list(words[1]), **kwargs)
        if isinstance(words, (list, tuple)) and all(isinstance(w, str) for w in words):
            return self.tokenizer(list(words), **kwargs)
        raise RegulariserError("Resegment: each batch['words'] entry must be a list of words or a pair "
                               f"(words_a, words_b); got {type(words).__name__}")

    def resample(self, words: Any, rng: np.random.Generator) -> tuple[list[int], list[int], list[int], dict]:
        """``(clean ids, view ids, view token types, {(seq, word): (clean pos, view pos)})``."""
        enc = self._encode(words)
        ids = list(enc["input_ids"])
        types = list(enc.get("token_type_ids", [0] * len(ids)))
        word_ids, seq_ids = enc.word_ids(), enc.sequence_ids()
        tokens = self.tokenizer.convert_ids_to_tokens(ids)
        budget = (self.max_length or 10**9) - len(ids)
        out_ids: list[int] = []
        out_types: list[int] = []
        first: dict[tuple[int, int], tuple[int, int]] = {}
        i = 0
        while i < len(ids):
            key = (seq_ids[i], word_ids[i])
            if word_ids[i] is None:
                out_ids.append(ids[i])
                out_types.append(types[i])
                i += 1
                continue
            j = i
            while j < len(ids) and (seq_ids[j], word_ids[j]) == key:
                j += 1
            pieces: list[str] | None = []
            if self.segmenter.unk is not None and self.segmenter.unk in tokens[i:j]:
                pieces = None  # a word with an unknown piece keeps its deterministic tokens
            for text in self.segmenter.split_word(tokens[i:j]) if pieces is not None else ():
                sampled = None if text == self.segmenter.unk else self.segmenter.sample(
                    text, rng, self.dropout, self.alpha)
                if sampled is None:
                    pieces = None
                    break
                pieces.extend(sampled)
            new = [self.segmenter.vocab[p] for p in pieces] if pieces is not None else ids[i:j]
            if len(new) - (j - i) > budget:
                new = ids[i:j]
            budget -= len(new) - (j - i)
            first[key] = (i, len(out_ids))
            out_ids.extend(new)
            out_types.extend([types[i]] * len(new))
            i = j
        return ids, out_ids, out_types, first

    def rows(self, model: torch.nn.Module, batch: Mapping[str, Any], step: int) -> ViewRows:
        words = batch.get("words")
        size = batch_size_of(batch)
        if words is None:
            raise RegulariserError("Resegment needs the raw words: batch['words'] (one list of words, or a "
                                   "(words_a, words_b) pair, per example) -- keep them in the collator")
        if len(words) != size:
            raise RegulariserError(f"Resegment: batch['words'] has {len(words)} entries for {size} examples")
        input_ids, mask = batch["input_ids"], batch.get("attention_mask")
        if input_ids.dim() != 2:
            raise RegulariserError("Resegment supports [batch, seq_len] inputs (not multiple choice)")
        rng = np.random.default_rng(step_seed(self.seed, step, 3))
        rows, types, alignment = [], [], []
        for b in range(size):
            clean, view, view_types, first = self.resample(words[b], rng)
            row = input_ids[b].tolist()
            valid = [k for k in range(len(row)) if mask is None or int(mask[b, k]) != 0]
            start = valid[0] if valid else 0
            if row[start:start + len(clean)] != clean or len(valid) != len(clean):
                raise RegulariserError(
                    f"Resegment: batch['words'][{b}] does not tokenise to the batch's input_ids[{b}] "
                    "(tokenizer(words, is_split_into_words=True"
                    + (f", truncation=True, max_length={self.max_length}" if self.max_length else "")
                    + ")); the collator must keep the words it tokenised")
            rows.append(view)
            types.append(view_types)
            alignment.append(([start + c for c, _ in first.values()], [v for _, v in first.values()]))
        width = max(len(r) for r in rows)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        device = input_ids.device
        view_batch: dict[str, Any] = {
            "input_ids": torch.tensor([r + [pad_id] * (width - len(r)) for r in rows], device=device),
            "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device),
        }
        if "token_type_ids" in batch:
            view_batch["token_type_ids"] = torch.tensor([t + [0] * (width - len(t)) for t in types], device=device)
        return ViewRows(batch=view_batch, alignment=alignment, view=self, step=step)


# --------------------------------------------------------------------------------------
# the term
# --------------------------------------------------------------------------------------
class Consistency:
    """``weight * D(p_clean, p_view)`` (module docstring)."""

    def __init__(self, view: View, divergence: str = "sym_kl", stop_grad: bool = False, weight: float = 1.0,
                 reduction: str = "batchmean", output: str | None = None) -> None:
        if not isinstance(view, View):
            raise RegulariserError(f"Consistency: view must be a View (Dropout(), EmbeddingNoise(), "
                                   f"ParameterNoise(), Resegment(...)); got {view!r}")
        if divergence not in DIVERGENCES:
            raise RegulariserError(f"Consistency: unknown divergence {divergence!r}; expected one of {DIVERGENCES}")
        if reduction not in REDUCTIONS:
            raise RegulariserError(f"Consistency: unknown reduction {reduction!r}; expected one of {REDUCTIONS}")
        if not (math.isfinite(weight) and weight >= 0):
            raise RegulariserError(f"Consistency: weight must be a finite number >= 0; got {weight!r}")
        self.view, self.divergence, self.stop_grad = view, divergence, bool(stop_grad)
        self.weight, self.reduction, self.output = float(weight), reduction, output
        self.name = f"consistency.{view.name}"
        self.fusable = view.fusable

    def __repr__(self) -> str:
        return (f"Consistency(view={self.view!r}, divergence={self.divergence!r}, stop_grad={self.stop_grad}, "
                f"weight={self.weight}, reduction={self.reduction!r})")

    def rows(self, model: torch.nn.Module, batch: Mapping[str, Any], step: int) -> ViewRows:
        return self.view.rows(model, batch, step)

    def _view_outputs(self, model: torch.nn.Module, batch: Mapping[str, Any], step: int) -> tuple[Any, ViewRows]:
        rows = self.rows(model, batch, step)
        size = batch_size_of(rows.batch)
        with rows.context(model, 0, size):
            return forward_outputs(unwrap_model(model), rows.batch), rows

    def __call__(self, model: torch.nn.Module, batch: Mapping[str, Any], outputs: Any = None, *, step: int = 0,
                 rng: RNGSnapshot | None = None, view_outputs: Any = None, view_rows: ViewRows | None = None,
                 **_: Any) -> Tensor:
        """The weighted divergence. ``outputs``: the clean forward on ``batch`` (its own forward
        when None); ``view_outputs``/``view_rows``: the view's rows of a fused forward."""
        size = batch_size_of(batch)
        inner = unwrap_model(model)
        if isinstance(self.view, ParameterNoise):
            if outputs is None or rng is None:
                rng = RNGSnapshot(inner)
                outputs = forward_outputs(inner, batch)
            view_outputs = self.view.perturbed_outputs(model, batch, step, rng)
        elif outputs is None:
            outputs = forward_outputs(inner, batch)
        if view_outputs is None:
            view_outputs, view_rows = self._view_outputs(model, batch, step)
        kind = resolve_output(model, self.output, outputs, batch)
        if view_rows is not None and view_rows.alignment is not None:
            clean, view = self._aligned_factors(kind, outputs, view_outputs, view_rows)
        else:
            clean = kind.factors(outputs, batch)
            view = kind.factors(view_outputs, batch)
        value = factor_divergence(clean, view, size, divergence=self.divergence, stop_grad=self.stop_grad,
                                  reduction=self.reduction)
        return self.weight * value

    def _aligned_factors(self, kind: OutputKind, outputs: Any, view_outputs: Any,
                         rows: ViewRows) -> tuple[list[Categorical], list[Categorical]]:
        """Resegmented views: sentence-level heads compare as usual; token-level heads compare
        the first sub-token of each word present in both views."""
        if kind.name in ("classification", "multiple_choice"):
            return kind.factors(outputs, None), kind.factors(view_outputs, None)
        if kind.name not in TOKEN_KINDS:
            raise RegulariserError(f"Resegment cannot align output {kind.name!r} between segmentations "
                                   "(supported: classification, tagging, mlm)")
        logits, view_logits = outputs["logits"], view_outputs["logits"]
        ex, pos, vpos = [], [], []
        for b, (clean_pos, view_pos) in enumerate(rows.alignment or []):
            ex.extend([b] * len(clean_pos))
            pos.extend(clean_pos)
            vpos.extend(view_pos)
        device = logits.device
        ex_t = torch.tensor(ex, dtype=torch.long, device=device)
        return ([Categorical("token", logits[ex_t, torch.tensor(pos, device=device)], ex_t)],
                [Categorical("token", view_logits[ex_t, torch.tensor(vpos, device=device)], ex_t)])


VIEWS: dict[str, type[View]] = {cls.name: cls for cls in (Dropout, EmbeddingNoise, ParameterNoise, Resegment)}

__all__ = ["Consistency", "DIVERGENCES", "Dropout", "EmbeddingNoise", "ParameterNoise", "REDUCTIONS",
           "Resegment", "VIEWS", "View", "ViewRows", "factor_divergence", "row_kl"]
