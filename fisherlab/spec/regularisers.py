"""Regulariser specs: kinds, aliases, keys, views, choices and defaults (torch-free).

Everything a regulariser string may say is declared here, once; the training side turns a
spec into a term object (``fisherlab.regularisers.strings.regulariser_from_spec``). Strings::

    fisher_penalty:alpha=0.01;method=finite_difference     (aliases: fisher, fpen)
    consistency:view=dropout;weight=1.0                    (alias: kl; view aliases: rdrop, r-drop)
    consistency:view=embedding_noise;eps=1e-4;dist=normal   (r3f, embedding)
    consistency:view=parameter_noise;sigma=0.01             (parameter)
    consistency:view=resegment;dropout=0.1                  (subword, mvr)
    mvr:weight=1.0;temperature=1.0                          (multi-view subword regularisation, the full objective)
    l2:weight=0.01;to=init

Several regularisers: a list, or one string with ``;`` where each new ``name:`` starts a
new spec (``l2:weight=0.1;consistency:view=dropout``). Each spec has one canonical
``label`` -- ``fisher_penalty``, ``l2``, ``consistency/<view>`` -- whatever alias was written.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from fisherlab.spec.grammar import SpecError, split_specs
from fisherlab.spec.registry import Spec, SpecRegistry

__all__ = ["CONSISTENCY_VIEWS", "DIVERGENCES", "EMBEDDING_DISTS", "L2_TARGETS", "PENALTY_METHODS",
           "REDUCTIONS", "REGULARISERS", "TASK_AT", "ConsistencySpec", "FisherPenaltySpec", "L2Spec", "MVRSpec",
           "RegulariserSpec", "RegulariserSpecError", "describe_regularisers", "note_penalty_weight", "parse_regularisers",
           "regulariser_family", "regulariser_spec"]

PENALTY_METHODS = ("finite_difference", "double_backprop")
TASK_AT = ("auto", "theta", "perturbed")
DIVERGENCES = ("sym_kl", "kl")
REDUCTIONS = ("batchmean", "rowmean")
L2_TARGETS = ("zero", "init")
EMBEDDING_DISTS = ("uniform", "normal")

#: View name -> the keys only that view takes (the other consistency keys apply to all).
CONSISTENCY_VIEWS: dict[str, tuple[str, ...]] = {
    "dropout": (),
    "embedding_noise": ("eps", "dist", "seed"),
    "parameter_noise": ("sigma", "seed"),
    "resegment": ("dropout", "alpha", "seed", "max_length"),
}
_VIEW_ALIASES = {"rdrop": "dropout", "r-drop": "dropout", "r3f": "embedding_noise", "embedding": "embedding_noise",
                 "parameter": "parameter_noise", "subword": "resegment", "mvr": "resegment"}


class RegulariserSpecError(SpecError):
    """A regulariser string is malformed (``fisherlab.fisher.penalty.RegulariserError`` on the training side)."""


@dataclass
class RegulariserSpec(Spec):
    """Base of the regulariser specs; each has a ``weight`` (the term's coefficient, for run labels)."""

    def term_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the term's constructor (``None`` = the constructor's default, left out)."""
        return {k: v for k, v in self.params().items() if v is not None}


@dataclass
class FisherPenaltySpec(RegulariserSpec):
    """``alpha * s * ||g_bar||^2`` (``fisherlab.fisher.penalty.FisherPenalty``)."""

    alpha: float = 0.01
    method: Literal["finite_difference", "double_backprop"] = "finite_difference"
    scaled: bool = True
    h: float = 1e-3
    sub_batch: int | float | None = None
    seed: int = 0
    output: str | None = None
    task_at: Literal["auto", "theta", "perturbed"] = "auto"

    @property
    def weight(self) -> float:
        return float(self.alpha)

    def note_weight(self, batch_size: int) -> float:
        """The weight on Stickland & Murray's scale (``fpen``, a weight on ``||g_bar||^2``):
        ``alpha * B`` when ``scaled`` (fisherlab penalises ``alpha * B * ||g_bar||^2``, B the
        per-device batch size), else ``alpha``."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise RegulariserSpecError(f"fisher_penalty: batch size must be a positive integer, got {batch_size!r}")
        return float(self.alpha) * (batch_size if self.scaled else 1)


@dataclass
class L2Spec(RegulariserSpec):
    """``weight * ||theta - theta_0||^2`` towards zero or the initial weights (``fisher.penalty.L2``)."""

    weight: float = 0.01
    to: Literal["zero", "init"] = "zero"


@dataclass
class ConsistencySpec(RegulariserSpec):
    """``weight * D(p_clean, p_view)`` (``fisherlab.fisher.consistency.Consistency``).

    ``view`` picks the second view; its own keys (:data:`CONSISTENCY_VIEWS`) are allowed only
    with that view, and ``None`` there takes the view's default.
    """

    view: str = field(default="", metadata={"aliases": _VIEW_ALIASES})
    weight: float = 1.0
    divergence: Literal["sym_kl", "kl"] = "sym_kl"
    stop_grad: bool = False
    reduction: Literal["batchmean", "rowmean"] = "batchmean"
    output: str | None = None
    eps: float | None = None
    dist: Literal["uniform", "normal"] | None = None
    sigma: float | None = None
    dropout: float | None = None
    alpha: float | None = None
    seed: int | None = None
    max_length: int | None = None

    def __post_init__(self) -> None:
        if self.view not in CONSISTENCY_VIEWS:
            given = f"view={self.view!r}" if self.view else "no view"
            raise RegulariserSpecError(f"consistency: {given}; consistency needs view=... with one of "
                                       f"{', '.join(CONSISTENCY_VIEWS)} (aliases: {', '.join(sorted(_VIEW_ALIASES))})")
        own = {key for keys in CONSISTENCY_VIEWS.values() for key in keys}
        wrong = [k for k in own if getattr(self, k) is not None and k not in CONSISTENCY_VIEWS[self.view]]
        if wrong:
            allowed = CONSISTENCY_VIEWS[self.view]
            raise RegulariserSpecError(
                f"consistency:view={self.view}: key(s) {sorted(wrong)} belong to other views; view {self.view!r} "
                f"takes {', '.join(allowed) if allowed else 'no keys of its own'}")

    @property
    def label(self) -> str:
        return f"{self.name}/{self.view}"

    def view_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the view's constructor."""
        return {k: getattr(self, k) for k in CONSISTENCY_VIEWS[self.view] if getattr(self, k) is not None}

    def term_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``Consistency`` besides the view."""
        own = {key for keys in CONSISTENCY_VIEWS.values() for key in keys} | {"view"}
        return {k: v for k, v in self.params().items() if v is not None and k not in own}


@dataclass
class MVRSpec(RegulariserSpec):
    """Multi-view subword regularisation (Wang et al., 2021; ``fisherlab.regularisers.mvr``):
    ``1/2 CE(det) + 1/2 CE(sampled) + weight * KL(p_det/T || p_sampled/T)``, no stop-gradient.

    ``weight`` is lambda, ``temperature`` T, ``ce_share`` the sampled view's share of the
    cross-entropy (1/2); ``dropout``/``alpha``/``seed``/``max_length`` configure the sampled
    segmentation (the ``resegment`` view's keys and defaults).
    """

    weight: float = 1.0
    temperature: float = 1.0
    ce_share: float = 0.5
    output: str | None = None
    dropout: float | None = None
    alpha: float | None = None
    seed: int | None = None
    max_length: int | None = None

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise RegulariserSpecError(f"mvr: temperature must be > 0, got {self.temperature!r}")
        if not 0.0 <= self.ce_share <= 1.0:
            raise RegulariserSpecError(f"mvr: ce_share must lie in [0, 1], got {self.ce_share!r}")

    def view_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the sampled-segmentation view (``Resegment``)."""
        return {k: getattr(self, k) for k in CONSISTENCY_VIEWS["resegment"] if getattr(self, k) is not None}

    def term_kwargs(self) -> dict[str, Any]:
        own = set(CONSISTENCY_VIEWS["resegment"])
        return {k: v for k, v in self.params().items() if v is not None and k not in own}


REGULARISERS = SpecRegistry("regulariser", RegulariserSpec, RegulariserSpecError)
REGULARISERS.register("fisher_penalty", aliases=("fisher", "fpen"))(FisherPenaltySpec)
REGULARISERS.register("consistency", aliases=("kl",))(ConsistencySpec)
REGULARISERS.register("l2")(L2Spec)
REGULARISERS.register("mvr")(MVRSpec)


def regulariser_spec(spec: str | Mapping[str, Any] | RegulariserSpec) -> RegulariserSpec:
    """One regulariser spec from its string, dict or instance (errors name key and allowed values)."""
    return REGULARISERS.parse(spec)


def parse_regularisers(specs: str | Iterable[Any] | None) -> list[RegulariserSpec]:
    """Several regulariser specs: a list (strings, dicts, specs) or one ``;``-joined string; ``[]`` for None."""
    return [regulariser_spec(item) for item in split_specs(specs, "regularisers")]


def regulariser_family(label: str) -> str | None:
    """The canonical kind of a regulariser label or alias (``consistency/dropout`` -> ``consistency``,
    ``fpen`` -> ``fisher_penalty``); None for labels of no registered kind (e.g. ``none``)."""
    head = str(label).strip().split("/", 1)[0].split(":", 1)[0]
    return REGULARISERS.canonical(head)


def note_penalty_weight(specs: Iterable[RegulariserSpec], batch_size: int) -> float | None:
    """``fpen`` of a run: the single Fisher penalty's weight on the note's scale
    (:meth:`FisherPenaltySpec.note_weight`); None without exactly one Fisher penalty."""
    penalties = [s for s in specs if isinstance(s, FisherPenaltySpec)]
    return penalties[0].note_weight(batch_size) if len(penalties) == 1 else None


def describe_regularisers(specs: Iterable[RegulariserSpec]) -> dict[str, Any]:
    """``{"kind", "weight", "terms"}`` of a run: ``kind`` joins the labels with ``+`` (``none`` without
    terms, weight 0); ``weight`` is the single term's coefficient, else None; ``terms`` the canonical strings."""
    specs = list(specs)
    if not specs:
        return {"kind": "none", "weight": 0.0, "terms": []}
    return {"kind": "+".join(s.label for s in specs), "weight": float(specs[0].weight) if len(specs) == 1 else None,
            "terms": [s.to_string() for s in specs]}
