"""Per-example squared gradient norms per parameter block, from one backward pass.

For a scalar ``s = sum_i s_i`` (one term per example), ``PerExampleGradNorms`` returns
per block ``||d s_i / d theta_block||^2`` for every example ``i``. Forward hooks keep
the input and output of every module that owns a block parameter (in a side
dictionary, never on the module); one ``torch.autograd.grad`` to those outputs gives
``d s / d output``, whose rows belong to single examples; a per-type *sampler* turns
(input, output-gradient) into per-example squared norms with an einsum.

Sequences: the per-example gradient is the sum over tokens (and, for multiple
choice, over the ``g`` consecutive rows of an example) *before* squaring. For a
Linear layer with rows ``r`` of example ``b`` (inputs ``x[b, r, :]``, output
gradients ``d[b, r, :]``) the weight gradient is ``G_b = sum_r d[b, r] x[b, r]^T``:

* materialise: form ``G_b`` ([o, i]) and square it -- cost ``R * i * o`` per example;
* Gram ("ghost norm"): ``||G_b||^2 = sum_{r, r'} (x_r . x_r') (d_r . d_r')`` -- cost
  ``R^2 * (i + o)``; chosen when cheaper.

Supported out of the box: ``nn.Linear``, ``nn.LayerNorm``, ``nn.Embedding`` and the
``adapters`` LoRA module (raw ``lora_A``/``lora_B`` matmuls, dropout and scaling).
Anything else owning block parameters (an unregistered module type, a parameter
shared by several modules, a module applied to a tensor without a per-example
batch dimension such as DeBERTa's relative-position projections) falls back to an
exact per-example loop of vector-Jacobian products from the model's outputs,
with one warning naming the reason. Register more types with ``register_sampler``.

Safety checks, so that a fast path never returns a silently wrong number:

* every autograd use of a sampled parameter in the scalar's graph must lie inside a
  recorded call of its module (found by walking the graph); other uses (DeBERTa reads
  ``rel_embeddings.weight`` directly, DoRA reads ``m.weight``) send it to the loop;
* a call whose leading dimension is neither the batch size nor the number of sequences
  the model received (or whose input is a Parameter) is not per-example: loop;
* inputs/outputs modified in place after the hook ran raise an error. (Reentrant
  gradient checkpointing is refused by torch itself; non-reentrant checkpointing works.)

Limits: examples must not interact in the forward (no batch norm); a batch-shared
tensor whose leading dimension happens to equal the batch size and that is not a
Parameter itself cannot be told apart from a per-example one.

Layout (as Opacus ``grad_sample/`` and BackPACK lay theirs out): :mod:`.registry`
(:func:`register_sampler`, :class:`Sampler`, :class:`Call`), :mod:`.kernels` (einsum
kernels), one module per layer type (:mod:`.linear`, :mod:`.norm`, :mod:`.embedding`,
:mod:`.lora`), :mod:`.graph` (module/autograd walks) and :mod:`.engine`
(:class:`PerExampleGradNorms`).
"""

from __future__ import annotations

from fisherlab.fisher.persample.embedding import embedding_sampler, register_embedding_sampler
from fisherlab.fisher.persample.engine import METHODS, PerExampleGradNorms
from fisherlab.fisher.persample.kernels import linear_sq_norms
from fisherlab.fisher.persample.linear import linear_sampler, register_linear_sampler
from fisherlab.fisher.persample.norm import layer_norm_sampler, register_norm_sampler
from fisherlab.fisher.persample.registry import (
    Call,
    FallbackWarning,
    Sampler,
    register_sampler,
    sampler_for,
)

__all__ = [
    "METHODS", "Call", "FallbackWarning", "PerExampleGradNorms", "Sampler", "embedding_sampler",
    "layer_norm_sampler", "linear_sampler", "linear_sq_norms", "register_embedding_sampler",
    "register_linear_sampler", "register_norm_sampler", "register_sampler", "sampler_for",
]
