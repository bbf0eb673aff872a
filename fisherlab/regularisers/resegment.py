"""Multi-view subword regularisation: the same words with a sampled tokenizer segmentation.

:class:`_Segmenter` samples a segmentation of one pre-token string over a fast tokenizer's
vocabulary (WordPiece dropout; Unigram forward-filtering/backward-sampling);
:class:`Resegment` is the consistency view built on it (see its docstring).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fisherlab.regularisers.base import RegulariserError, batch_size
from fisherlab.regularisers.views import View, ViewRows
from fisherlab.torch_utils import step_seed


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
        size = batch_size(batch)
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


__all__ = ["Resegment"]
