r"""The sampler registry: which function turns a module type's recorded calls into
per-example squared gradient norms (Opacus ``grad_sample`` / BackPACK extension style).

:func:`register_sampler` (a decorator) maps exact module types to a :class:`Sampler`;
:func:`sampler_for` looks one up. A sampler gets the module, its recorded :class:`Call`\ s
(inputs, output, ``d scalar / d output``), the batch size and the method, and returns
``{local parameter name: Tensor[batch_size]}``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn


class FallbackWarning(UserWarning):
    """A block parameter is measured with the slow per-example loop."""


@dataclass
class Call:
    """One recorded forward call of a hooked module.

    ``args``/``kwargs`` are the call's inputs, ``output`` the tensor whose gradient
    the sampler needs, ``extras`` tensors captured from sub-modules during the call
    (e.g. LoRA's dropout output), ``grad`` is ``d scalar / d output`` (None: zero).
    """

    args: tuple
    kwargs: dict
    output: Tensor
    extras: dict[str, Tensor] = field(default_factory=dict)
    grad: Tensor | None = None
    versions: tuple[int, ...] = ()
    claimed: list = field(default_factory=list)   # autograd nodes consuming the module's parameters
    shared: bool = False   # an input is a Parameter: not per-example (e.g. DeBERTa's rel. embeddings)


SamplerFn = Callable[[nn.Module, Sequence[Call], int, str], dict[str, Tensor]]


def _first_tensor_output(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Tensor | None:
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    return None


@dataclass(frozen=True)
class Sampler:
    """How to get per-example squared norms for the parameters of one module type.

    ``fn(module, calls, batch_size, method) -> {local_param_name: Tensor[batch_size]}``
    (method is "auto" | "materialise" | "gram"); ``output`` picks the tensor to
    differentiate from a forward call; ``supports(module)`` returns None or the
    reason this instance cannot be handled; ``capture(module)`` names sub-modules
    whose forward outputs the sampler needs (stored in ``Call.extras``);
    ``expand_shared``: a first input with leading dimension 1 (e.g. BERT's
    ``position_ids`` [1, T]) is expanded to one row per sequence before the call, so
    the output is per-example (same values, same broadcasting downstream).
    """

    fn: SamplerFn
    output: Callable[[nn.Module, tuple, dict, Any], Tensor | None] = _first_tensor_output
    supports: Callable[[nn.Module], str | None] = staticmethod(lambda module: None)
    capture: Callable[[nn.Module], dict[str, nn.Module]] = staticmethod(lambda module: {})
    expand_shared: bool = False


_SAMPLERS: dict[type, Sampler] = {}
_WARNED: set[str] = set()


def register_sampler(
    *module_types: type,
    output: Callable[[nn.Module, tuple, dict, Any], Tensor | None] | None = None,
    supports: Callable[[nn.Module], str | None] | None = None,
    capture: Callable[[nn.Module], dict[str, nn.Module]] | None = None,
    expand_shared: bool = False,
) -> Callable[[SamplerFn], SamplerFn]:
    """Decorator registering ``fn`` as the sampler of ``module_types`` (exact types)."""

    def decorate(fn: SamplerFn) -> SamplerFn:
        kwargs: dict[str, Any] = {"expand_shared": expand_shared}
        if output is not None:
            kwargs["output"] = output
        if supports is not None:
            kwargs["supports"] = supports
        if capture is not None:
            kwargs["capture"] = capture
        for module_type in module_types:
            _SAMPLERS[module_type] = Sampler(fn, **kwargs)
        return fn

    return decorate


def sampler_for(module: nn.Module) -> Sampler | None:
    """The registered sampler of ``type(module)`` (exact type, then the MRO)."""
    sampler = _SAMPLERS.get(type(module))
    if sampler is not None:
        return sampler
    for base in type(module).__mro__[1:]:
        # Only plain re-classings of a registered type (e.g. adapters' LoRALinearTorch
        # is an nn.Linear subclass with its own forward, so the MRO is not enough in
        # general): accept a base only if the subclass does not override forward.
        if base in _SAMPLERS and type(module).forward is base.forward:
            return _SAMPLERS[base]
    return None


def warn_once(key: str, message: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message, FallbackWarning, stacklevel=3)


__all__ = ["Call", "FallbackWarning", "Sampler", "SamplerFn", "register_sampler", "sampler_for", "warn_once"]
