"""Target-language input sets of the probe: equal to trace_fisher, label-free, fixed, stored."""

from __future__ import annotations

import json

import pytest
import torch
from ddp_worker import tiny_args, tiny_dataset, tiny_model
from transformers import Trainer, default_data_collator

from fisherlab.analysis import load_runs
from fisherlab.blocks import BlockMap
from fisherlab.fisher import trace_fisher
from fisherlab.fisher.probe import FisherProbe
from fisherlab.hf import FisherProbeCallback, bind_callbacks
from fisherlab.runs import RunWriter, read_run


def _with_labels(dataset, values):
    return dataset.remove_columns("labels").add_column("labels", values)


def _oracle_batches(dataset, indices, size):
    """Collate the fixed subset independently of the probe (labels dropped by hand)."""
    out = []
    for start in range(0, len(indices), size):
        batch = default_data_collator([dataset[j] for j in indices[start:start + size]])
        out.append({k: v for k, v in batch.items() if k != "labels"})
    return out


def test_language_set_equals_trace_fisher_on_the_same_inputs():
    model = tiny_model(dropout=0.1)
    blocks = BlockMap.from_model(model, adapter="task")
    target = tiny_dataset(n=24, seed=7)
    probe = FisherProbe(n_batches=3, batch_size=4, seed=3)
    probe.add_language("xx", target, default_data_collator, n_examples=10)
    indices = probe.language_sets["xx"].indices
    assert len(indices) == 10 and len(set(indices)) == 10 and set(indices) <= set(range(24))
    got = probe.measure_language(model, blocks, 6, "xx")
    assert model.training  # the probe restores the training flag
    model.eval()
    want = trace_fisher(model, _oracle_batches(target, indices, 4), blocks=blocks,
                        seed=probe.language_label_seed("xx", 6))
    assert got.n_examples == want.n_examples == 10
    for name in blocks.names:
        assert got.traces[name] == pytest.approx(want.traces[name], rel=1e-12, abs=0.0), name
    assert got.meta["language"] == "xx"


def test_labels_in_the_set_change_nothing():
    model = tiny_model()
    blocks = BlockMap.from_model(model, adapter="task")
    base = tiny_dataset(n=20, seed=4)
    variants = {"true": base, "garbage": _with_labels(base, [(7 * i) % 2 for i in range(20)][::-1]),
                "none": base.remove_columns("labels")}
    traces = {}
    for what, dataset in variants.items():
        probe = FisherProbe(n_batches=2, batch_size=4, seed=1)
        probe.add_language("yy", dataset, default_data_collator, n_examples=12)
        traces[what] = probe.measure_language(model, blocks, 2, "yy").traces
    assert traces["garbage"] == traces["true"] == traces["none"]
    assert any(v > 0 for v in traces["true"].values())


def test_subset_fixed_over_steps_and_distinct_per_language():
    data = tiny_dataset(n=40, seed=2)
    probe = FisherProbe(n_batches=2, batch_size=4, seed=0)
    probe.add_language("aa", data, default_data_collator, n_examples=8)
    probe.add_language("bb", data, default_data_collator, n_examples=8)
    first = probe.language_batches("aa")
    again = probe.language_batches("aa")
    assert all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(first, again, strict=True))
    assert probe.language_sets["aa"].indices != probe.language_sets["bb"].indices
    other_seed = FisherProbe(n_batches=2, batch_size=4, seed=1).add_language("aa", data, n_examples=8)
    assert other_seed.language_sets["aa"].indices != probe.language_sets["aa"].indices
    # a second measurement at another step uses the same examples but fresh sampled labels
    model = tiny_model()
    blocks = BlockMap.from_model(model, adapter="task")
    a, b = probe.measure_language(model, blocks, 0, "aa"), probe.measure_language(model, blocks, 5, "aa")
    assert a.n_examples == b.n_examples == 8 and a.traces != b.traces


def test_empirical_estimator_is_refused_for_unlabelled_sets():
    with pytest.raises(ValueError, match="needs data labels"):
        FisherProbe(estimator="empirical", batch_size=4).add_language("xx", tiny_dataset(n=8))
    with pytest.raises(ValueError, match="needs data labels"):
        FisherProbeCallback(estimator="empirical", languages={"xx": tiny_dataset(n=8)})
    with pytest.raises(ValueError, match="n_examples"):
        FisherProbe(batch_size=4).add_language("xx", tiny_dataset(n=8), n_examples=0)


def test_callback_rows_round_trip_through_the_run_store(tmp_path):
    model = tiny_model()
    blocks = BlockMap.from_model(model, adapter="task")
    writer = RunWriter.create(tmp_path / "run", config={})
    langs = {"sw": tiny_dataset(n=16, seed=11), "th": tiny_dataset(n=16, seed=12)}
    probe = FisherProbeCallback(every=3, n_batches=2, blocks=blocks, writer=writer, languages=langs)
    trainer = Trainer(model=model, args=tiny_args(tmp_path / "out", max_steps=6), train_dataset=tiny_dataset(),
                      callbacks=[probe])
    bind_callbacks(trainer)
    trainer.train()
    writer.finish()
    rows = [json.loads(line) for line in (tmp_path / "run" / "fisher.jsonl").read_text().splitlines()]
    by_set = {}
    for row in rows:
        by_set.setdefault(row.get("language"), []).append(row)
    assert set(by_set) == {None, "sw", "th"}
    assert all(len(v) == len(by_set[None]) == 3 * len(blocks.names) for v in by_set.values())
    assert all(row["n_examples"] == 8 for row in by_set["sw"])  # n_batches x batch size
    run = read_run(tmp_path / "run")
    assert sorted(run.fisher["language"].dropna().unique()) == ["sw", "th"]
    rs = load_runs(tmp_path)
    assert len(rs.fisher) == len(by_set[None]) and "language" not in rs.fisher
    assert sorted(rs.target_fisher["language"].unique()) == ["sw", "th"]
    sw = rs.target_fisher[rs.target_fisher["language"] == "sw"]
    want = {(r["step"], r["block"]): r["trace"] for r in by_set["sw"]}
    assert {(int(s), b): t for s, b, t in zip(sw["step"], sw["block"], sw["trace"], strict=True)} == want
    assert [m.step for m in probe.language_history["th"]] == [0, 3, 6]


def test_old_store_reads_as_source_only(tmp_path):
    writer = RunWriter.create(tmp_path / "old", config={})
    writer.log_fisher([{"block": "layer.0", "layer": 0, "trace": 1.5}], step=0)
    writer.finish()
    rs = load_runs(tmp_path)
    assert len(rs.fisher) == 1 and rs.target_fisher.empty
    assert list(rs.target_fisher.columns)[:2] == ["run_id", "language"]


def test_config_fields_parse_and_validate(tmp_path):
    import yaml

    from fisherlab.config import ConfigError, parse_config, probe_language_list, validate_static

    path = "analyses/target-fisher/base.yaml"
    config = parse_config(path, ["--run_dir", str(tmp_path / "r")])
    validate_static(config)
    written = yaml.safe_load(open(path))["probe_language_examples"]
    assert probe_language_list(config) == ["all"] and config.probe.probe_language_examples == written > 0
    good = ["--run_dir", str(tmp_path / "r"), "--probe_every", "5"]
    assert probe_language_list(parse_config(None, [*good, "--probe_languages", "sw, th"])) == ["sw", "th"]
    bad = {("--probe_languages", "sw", "--probe_estimator", "empirical"): "probe_languages",
           ("--probe_language_split", "train"): "probe_language_split",
           ("--probe_language_examples", "0"): "probe_language_examples"}
    for flags, field in bad.items():
        with pytest.raises(ConfigError, match=field):
            validate_static(parse_config(None, [*good, *flags]))
    with pytest.raises(ConfigError, match="probe_every"):
        validate_static(parse_config(None, ["--run_dir", str(tmp_path / "r"), "--probe_languages", "sw"]))
