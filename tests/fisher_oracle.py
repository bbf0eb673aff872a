"""Float64 brute-force oracles for the Fisher-trace estimators (test helpers, no fast paths).

Everything here is the definition written as loops: one ``torch.autograd.grad`` per
example (and per class and per row for the exact expectation) on the block parameters
directly, on a model the caller converted to float64. The expectation over classes
uses ``sum_c p_c ||grad log p(c)||^2`` -- the definition of the Fisher -- not the
square-root factor the estimator uses, so the two are independent computations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from fisherlab.fisher.outputs import OutputKind
from fisherlab.torch_utils import model_inputs


def block_parameters(model: torch.nn.Module, blocks: Mapping, names: Sequence[str] | None = None
                     ) -> dict[str, list[torch.nn.Parameter]]:
    """``{block: [parameters]}`` by name from ``named_parameters`` (no BlockMap helpers used)."""
    params = dict(model.named_parameters())
    names = list(blocks) if names is None else list(names)
    return {name: [params[p] for p in blocks[name].param_names] for name in names}


def _sq_norms(scalar: torch.Tensor, per_block: dict[str, list[torch.nn.Parameter]]) -> dict[str, float]:
    flat = [p for ps in per_block.values() for p in ps]
    grads = torch.autograd.grad(scalar, flat, retain_graph=True, allow_unused=True)
    out, i = {}, 0
    for name, ps in per_block.items():
        total = 0.0
        for g in grads[i:i + len(ps)]:
            if g is not None:
                total += float(g.double().pow(2).sum())
        out[name] = total
        i += len(ps)
    return out


class _GradsOn:
    """Temporarily make every block parameter require grad (oracle models are throwaway copies)."""

    def __init__(self, per_block):
        self.params = [p for ps in per_block.values() for p in ps]

    def __enter__(self):
        self.flags = [p.requires_grad for p in self.params]
        for p in self.params:
            p.requires_grad_(True)

    def __exit__(self, *exc):
        for p, flag in zip(self.params, self.flags, strict=True):
            p.requires_grad_(flag)


def per_example_sq_norms(model, batch, kind: OutputKind, blocks, labels, names=None) -> list[dict[str, float]]:
    """Per example ``i``: ``||grad_block log p(labels_i | x_i)||^2`` (log p summed over factors/rows)."""
    per_block = block_parameters(model, blocks, names)
    with _GradsOn(per_block), torch.enable_grad():
        out = model(**model_inputs(batch))
        logp = kind.log_prob(out, batch, labels)
        return [_sq_norms(logp[i], per_block) for i in range(logp.shape[0])]


def exact_per_example(model, batch, kind: OutputKind, blocks, names=None) -> list[dict[str, float]]:
    """Per example: ``sum_rows sum_c p_c ||grad_block log p_row(c)||^2`` (rows are independent)."""
    per_block = block_parameters(model, blocks, names)
    with _GradsOn(per_block), torch.enable_grad():
        out = model(**model_inputs(batch))
        size = kind.batch_size(out)
        result = [dict.fromkeys(per_block, 0.0) for _ in range(size)]
        for factor in kind.factors(out, batch):
            logp = torch.log_softmax(factor.logits, dim=-1)
            probs = logp.detach().exp()
            for row in range(logp.shape[0]):
                example = int(factor.example[row])
                for c in range(logp.shape[1]):
                    if float(probs[row, c]) == 0.0:
                        continue
                    norms = _sq_norms(logp[row, c], per_block)
                    for name, value in norms.items():
                        result[example][name] += float(probs[row, c]) * value
        return result


def batch_sq_norm(model, batch, kind: OutputKind, blocks, labels, names=None, mean: bool = False
                  ) -> dict[str, float]:
    """``||grad_block sum_i log p(labels_i|x_i)||^2`` (or of the mean over examples when ``mean``)."""
    per_block = block_parameters(model, blocks, names)
    with _GradsOn(per_block), torch.enable_grad():
        out = model(**model_inputs(batch))
        logp = kind.log_prob(out, batch, labels)
        return _sq_norms(logp.mean() if mean else logp.sum(), per_block)


def labels_for(model, batch, kind: OutputKind, how: str, generator: torch.Generator | None = None):
    """The labels an estimator uses: ``"sample"`` (from ``generator``), ``"argmax"`` or ``"data"``."""
    with torch.no_grad():
        out = model(**model_inputs(batch))
    if how == "sample":
        return kind.sample(out, batch, generator)
    if how == "argmax":
        return kind.argmax(out, batch)
    return kind.data_labels(out, batch)


def mean_over_examples(rows: list[dict[str, float]]) -> dict[str, float]:
    return {name: sum(r[name] for r in rows) / len(rows) for name in rows[0]}
