"""fisher:data=target -- FUN choosing the next block by the mean target-language tr(F)."""

from __future__ import annotations

import pytest
import torch

from fisherlab.blocks import BlockMap
from fisherlab.spec.methods import method_label
from fisherlab.unfreezing import StrategyError, UnfreezeSchedule, strategy_from_string

N_LAYERS = 5


class Toy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Linear(3, 3) for _ in range(N_LAYERS))
        self.head = torch.nn.Linear(3, 2)


def layer(i: int) -> str:
    return f"layer.{i}"


# source ranking: 0 > 1 > 2 > 3 > 4; per language, chosen so that the *mean* over sw, th
# ranks 3 > 1 > 4 > 0 > 2, which neither language nor the source does alone; "xx" (not chosen)
# would rank 2 first and must be ignored
SOURCE = {layer(i): 10.0 - i for i in range(N_LAYERS)}
TARGET = {
    "sw": {layer(0): 1.0, layer(1): 8.0, layer(2): 0.5, layer(3): 4.0, layer(4): 5.0},
    "th": {layer(0): 3.0, layer(1): 0.0, layer(2): 0.5, layer(3): 9.0, layer(4): 2.0},
    "xx": {layer(0): 0.0, layer(1): 0.0, layer(2): 99.0, layer(3): 0.0, layer(4): 0.0},
}
MEAN_ORDER = [3, 1, 4, 0, 2]


def run(spec: str):
    model = Toy()
    blocks = BlockMap.from_regex(model, r"^layers\.(\d+)\.", r"^head\.")
    calls = []

    def measure(model, names, step):
        return {n: SOURCE[n] for n in names}

    def measure_languages(model, languages, names, step):
        calls.append((step, tuple(languages), tuple(names)))
        return {lang: {n: TARGET[lang][n] for n in names} for lang in languages}

    schedule = UnfreezeSchedule(strategy_from_string(spec), blocks, measure=measure,
                                measure_languages=measure_languages)
    order = []
    for step in range(N_LAYERS):
        event = schedule.begin(model, 0) if step == 0 else schedule.advance(model, step)
        order.append(event.blocks[0])
    return order, schedule, calls


def test_target_variant_picks_largest_mean_target_trace():
    # first=fisher: every pick, the first included, by the traces (the default first=top fixes layer 4 first)
    order, schedule, calls = run("fisher:k=1;data=target;languages=sw,th;first=fisher")
    assert order == [layer(i) for i in MEAN_ORDER]
    assert all(c[1] == ("sw", "th") for c in calls) and len(calls) == N_LAYERS
    mean = {b: (TARGET["sw"][b] + TARGET["th"][b]) / 2 for b in SOURCE}
    assert schedule.events[0].scores == pytest.approx(mean)


def test_source_variant_unchanged_and_single_language():
    assert run("fisher:k=1;first=fisher")[0] == [layer(i) for i in range(N_LAYERS)]
    assert run("fisher:k=1;data=source;first=fisher")[0] == [layer(i) for i in range(N_LAYERS)]
    th_order = sorted(range(N_LAYERS), key=lambda i: (-TARGET["th"][layer(i)], -i))
    assert run("fisher:k=1;data=target;languages=th;first=fisher")[0] == [layer(i) for i in th_order]


def test_target_variant_string_label_and_errors():
    s = strategy_from_string("fisher:k=5;data=target;languages=sw,th")
    assert strategy_from_string(s.to_string()) == s and s.label == "fisher_target"
    assert method_label(s.to_string()) == "fisher_target" and method_label("fisher:k=5") == "fisher"
    assert "data" not in strategy_from_string("fisher:k=5;data=source").to_string()
    for bad in ("fisher:data=target", "fisher:languages=sw", "fisher:data=other;languages=sw"):
        with pytest.raises(StrategyError, match="data"):
            strategy_from_string(bad)
