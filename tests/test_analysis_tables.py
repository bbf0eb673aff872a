"""Result tables (paper Table 1 / 8-10 style) on hand-made run stores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fisherlab.analysis import language_table, load_runs, result_table
from fisherlab.runs import RunWriter


def _store(root, scores, model="mbert", task="xnli", source="en"):
    for (method, seed), per_language in scores.items():
        writer = RunWriter.create(root / f"{model}-{task}-{method}-{seed}",
                                  {"method": method, "seed": seed, "model": model, "task": task})
        writer.write_results("accuracy", source, per_language)
        writer.finish()


@pytest.fixture()
def runset(tmp_path):
    _store(tmp_path, {
        ("full", 0): {"en": 84.0, "de": 70.0, "sw": 60.0, "th": 62.0},
        ("full", 1): {"en": 86.0, "de": 72.0, "sw": 62.0, "th": 58.0},
        ("ada", 0): {"en": 82.0, "de": 66.0, "sw": 50.0, "th": 57.0},
        ("ada", 1): {"en": 80.0, "de": 64.0, "sw": 52.0, "th": 55.0},
        ("ada", 2): {"en": 81.0, "de": 65.0, "sw": 51.0, "th": 56.0},
    })
    _store(tmp_path, {("ada", 0): {"en": 60.0, "it": 50.0, "ht": 52.0}}, model="xlmr", task="xcopa")
    writer = RunWriter.create(tmp_path / "crashed", {"method": "ada", "seed": 9, "model": "mbert", "task": "xnli"})
    writer.finish("failed", error="oom")  # no results: not counted
    return load_runs(tmp_path)


def test_result_table_by_hand(runset):
    table = result_table(runset, baseline="full")
    assert list(table.columns[:10]) == ["model", "task", "method", "source", "lowest", "lowest_language",
                                        "xling_avg", "xling_std", "n_seeds", "rel_to_baseline"]
    rows = table.set_index(["model", "task", "method"])
    full = rows.loc[("mbert", "xnli", "full")]
    assert full["source"] == pytest.approx(85.0)
    # per-language means over seeds: de 71, sw 61, th 60 -> lowest th (not sw, which is lower in seed 1)
    assert full["lowest_language"] == "th" and full["lowest"] == pytest.approx(60.0)
    xl = [np.mean([70, 60, 62]), np.mean([72, 62, 58])]
    assert full["xling_avg"] == pytest.approx(np.mean(xl))
    assert full["xling_std"] == pytest.approx(np.std(xl, ddof=1))
    assert full["n_seeds"] == 2 and full["rel_to_baseline"] == pytest.approx(0.0)
    ada = rows.loc[("mbert", "xnli", "ada")]
    assert ada["n_seeds"] == 3  # the failed run without results is not counted
    # the paper's "Lowest": one language per cell, the baseline's lowest (th), for every method
    assert ada["lowest_language"] == "th" and ada["lowest"] == pytest.approx(56.0)
    assert ada["lowest_std"] == pytest.approx(1.0)
    own = result_table(runset, baseline="full", lowest="own").set_index(["model", "task", "method"])
    assert own.loc[("mbert", "xnli", "ada"), "lowest_language"] == "sw"  # ada's own worst language
    assert own.loc[("mbert", "xnli", "ada"), "lowest"] == pytest.approx(51.0)
    assert own.loc[("mbert", "xnli", "full"), "lowest_language"] == "th"
    ada_avg = np.mean([np.mean([66, 50, 57]), np.mean([64, 52, 55]), np.mean([65, 51, 56])])
    assert ada["xling_avg"] == pytest.approx(ada_avg)
    assert ada["rel_to_baseline"] == pytest.approx(ada_avg - np.mean(xl))
    assert ada["rel_to_baseline_pct"] == pytest.approx(100 * (ada_avg / np.mean(xl) - 1))
    xcopa = rows.loc[("xlmr", "xcopa", "ada")]
    assert np.isnan(xcopa["rel_to_baseline"])  # no baseline in that cell
    # no baseline in that cell: no baseline-lowest language (lowest="own" gives the method's own)
    assert np.isnan(xcopa["xling_std"]) and pd.isna(xcopa["lowest_language"]) and np.isnan(xcopa["lowest"])
    assert own.loc[("xlmr", "xcopa", "ada"), "lowest_language"] == "it"
    assert xcopa["source_language"] == "en" and xcopa["metric"] == "accuracy"


def test_result_table_without_and_with_unknown_baseline(runset):
    table = result_table(runset)
    assert table["rel_to_baseline"].isna().all() and len(table) == 3
    assert set(table["lowest_language"]) == {"sw", "th", "it"}
    with pytest.raises(ValueError, match="baseline method 'nope'"):
        result_table(runset, baseline="nope")
    with pytest.raises(ValueError, match="lowest must be one of"):
        result_table(runset, baseline="full", lowest="worst")


def test_language_table(runset):
    langs = language_table(runset)
    mb = langs[(langs["model"] == "mbert") & (langs["method"] == "full")]
    assert mb["language"].tolist() == ["en", "de", "sw", "th"]
    assert mb["is_source"].tolist() == [True, False, False, False]
    assert mb.set_index("language").loc["th", "mean"] == pytest.approx(60.0)
    assert mb.set_index("language").loc["th", "std"] == pytest.approx(np.std([62, 58], ddof=1))
    assert (mb["n"] == 2).all()
