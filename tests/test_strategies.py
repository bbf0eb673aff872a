"""Unfreezing strategies and the Algorithm 1 driver, without a Trainer (fast)."""

from __future__ import annotations

import math

import pytest
import torch

from fisherlab.blocks import BlockMap
from fisherlab.unfreezing import (
    Strategy,
    StrategyError,
    UnfreezeSchedule,
    available_strategies,
    register_strategy,
    strategy_from_string,
)

N_LAYERS = 6


class Toy(torch.nn.Module):
    def __init__(self, n_layers: int = N_LAYERS) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Linear(3, 3) for _ in range(n_layers))
        self.head = torch.nn.Linear(3, 2)


def toy(n_layers: int = N_LAYERS) -> tuple[Toy, BlockMap]:
    model = Toy(n_layers)
    return model, BlockMap.from_regex(model, r"^layers\.(\d+)\.", r"^head\.")


def run_schedule(spec, k_max_steps: int, measure=None, n_layers: int = N_LAYERS):
    """Drive a schedule over steps 0..k_max_steps; returns {step: blocks} and checks flags each step."""
    model, blocks = toy(n_layers)
    schedule = UnfreezeSchedule(strategy_from_string(spec), blocks, measure=measure)
    events = {}
    for step in range(k_max_steps + 1):
        event = schedule.begin(model, 0) if step == 0 else schedule.advance(model, step)
        if event is not None:
            events[step] = event.blocks
        unfrozen = set(schedule.unfrozen)
        for name in blocks.layer_blocks:
            for p in blocks.parameters(model, name).values():
                assert p.requires_grad == (name in unfrozen), (step, name)
        assert all(p.requires_grad for p in blocks.parameters(model, "head").values())
    return events, schedule


def layer(i: int) -> str:
    return f"layer.{i}"


@pytest.mark.parametrize("k", [1, 3])
def test_gradual_is_top_down_every_k(k):
    events, _ = run_schedule(f"gradual:k={k}", k * N_LAYERS + 2 * k)
    assert events == {j * k: [layer(N_LAYERS - 1 - j)] for j in range(N_LAYERS)}


@pytest.mark.parametrize("k", [1, 3])
def test_reverse_is_bottom_up_every_k(k):
    events, _ = run_schedule(f"reverse:k={k}", k * N_LAYERS + 2 * k)
    assert events == {j * k: [layer(j)] for j in range(N_LAYERS)}


@pytest.mark.parametrize("k", [1, 3])
def test_permutation_follows_order(k):
    order = [2, 5, 0, 1, 4, 3]
    events, _ = run_schedule(f"permutation:order=2,5,0,1,4,3;k={k}", k * N_LAYERS + 2 * k)
    assert events == {j * k: [layer(order[j])] for j in range(N_LAYERS)}


@pytest.mark.parametrize("k", [1, 3])
def test_lpft_head_only_then_everything(k):
    events, _ = run_schedule(f"lpft:k={k}", k * N_LAYERS)
    assert events == {k: [layer(i) for i in range(N_LAYERS)]}


@pytest.mark.parametrize("k", [1, 3])
def test_standard_and_surgical_decide_once_at_step_zero(k):
    events, _ = run_schedule("standard", 4 * k)
    assert events == {0: [layer(i) for i in range(N_LAYERS)]}
    events, schedule = run_schedule("surgical:blocks=layer.4,1", 4 * k)
    assert events == {0: [layer(1), layer(4)]}
    assert schedule.frozen == [layer(i) for i in (0, 2, 3, 5)]


@pytest.mark.parametrize("k", [1, 3])
def test_random_draws_each_frozen_block_once_and_is_reproducible(k):
    events, _ = run_schedule(f"random:k={k};seed=3", k * N_LAYERS + k)
    assert sorted(events) == [j * k for j in range(N_LAYERS)]
    drawn = [b for blocks in events.values() for b in blocks]
    assert sorted(drawn) == sorted(layer(i) for i in range(N_LAYERS))
    again, _ = run_schedule(f"random:k={k};seed=3", k * N_LAYERS + k)
    assert again == events
    orders = {tuple(b[0] for b in run_schedule(f"random:k={k};seed={s}", k * N_LAYERS)[0].values())
              for s in range(6)}
    assert len(orders) > 1, "different seeds should give different orders"


def fake_measure(traces_by_step):
    calls = []

    def measure(model, names, step):
        calls.append((step, tuple(names)))
        return traces_by_step(step)

    return measure, calls


@pytest.mark.parametrize("k", [1, 3])
def test_fisher_picks_largest_trace_among_frozen(k):
    # fixed traces: the ranking is 2 > 0 > 5 > 3 > 1 > 4, not top-down
    fixed = {layer(i): t for i, t in enumerate([5.0, 2.0, 9.0, 3.0, 1.0, 4.0])}
    measure, calls = fake_measure(lambda step: fixed)
    events, schedule = run_schedule(f"fisher:k={k};n_batches=2;first=fisher", k * N_LAYERS + k, measure=measure)
    assert events == {j * k: [layer(i)] for j, i in enumerate([2, 0, 5, 3, 1, 4])}
    # every decision measures every layer block (frozen ones included), only at decision steps
    assert [c[0] for c in calls] == [j * k for j in range(N_LAYERS)]
    assert all(c[1] == tuple(layer(i) for i in range(N_LAYERS)) for c in calls)
    assert schedule.events[0].scores == fixed


@pytest.mark.parametrize("k", [1, 3])
def test_fisher_default_unfreezes_top_layer_first_without_measuring(k):
    """FUN as released: the top layer at step 0, tr(F) from step k on (issue 11)."""
    fixed = {layer(i): t for i, t in enumerate([5.0, 2.0, 9.0, 3.0, 1.0, 4.0])}
    measure, calls = fake_measure(lambda step: fixed)
    events, schedule = run_schedule(f"fisher:k={k};n_batches=2", k * N_LAYERS + k, measure=measure)
    # layer 5 first (top), then by trace among the frozen: 2 > 0 > 3 > 1 > 4
    assert events == {j * k: [layer(i)] for j, i in enumerate([5, 2, 0, 3, 1, 4])}
    assert [c[0] for c in calls] == [j * k for j in range(1, N_LAYERS)]
    assert schedule.events[0].scores is None and schedule.events[1].scores == fixed
    assert strategy_from_string("fisher:k=5").first == "top"


@pytest.mark.parametrize("k", [1, 4])
def test_random_default_unfreezes_top_layer_first(k):
    for seed in range(5):
        events, _ = run_schedule(f"random:k={k};seed={seed}", k * N_LAYERS, n_layers=N_LAYERS)
        assert events[0] == [layer(N_LAYERS - 1)]
        assert sorted(b[0] for b in events.values()) == [layer(i) for i in range(N_LAYERS)]
    # first=random draws at step 0 too: over seeds the first pick is not always the top layer
    firsts = {run_schedule(f"random:k={k};seed={seed};first=random", k, n_layers=N_LAYERS)[0][0][0]
              for seed in range(12)}
    assert len(firsts) > 1


@pytest.mark.parametrize("spec", ["fisher:k=2;first=random", "random:k=2;first=fisher", "fisher:k=2;first=bottom"])
def test_first_rejects_other_rules(spec):
    with pytest.raises(StrategyError, match="first must be 'top'"):
        strategy_from_string(spec)


def test_fisher_ignores_unfrozen_and_breaks_ties_upwards():
    measure, _ = fake_measure(lambda step: {layer(i): (100.0 if i == 5 else 1.0) for i in range(N_LAYERS)})
    events, _ = run_schedule("fisher:k=1;first=fisher", N_LAYERS, measure=measure)
    # layer 5 first (largest), then ties among the rest go to the highest layer
    assert [b[0] for b in events.values()] == [layer(i) for i in (5, 4, 3, 2, 1, 0)]


def test_fisher_rejects_non_finite_traces():
    measure, _ = fake_measure(lambda step: {layer(i): math.nan for i in range(N_LAYERS)})
    with pytest.raises(StrategyError, match="no finite tr"):
        run_schedule("fisher:k=1", 2, measure=measure)  # step 0: top layer; step 1 measures


def test_fisher_without_measurement_is_a_clear_error():
    model, blocks = toy()
    with pytest.raises(StrategyError, match="measure"):
        UnfreezeSchedule(strategy_from_string("fisher:k=2;first=fisher"), blocks).begin(model)


def test_nothing_assumes_twelve_layers():
    events, _ = run_schedule("gradual:k=2", 10, n_layers=3)
    assert events == {0: [layer(2)], 2: [layer(1)], 4: [layer(0)]}


def test_freezing_drops_grads():
    model, blocks = toy()
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    schedule = UnfreezeSchedule(strategy_from_string("gradual:k=1"), blocks)
    schedule.begin(model)
    for name in blocks.layer_blocks[:-1]:
        assert all(p.grad is None and not p.requires_grad for p in blocks.parameters(model, name).values())


# -- strings ---------------------------------------------------------------------------------

ROUND_TRIP = [
    "standard",
    "lpft:k=25",
    "gradual:k=800",
    "reverse:k=3",
    "permutation:order=5,4,0,1,2,3;k=50",
    "random:k=50;seed=7;first=top",
    "random:k=50;seed=7;first=random",
    "fisher:k=50;estimator=per_example;n_batches=40;seed=0;mode=eval;first=top",
    "fisher:k=100;estimator=reference;n_batches=10;seed=1;batch_size=8;mode=train;first=fisher",
    "surgical:blocks=layer.4,layer.5",
]


@pytest.mark.parametrize("spec", ROUND_TRIP)
def test_to_string_round_trips(spec):
    strategy = strategy_from_string(spec)
    assert strategy.to_string() == spec
    assert strategy_from_string(strategy.to_string()) == strategy
    assert strategy_from_string(strategy.to_dict()) == strategy


def test_short_strings_get_defaults_and_dicts_work():
    s = strategy_from_string("fisher:k=50")
    assert (s.k, s.estimator, s.n_batches) == (50, "per_example", 40)
    p = strategy_from_string({"name": "permutation", "order": [1, 0, 2], "k": 5})
    assert p.order == (1, 0, 2) and p.to_string() == "permutation:order=1,0,2;k=5"
    assert set(available_strategies()) >= {"standard", "lpft", "gradual", "reverse", "permutation",
                                           "random", "fisher", "surgical"}


@pytest.mark.parametrize("spec, match", [
    ("nonsense:k=3", "unknown unfreezing strategy 'nonsense'"),
    ("gradual:k=0", "k must be a positive integer"),
    ("gradual:k=-3", "k must be a positive integer"),
    ("gradual:k=abc", "expected an integer"),
    ("gradual:k", "not key=value"),
    ("gradual:k=3;speed=2", "unknown key 'speed'"),
    ("gradual:k=3;k=4", "given twice"),
    ("fisher:k=5;n_batches=0", "n_batches must be a positive integer"),
    ("fisher:k=5;mode=sideways", "mode must be"),
    ("permutation:k=5", "order is empty"),
    ({"k": 3}, "needs a 'name' key"),
])
def test_bad_strings_raise_clear_errors(spec, match):
    with pytest.raises(StrategyError, match=match):
        strategy_from_string(spec)


@pytest.mark.parametrize("order, match", [
    ("0,1,2,3,4", r"missing: \[5\]"),
    ("0,1,2,3,4,4", r"repeated: \[4\]"),
    ("0,1,2,3,4,5,6", r"not a layer: \[6\]"),
])
def test_permutation_must_be_a_permutation_of_the_layers(order, match):
    _, blocks = toy()
    with pytest.raises(StrategyError, match=match):
        UnfreezeSchedule(strategy_from_string(f"permutation:order={order};k=2"), blocks)


def test_surgical_unknown_block_is_rejected():
    _, blocks = toy()
    with pytest.raises(StrategyError, match="not layer blocks"):
        UnfreezeSchedule(strategy_from_string("surgical:blocks=layer.9"), blocks)


def test_register_custom_strategy(monkeypatch):
    from dataclasses import dataclass

    from fisherlab.spec.strategies import STRATEGIES

    # register into copies that are put back afterwards: the registry is process-global
    monkeypatch.setattr(STRATEGIES, "_classes", dict(STRATEGIES._classes))
    monkeypatch.setattr(STRATEGIES, "_aliases", dict(STRATEGIES._aliases))

    @register_strategy("every_other_test")
    @dataclass
    class EveryOther(Strategy):
        k: int = 1

        def select(self, state):
            return [b for b in state.frozen if state.blocks[b].layer % 2 == 0][:1]

    s = strategy_from_string("every_other_test:k=2")
    assert isinstance(s, EveryOther) and s.to_string() == "every_other_test:k=2"
    events, _ = run_schedule(s, 20)
    assert events == {0: [layer(0)], 2: [layer(2)], 4: [layer(4)]}
    with pytest.raises(StrategyError, match="already registered"):
        register_strategy("gradual")(EveryOther)


def test_state_dict_resumes_identically_and_refuses_other_strategies():
    measure, _ = fake_measure(lambda step: {layer(i): float((i * 7 + step) % 6) for i in range(N_LAYERS)})
    full, full_schedule = run_schedule("fisher:k=2", 14, measure=measure)
    model, blocks = toy()
    first = UnfreezeSchedule(strategy_from_string("fisher:k=2"), blocks, measure=measure)
    first.begin(model)
    for step in range(1, 5):
        first.advance(model, step)
    saved = first.state_dict()
    model2, blocks2 = toy()
    second = UnfreezeSchedule(strategy_from_string("fisher:k=2"), blocks2, measure=measure)
    second.load_state_dict(saved)
    second.begin(model2, 4)  # step 4 already decided: no new event
    for step in range(5, 15):
        second.advance(model2, step)
    assert [e.to_dict() for e in second.events] == [e.to_dict() for e in full_schedule.events]
    assert second.unfrozen == full_schedule.unfrozen
    other = UnfreezeSchedule(strategy_from_string("gradual:k=2"), blocks2)
    with pytest.raises(StrategyError, match="saved by strategy 'fisher"):
        other.load_state_dict(saved)
