"""The unfreezing interval ``k`` against the training budget (torch-free).

Two surprises this module prevents:

* a strategy string without ``k`` (``gradual``) silently took the class default
  (``k=800``): :func:`resolve_interval` derives ``k = max_steps // L`` instead (the last
  of ``L`` layer blocks is unfrozen at step ``k*(L-1)`` and then trains ``k`` steps) and
  returns a note to log, or raises when there is no step budget to derive it from;
* a schedule that cannot complete within ``max_steps`` (some layer blocks never unfrozen):
  :func:`schedule_shortfall` says so (``UnfreezeCallback`` warns at the start of training).
"""

from __future__ import annotations

from fisherlab.spec.grammar import format_spec, parse_spec
from fisherlab.spec.strategies import STRATEGIES, Strategy, StrategyError, strategy_from_string

__all__ = ["ONE_BLOCK_PER_DECISION", "needs_interval", "resolve_interval", "schedule_shortfall"]

ONE_BLOCK_PER_DECISION = ("gradual", "reverse", "permutation", "random", "fisher")
"""Strategies that unfreeze one layer block per decision step (``L`` decisions to complete)."""


def needs_interval(strategy: str) -> bool:
    """True when ``strategy``'s class has an interval ``k`` and the string gives none."""
    name, params = parse_spec(strategy, "strategy")
    cls = STRATEGIES.lookup(name, "strategy")
    return "k" in STRATEGIES.fields(cls) and "k" not in params


def resolve_interval(strategy: str, n_layers: int, max_steps: int | None) -> tuple[str, str | None]:
    """``strategy`` with ``k`` derived from the budget when it gives none, and a note saying so.

    ``k = max_steps // n_layers`` for the one-block-per-decision strategies; LPFT and
    strategies without a known schedule length need ``k`` (:class:`StrategyError`), as does
    a run without ``max_steps`` (a budget in epochs)."""
    if not needs_interval(strategy):
        return strategy, None
    name, params = parse_spec(strategy, "strategy")
    canonical = STRATEGIES.canonical(name) or name
    if canonical not in ONE_BLOCK_PER_DECISION:
        raise StrategyError(f"{canonical}: give the interval k (e.g. '{canonical}:k=100'); it cannot be derived")
    if not max_steps or max_steps <= 0:
        raise StrategyError(f"{canonical}: give the interval k (e.g. '{canonical}:k=100'); it is derived from "
                            "max_steps only, and this run has none")
    k = max(1, int(max_steps) // int(n_layers))
    resolved = format_spec(canonical, {**params, "k": k})
    return resolved, (f"strategy {strategy!r} gives no k: using k={k} = max_steps {max_steps} // {n_layers} layers "
                      f"({resolved!r})")


def schedule_shortfall(strategy: Strategy | str, n_layers: int, max_steps: int | None) -> str | None:
    """Why the schedule cannot complete within ``max_steps`` steps, or None when it can (or is unknown)."""
    strategy = strategy_from_string(strategy)
    if not max_steps or max_steps <= 0 or n_layers <= 0:
        return None
    needed = {"lpft": 2, "standard": 1, "surgical": 1}.get(strategy.name)
    if needed is None and strategy.name in ONE_BLOCK_PER_DECISION:
        needed = n_layers
    if needed is None:
        return None
    decisions = [s for s in range(int(max_steps)) if strategy.is_decision_step(s, n_layers)][:needed]
    if len(decisions) >= needed:
        return None
    k = getattr(strategy, "k", None)
    return (f"schedule {strategy.to_string()!r} cannot complete in max_steps={max_steps}: it needs {needed} "
            f"decision steps (k={k}, {n_layers} layers; the last at step {k * (needed - 1) if k else '?'}) but only "
            f"{len(decisions)} fall before the end, so some layer blocks are never unfrozen; lower k or train longer")
