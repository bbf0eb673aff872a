"""Issue 11, Stickland & Murray: whole-model tr(F) for fully fine-tuned runs (Figure 1)."""

from __future__ import annotations

import pytest

from fisherlab.analysis import load_runs
from fisherlab.analysis.final import final_traces
from fisherlab.runs import RunWriter


def _run(root, name, task_module, steps):
    writer = RunWriter.create(root / name, {"method": "standard", "seed": 0, "model": "m", "task": "t",
                                            "task_module": task_module})
    for step, traces in steps.items():
        writer.log_fisher([{"block": b, "layer": layer, "trace": t, "trainable": True}
                           for b, (layer, t) in traces.items()], step)
    writer.write_results("accuracy", "en", {"en": 80.0, "de": 70.0})
    writer.finish()


def test_final_trace_is_the_whole_model_for_full_fine_tuning(tmp_path):
    blocks = lambda scale: {"embeddings": (None, 10.0 * scale), "layer.0": (0, 1.0 * scale),  # noqa: E731
                            "layer.1": (1, 2.0 * scale), "head": (None, 5.0 * scale)}
    _run(tmp_path, "full", "full", {0: blocks(1.0), 10: blocks(2.0)})
    _run(tmp_path, "adapter", "seq_bn", {0: blocks(1.0), 10: blocks(3.0)})
    final = final_traces(load_runs(tmp_path)).set_index("run_id")
    full = next(i for i in final.index if i.endswith("full"))
    adapter = next(i for i in final.index if i.endswith("adapter"))
    # full fine-tuning: embeddings + layers + head at the last probe (step 10), not a per-layer mean
    assert final.loc[full, "final_trace"] == pytest.approx(2.0 * (10 + 1 + 2 + 5))
    assert final.loc[full, "trace_scope"] == "whole_model" and final.loc[full, "final_step"] == 10
    # adapters: the trainable layer blocks only (head and embeddings excluded)
    assert final.loc[adapter, "final_trace"] == pytest.approx(3.0 * (1 + 2))
    assert final.loc[adapter, "trace_scope"] == "trainable_layers"
