"""The paper's grouping rule, the permutation-schedule sampler and realised orders."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest

from fisherlab.analysis import (
    count_permutation_schedules,
    group_runs,
    load_runs,
    mean_unfreeze_position,
    order_agreement,
    sample_permutation_schedules,
    unfreezing_orders,
)
from fisherlab.analysis.synthetic import write_synthetic_store


def _groups(values: dict[str, float], **kwargs) -> dict[str, int]:
    frame = pd.DataFrame({"run_id": list(values), "value": list(values.values())})
    out = group_runs(frame, **kwargs)
    return dict(zip(out["run_id"], out["group"], strict=True))


def test_grouping_by_hand():
    groups = _groups({"a": 70.0, "b": 69.5, "c": 69.0, "d": 68.9, "e": 67.0, "f": 66.2})
    # 70 leads {70, 69.5, 69.0 (exactly one point)}; 68.9 leads {68.9}; 67.0 leads {67.0, 66.2}
    assert groups == {"a": 0, "b": 0, "c": 0, "d": 1, "e": 2, "f": 2}


def test_exactly_one_point_is_inclusive_despite_rounding():
    assert 64.01 - 63.01 > 1.0  # binary floating point
    assert _groups({"x": 64.01, "y": 63.01}) == {"x": 0, "y": 0}
    assert _groups({"x": 64.01, "y": 63.009}) == {"x": 0, "y": 1}
    assert _groups({"x": 64.1, "y": 63.6}, delta=0.5) == {"x": 0, "y": 0}


def test_greedy_not_chained():
    # 63.5 is within 1 of 64.4 but not of 65: it must not join the first group
    assert _groups({"a": 65.0, "b": 64.4, "c": 63.5}) == {"a": 0, "b": 0, "c": 1}


def test_ties_break_by_run_id_deterministically():
    frame = pd.DataFrame({"run_id": ["z", "b", "m", "a"], "value": [60.0, 60.0, 58.5, 58.5]})
    out = group_runs(frame)
    assert out["run_id"].tolist() == ["b", "z", "a", "m"]
    assert out["group"].tolist() == [0, 0, 1, 1]
    assert out["leader"].tolist() == ["b", "b", "a", "a"]
    shuffled = group_runs(frame.iloc[[3, 1, 0, 2]])
    pd.testing.assert_frame_equal(out, shuffled)
    assert _groups({"a": 1.0, "b": 1.0, "c": 0.5}, delta=0.0) == {"a": 0, "b": 0, "c": 1}


def test_grouping_within_cells_and_extra_columns():
    frame = pd.DataFrame({"run_id": list("abcd"), "value": [70.0, 69.2, 70.0, 60.0],
                          "task": ["x", "x", "y", "y"], "method": ["m"] * 4})
    out = group_runs(frame, by=["task"])
    assert out.set_index("run_id")["group"].to_dict() == {"a": 0, "b": 0, "c": 0, "d": 1}
    assert "method" in out.columns


def test_grouping_rejects_bad_input():
    with pytest.raises(ValueError, match="finite"):
        group_runs(pd.DataFrame({"run_id": ["a", "b"], "value": [1.0, np.nan]}))
    with pytest.raises(ValueError, match="duplicated"):
        group_runs(pd.DataFrame({"run_id": ["a", "a"], "value": [1.0, 2.0]}))
    with pytest.raises(ValueError, match="lacks"):
        group_runs(pd.DataFrame({"run_id": ["a"]}))
    with pytest.raises(ValueError, match="delta"):
        group_runs(pd.DataFrame({"run_id": ["a"], "value": [1.0]}), delta=-1)


@pytest.mark.parametrize("n_layers", [5, 12, 24])
def test_sampler_constraints_over_many_draws(n_layers):
    n = 300 if n_layers > 5 else count_permutation_schedules(n_layers)
    orders = sample_permutation_schedules(n_layers, n, seed=7)
    assert len(orders) == n
    top_down = list(range(n_layers - 1, -1, -1))
    assert len({tuple(o) for o in orders}) == n  # distinct
    for order in orders:
        assert sorted(order) == list(range(n_layers))
        assert order[0] == n_layers - 1 and order[1] in (n_layers - 2, n_layers - 3)
        assert order != top_down
        assert all(type(v) is int for v in order)
    if n_layers > 5:
        seconds = Counter(o[1] for o in orders)
        assert abs(seconds[n_layers - 2] - n / 2) < 4 * np.sqrt(n / 4)  # uniform over the two


def test_sampler_is_seeded_and_general():
    assert sample_permutation_schedules(12, 9, seed=0) == sample_permutation_schedules(12, 9, seed=0)
    assert sample_permutation_schedules(12, 9, seed=0) != sample_permutation_schedules(12, 9, seed=1)
    orders = sample_permutation_schedules(6, 20, seed=3, first=2, second_from=[0, 5])
    assert all(o[0] == 2 and o[1] in (0, 5) for o in orders)
    # 4 layers: [3, 2|1, ...] gives 2 * 2! = 4 orders, minus top-down [3, 2, 1, 0]
    assert count_permutation_schedules(4) == 3
    assert sorted(sample_permutation_schedules(4, 3, seed=0)) == [[3, 1, 0, 2], [3, 1, 2, 0], [3, 2, 0, 1]]
    assert count_permutation_schedules(2) == 0 and sample_permutation_schedules(2, 0, seed=0) == []


def test_sampler_errors():
    with pytest.raises(ValueError, match="only 3 exist"):
        sample_permutation_schedules(4, 4, seed=0)
    with pytest.raises(ValueError, match="n_layers"):
        sample_permutation_schedules(0, 1, seed=0)
    with pytest.raises(ValueError, match="second_from"):
        sample_permutation_schedules(6, 1, seed=0, second_from=[5])
    with pytest.raises(ValueError, match="first"):
        sample_permutation_schedules(6, 1, seed=0, first=6)


def test_realised_orders_and_agreement(tmp_path):
    write_synthetic_store(tmp_path, n_runs=8, methods=("gradual", "reverse", "standard", "permutation"),
                          seeds=(0, 1), n_steps=20, n_blocks=5)
    rs = load_runs(tmp_path)
    orders = unfreezing_orders(rs)
    assert list(orders.columns[:5]) == ["run_id", "method", "position", "layer", "step"]
    gradual = orders[orders["method"] == "gradual"]
    assert (gradual["position"] == 4 - gradual["layer"]).all()
    means = mean_unfreeze_position(orders)
    g = means[means["method"] == "gradual"].set_index("layer")
    assert g["mean_position"].to_dict() == {0: 4.0, 1: 3.0, 2: 2.0, 3: 1.0, 4: 0.0}
    assert (g["n"] == 2).all() and (g["std"] == 0).all()
    tau = order_agreement(orders).set_index("method")["kendall_tau"]
    assert np.allclose(tau["gradual"], 1.0) and np.allclose(tau["reverse"], -1.0)
    assert tau["standard"].isna().all()  # all layers at once: no order
    perm = order_agreement(orders)
    perm = perm[perm["method"] == "permutation"]
    assert ((perm["kendall_tau"] > -1) & (perm["kendall_tau"] < 1)).all()
