"""Predictive distributions of task heads, as lists of independent categoricals.

The Fisher of a model is ``E_x E_{y ~ p(y|x)} g g^T`` with ``g = grad log p(y|x)``.
Every head this project uses predicts a product of independent categorical
"factors" (rows), so one small abstraction serves every estimator:

* sequence classification: one row per example over ``C`` labels;
* multiple choice: one row per example over the ``n_choices`` choices;
* extractive QA: two factors, ``start`` and ``end``, one row per example each,
  over the non-padding positions (``log p = log p_start + log p_end``);
* token classification and masked LM: one row per non-ignored token
  (``labels != -100`` when labels are present, else ``attention_mask == 1``);
  a sequence's log-probability is the sum over its rows.

For a row with probabilities ``p`` and logits ``z``, ``Cov[grad_z log p(y)] =
diag(p) - p p^T``. ``sqrt_covariance`` returns ``S`` ``[N, C, C-1]`` with
``S S^T = diag(p) - p p^T``: ``S = diag(sqrt p) Q`` where ``Q`` holds the ``C-1``
orthonormal columns of the Householder reflection that maps ``sqrt p`` to the
basis vector of the most probable class (so ``Q`` spans ``sqrt(p)``'s complement,
and ``(I - p 1^T) diag(sqrt p) Q = diag(sqrt p) Q``). The exact estimator
back-propagates each column of ``S`` once.

Labels are sampled by inverse-CDF in float64 with uniforms drawn from a
caller-owned ``torch.Generator`` (exactly one uniform per row), so a float32 and
a float64 copy of a model draw the same labels from the same seed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from fisherlab.errors import FisherlabError

IGNORE_INDEX = -100


class FisherError(FisherlabError, ValueError):
    """A Fisher measurement cannot be made from these inputs (the message says why)."""


@dataclass
class Categorical:
    """One factor of a predictive distribution: ``N`` independent rows over ``C`` classes."""

    name: str  # "label" | "choice" | "start" | "end" | "token"
    logits: Tensor  # [N, C]; invalid classes already -inf
    example: Tensor  # [N] long: the example (0..B-1) each row belongs to


def _get(outputs: Any, key: str) -> Tensor | None:
    if isinstance(outputs, Mapping):
        return outputs.get(key)
    return getattr(outputs, key, None)


def _logits(outputs: Any, key: str = "logits", kind: str = "") -> Tensor:
    value = _get(outputs, key)
    if not isinstance(value, Tensor):
        have = list(outputs.keys()) if isinstance(outputs, Mapping) else type(outputs).__name__
        raise FisherError(f"output {kind!r}: the model's outputs have no {key!r} tensor (got {have}); "
                          "a Fisher measurement needs the head's logits")
    if torch.isnan(value).any() or torch.isposinf(value).any():
        raise FisherError(f"output {kind!r}: the model's {key!r} contain NaN or +inf; "
                          "cannot form a predictive distribution")
    return value


def _mask(batch: Mapping[str, Tensor] | None, shape: torch.Size, device: torch.device) -> Tensor:
    """``attention_mask == 1`` of shape ``shape`` (all True when the batch has no mask)."""
    mask = None if batch is None else batch.get("attention_mask")
    if mask is None:
        return torch.ones(shape, dtype=torch.bool, device=device)
    mask = mask.to(device=device)
    if tuple(mask.shape) != tuple(shape):
        raise FisherError(f"batch field 'attention_mask' has shape {tuple(mask.shape)}; "
                          f"expected {tuple(shape)} to match the logits")
    return mask != 0


def _require(batch: Mapping[str, Tensor] | None, *keys: str, kind: str) -> Tensor:
    for key in keys:
        if batch is not None and batch.get(key) is not None:
            return batch[key]
    raise FisherError(f"output {kind!r}: data labels need batch field {' or '.join(map(repr, keys))}, "
                      f"which is missing (batch has {sorted(batch) if batch is not None else None})")


class OutputKind:
    """A head's predictive distribution (see module docstring). Stateless."""

    name: str = ""

    # -- subclasses implement these two ---------------------------------------------------
    def factors(self, outputs: Any, batch: Mapping[str, Tensor] | None = None) -> list[Categorical]:
        raise NotImplementedError

    def data_labels(self, outputs: Any, batch: Mapping[str, Tensor] | None) -> list[Tensor]:
        raise NotImplementedError

    # -- shared --------------------------------------------------------------------------
    def batch_size(self, outputs: Any) -> int:
        """Number of examples ``B`` in the batch these outputs came from."""
        return int(_logits(outputs, kind=self.name).shape[0])

    def sample(self, outputs: Any, batch: Mapping[str, Tensor] | None,
               generator: torch.Generator) -> list[Tensor]:
        """One label per row of each factor, drawn from the model's distribution."""
        labels = []
        for factor in self.factors(outputs, batch):
            probs = torch.softmax(factor.logits.detach().double(), dim=-1)
            n = probs.shape[0]
            u = torch.rand(n, generator=generator, dtype=torch.float64, device=generator.device)
            u = u.to(probs.device).unsqueeze(-1)
            cdf = probs.cumsum(-1)
            # Guard against cdf[-1] < 1 by rounding: never pick past the last valid class.
            index = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(-1)
            last_valid = (probs > 0).long().cumsum(-1).argmax(-1)
            labels.append(torch.minimum(index, last_valid))
        return labels

    def argmax(self, outputs: Any, batch: Mapping[str, Tensor] | None = None) -> list[Tensor]:
        """The most probable class of every row (the labels of the FUN paper's released code)."""
        return [factor.logits.detach().argmax(-1) for factor in self.factors(outputs, batch)]

    def log_prob(self, outputs: Any, batch: Mapping[str, Tensor] | None, labels: list[Tensor]) -> Tensor:
        """``[B]``: per example, the sum over factors and rows of ``log p(label)``."""
        factors = self.factors(outputs, batch)
        if len(labels) != len(factors):
            raise FisherError(f"output {self.name!r}: got {len(labels)} label tensors for {len(factors)} factors "
                              f"({[f.name for f in factors]})")
        size = self.batch_size(outputs)
        total = None
        for factor, label in zip(factors, labels, strict=True):
            label = label.to(factor.logits.device).long()
            if label.shape != factor.example.shape:
                raise FisherError(f"output {self.name!r}: labels for factor {factor.name!r} have shape "
                                  f"{tuple(label.shape)}; expected {tuple(factor.example.shape)}")
            n_classes = factor.logits.shape[-1]
            if label.numel() and (label.min() < 0 or label.max() >= n_classes):
                raise FisherError(f"output {self.name!r}: labels for factor {factor.name!r} must lie in "
                                  f"[0, {n_classes}); got range [{int(label.min())}, {int(label.max())}]")
            logp = torch.log_softmax(factor.logits, dim=-1).gather(-1, label.unsqueeze(-1)).squeeze(-1)
            if torch.isneginf(logp).any():
                raise FisherError(f"output {self.name!r}: a label of factor {factor.name!r} points at an "
                                  "invalid class (e.g. a padding position): its probability is 0")
            per_example = logp.new_zeros(size).index_add(0, factor.example.to(logp.device), logp)
            total = per_example if total is None else total + per_example
        assert total is not None
        return total

    def sqrt_covariance(self, factor: Categorical) -> Tensor:
        """``S`` ``[N, C, C-1]`` with ``S S^T = diag(p) - p p^T`` per row (float64 maths, logits dtype)."""
        probs = torch.softmax(factor.logits.detach().double(), dim=-1)
        n, c = probs.shape
        q = probs.sqrt()  # unit vectors
        top = probs.argmax(-1)
        e = torch.nn.functional.one_hot(top, c).double()
        v = q - e
        norm2 = (v * v).sum(-1, keepdim=True).clamp_min(1e-300)
        # Householder H = I - 2 v v^T / |v|^2 maps q to e_top; its other columns span q's complement.
        eye = torch.eye(c, dtype=torch.float64, device=probs.device).expand(n, c, c)
        house = eye - 2.0 * v.unsqueeze(-1) * v.unsqueeze(-2) / norm2.unsqueeze(-1)
        keep = torch.ones(n, c, dtype=torch.bool, device=probs.device)
        keep[torch.arange(n, device=probs.device), top] = False
        basis = house.transpose(-1, -2)[keep].view(n, c - 1, c).transpose(-1, -2)  # [N, C, C-1]
        return (q.unsqueeze(-1) * basis).to(factor.logits.dtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class SequenceClassification(OutputKind):
    name = "classification"

    def factors(self, outputs, batch=None):
        logits = _logits(outputs, kind=self.name)
        if logits.dim() != 2 or logits.shape[-1] < 2:
            raise FisherError(f"output 'classification': logits have shape {tuple(logits.shape)}; "
                              "expected [batch, num_labels >= 2] (regression heads have no categorical Fisher)")
        return [Categorical("label", logits, torch.arange(logits.shape[0], device=logits.device))]

    def data_labels(self, outputs, batch):
        return [_require(batch, "labels", "label", kind=self.name).reshape(-1).long()]


class MultipleChoice(SequenceClassification):
    name = "multiple_choice"

    def factors(self, outputs, batch=None):
        logits = _logits(outputs, kind=self.name)
        if logits.dim() != 2:
            raise FisherError(f"output 'multiple_choice': logits have shape {tuple(logits.shape)}; "
                              "expected [batch, n_choices]")
        return [Categorical("choice", logits, torch.arange(logits.shape[0], device=logits.device))]


class ExtractiveQA(OutputKind):
    name = "qa"

    def factors(self, outputs, batch=None):
        result = []
        for key, factor_name in (("start_logits", "start"), ("end_logits", "end")):
            logits = _logits(outputs, key, kind=self.name)
            if logits.dim() != 2:
                raise FisherError(f"output 'qa': {key} have shape {tuple(logits.shape)}; expected [batch, seq_len]")
            valid = _mask(batch, logits.shape, logits.device)
            if not valid.any(-1).all():
                raise FisherError("output 'qa': an example has no non-padding position (attention_mask all 0)")
            masked = logits.masked_fill(~valid, float("-inf"))
            result.append(Categorical(factor_name, masked, torch.arange(logits.shape[0], device=logits.device)))
        return result

    def batch_size(self, outputs):
        return int(_logits(outputs, "start_logits", kind=self.name).shape[0])

    def data_labels(self, outputs, batch):
        return [_require(batch, "start_positions", kind=self.name).reshape(-1).long(),
                _require(batch, "end_positions", kind=self.name).reshape(-1).long()]


class TokenClassification(OutputKind):
    name = "tagging"

    def _rows(self, logits: Tensor, batch) -> Tensor:
        """``[B, T]`` bool: the scored positions."""
        labels = None if batch is None else batch.get("labels")
        if labels is not None:
            if tuple(labels.shape) != tuple(logits.shape[:2]):
                raise FisherError(f"output {self.name!r}: batch field 'labels' has shape {tuple(labels.shape)}; "
                                  f"expected {tuple(logits.shape[:2])} (one label per token, -100 = ignored)")
            return labels.to(logits.device) != IGNORE_INDEX
        return _mask(batch, logits.shape[:2], logits.device)

    def factors(self, outputs, batch=None):
        logits = _logits(outputs, kind=self.name)
        if logits.dim() != 3:
            raise FisherError(f"output {self.name!r}: logits have shape {tuple(logits.shape)}; "
                              "expected [batch, seq_len, num_classes]")
        rows = self._rows(logits, batch)
        example, position = rows.nonzero(as_tuple=True)
        return [Categorical("token", logits[example, position], example)]

    def data_labels(self, outputs, batch):
        labels = _require(batch, "labels", kind=self.name)
        logits = _logits(outputs, kind=self.name)
        rows = self._rows(logits, batch)
        return [labels.to(logits.device)[rows].long()]


class MaskedLM(TokenClassification):
    name = "mlm"


OUTPUT_KINDS: dict[str, type[OutputKind]] = {
    cls.name: cls for cls in (SequenceClassification, MultipleChoice, ExtractiveQA, TokenClassification, MaskedLM)
}
# adapters' head_type values and other spellings -> our names
_ALIASES = {
    "classification": "classification", "sequence_classification": "classification",
    "multiple_choice": "multiple_choice",
    "qa": "qa", "question_answering": "qa",
    "tagging": "tagging", "token_classification": "tagging",
    "mlm": "mlm", "masked_lm": "mlm",
}
_CLASS_SUFFIXES = {
    "ForSequenceClassification": "classification",
    "ForMultipleChoice": "multiple_choice",
    "ForQuestionAnswering": "qa",
    "ForTokenClassification": "tagging",
    "ForMaskedLM": "mlm",
}
_OUTPUT_CLASSES = {
    "SequenceClassifierOutput": "classification",
    "MultipleChoiceModelOutput": "multiple_choice",
    "QuestionAnsweringModelOutput": "qa",
    "TokenClassifierOutput": "tagging",
    "MaskedLMOutput": "mlm",
}


def get_output(name: str | OutputKind) -> OutputKind:
    """The output kind called ``name`` (our names or adapters' ``head_type`` spellings)."""
    if isinstance(name, OutputKind):
        return name
    key = _ALIASES.get(str(name).lower())
    if key is None:
        raise FisherError(f"unknown output {name!r}; expected one of {sorted(OUTPUT_KINDS)} "
                          f"(or an adapters head_type: {sorted(k for k in _ALIASES if k not in OUTPUT_KINDS)})")
    return OUTPUT_KINDS[key]()


def _adapter_head_type(model: Any) -> str | None:
    heads = getattr(model, "heads", None)
    if heads is None or not hasattr(heads, "keys") or len(heads) == 0:
        return None
    active = getattr(model, "active_head", None)
    if isinstance(active, list):
        if len(active) != 1:
            raise FisherError(f"model has several active heads {active}; pass output= or activate one head")
        active = active[0]
    if active is None or active not in heads:
        raise FisherError(f"model has heads {list(heads.keys())} but no single active head (active_head="
                          f"{active!r}); activate one or pass output=")
    head_type = heads[active].config.get("head_type")
    if head_type not in _ALIASES:
        raise FisherError(f"head {active!r} has head_type {head_type!r}, which has no categorical output "
                          f"distribution here; supported: {sorted(_ALIASES)}")
    return head_type


def infer_output(model: Any, outputs: Any = None, batch: Mapping[str, Tensor] | None = None) -> OutputKind:
    """The output kind of ``model``: adapters' active head ``head_type``, else the model class
    (``*ForSequenceClassification`` ...), else the type of ``outputs``."""
    head_type = _adapter_head_type(model)
    if head_type is not None:
        return get_output(head_type)
    for cls in type(model).__mro__:
        for suffix, name in _CLASS_SUFFIXES.items():
            if cls.__name__.endswith(suffix):
                config = getattr(model, "config", None)
                problem = getattr(config, "problem_type", None)
                if name == "classification" and problem in ("regression", "multi_label_classification"):
                    raise FisherError(f"{type(model).__name__} has problem_type={problem!r}; only single-label "
                                      "classification has a categorical output here")
                return get_output(name)
    if outputs is not None:
        for cls in type(outputs).__mro__:
            if cls.__name__ in _OUTPUT_CLASSES:
                return get_output(_OUTPUT_CLASSES[cls.__name__])
        if _get(outputs, "start_logits") is not None and _get(outputs, "end_logits") is not None:
            return get_output("qa")
        if _get(outputs, "logits") is None:
            raise FisherError(f"cannot infer the output distribution: the model's outputs "
                              f"({type(outputs).__name__}) have no logits")
    raise FisherError(f"cannot infer the output distribution of {type(model).__name__}: no adapters head, "
                      f"no known *For<Task> class; pass output= one of {sorted(OUTPUT_KINDS)}")


def forward_by_name(model: Any, inputs: Mapping[str, Any], error: type[Exception] = FisherError,
                    who: str = "") -> Any:
    """``model(**inputs)``, refusing a plain tuple: the logits must be found by name."""
    outputs = model(**inputs)
    if isinstance(outputs, tuple) and not hasattr(outputs, "keys"):
        prefix = f"{who}: " if who else ""
        raise error(f"{prefix}the model returned a plain tuple; call it with return_dict=True "
                    "so the logits can be found by name")
    return outputs


__all__ = [
    "Categorical", "ExtractiveQA", "FisherError", "MaskedLM", "MultipleChoice", "OUTPUT_KINDS", "OutputKind",
    "SequenceClassification", "TokenClassification", "forward_by_name", "get_output", "infer_output",
]
