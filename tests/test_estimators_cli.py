"""``fisherlab fisher``: tiny built-in model, saved checkpoints, --data JSONL, clear errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from fisherlab.blocks import BlockMap
from fisherlab.cli import app
from fisherlab.fisher import trace_fisher
from fisherlab.fisher.sanity import load_checkpoint, random_batches
from fisherlab.tiny import tiny_adapter_model


def _invoke(*args):
    return CliRunner().invoke(app, ["fisher", *args])


def test_default_tiny_model_prints_a_table_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _invoke("--batches", "2", "--batch-size", "3", "--layers", "3", "--task-module", "lora")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["block", "layer", "trace"])
    blocks = [line.split()[0] for line in lines[header + 1:]]
    assert blocks == ["layer.0", "layer.1", "layer.2", "head"]
    assert "6 examples in 2 batches" in result.output and "per_example" in result.output
    assert list(tmp_path.iterdir()) == []                          # no --out, no file


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A saved adapters model (language adapter + task adapter + head) with a tiny WordPiece tokenizer."""
    from transformers import BertTokenizerFast

    root = tmp_path_factory.mktemp("ckpt")
    model = tiny_adapter_model("bert", head="classification", lang_adapters=["en"], vocab=64)
    model.save_pretrained(root / "model")
    model.save_adapter(str(root / "task_adapter"), "task")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(59)]
    (root / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizerFast(vocab_file=str(root / "vocab.txt")).save_pretrained(root / "model")
    return root


def test_checkpoint_with_adapter_matches_library_and_writes_json(checkpoint, tmp_path):
    out = tmp_path / "fisher.json"
    args = ["--model", str(checkpoint / "model"), "--adapter", "task", "--estimator", "exact",
            "--batches", "2", "--batch-size", "4", "--seq-len", "8", "--seed", "3", "--out", str(out)]
    result = _invoke(*args)
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["meta"]["estimator"] == "exact" and doc["n_examples"] == 8
    assert [r["block"] for r in doc["records"]] == ["layer.0", "layer.1", "head"]
    assert set(doc["records"][0]) == {"block", "layer", "trace", "stderr", "n_examples", "trainable"}
    # the same numbers as the library on the same model and batches
    loaded = load_checkpoint(str(checkpoint / "model"), "task")
    batches = random_batches(loaded.model, loaded.output, 2, 4, 8, seed=3)
    direct = trace_fisher(loaded.model, batches, BlockMap.from_model(loaded.model, adapter="task"), estimator="exact")
    for record in doc["records"]:
        assert record["trace"] == pytest.approx(direct.traces[record["block"]], rel=1e-6)
    # an adapter given as a saved directory works too, and a language adapter stacks before it
    result = _invoke("--model", str(checkpoint / "model"), "--adapter", str(checkpoint / "task_adapter"),
                     "--batches", "1", "--batch-size", "2")
    assert result.exit_code == 0, result.output
    stacked = load_checkpoint(str(checkpoint / "model"), "task", lang_adapter="en")
    assert str(stacked.model.active_adapters) == "Stack[en, task]"
    result = _invoke("--model", str(checkpoint / "model"), "--adapter", "task", "--lang-adapter", "xx")
    assert result.exit_code == 2 and "no adapter named 'xx'" in result.output


def test_data_jsonl_is_tokenised(checkpoint, tmp_path):
    data = tmp_path / "rows.jsonl"
    rows = [{"premise": "w1 w2 w3", "hypothesis": "w4 w5", "label": i % 2} for i in range(5)]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    result = _invoke("--model", str(checkpoint / "model"), "--adapter", "task", "--data", str(data),
                     "--estimator", "empirical", "--batches", "2", "--batch-size", "2")
    assert result.exit_code == 0, result.output
    assert "4 examples in 2 batches" in result.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "w1"}\nnot json\n')
    result = _invoke("--model", str(checkpoint / "model"), "--adapter", "task", "--data", str(bad))
    assert result.exit_code == 2 and "line 2 is not JSON" in result.output


def test_clear_errors(checkpoint, tmp_path):
    result = _invoke("--model", str(tmp_path / "missing"))
    assert result.exit_code == 2 and "no such directory" in result.output
    result = _invoke("--model", str(checkpoint / "model"), "--adapter", "nope")
    assert result.exit_code == 2 and "its adapters are: en, task" in result.output
    result = _invoke("--model", str(checkpoint / "model"))
    assert result.exit_code == 2 and "pass --adapter NAME" in result.output
    result = _invoke("--estimator", "magic")
    assert result.exit_code == 2 and "unknown estimator 'magic'" in result.output
    result = _invoke("--data", str(tmp_path / "x.jsonl"))
    assert result.exit_code == 2 and "needs a tokenizer" in result.output


@pytest.mark.parametrize("head,arch,estimator", [("mlm", "xlm-roberta", "per_example"), ("qa", "deberta-v2", "exact"),
                                                 ("multiple_choice", "bert", "empirical"), ("tagging", "bert", "reference")])
def test_every_head_runs_on_random_batches(head, arch, estimator):
    result = _invoke("--head", head, "--arch", arch, "--estimator", estimator, "--batches", "2", "--batch-size", "2",
                     "--seq-len", "6")
    assert result.exit_code == 0, result.output
    assert f"output {head}; estimator {estimator}" in result.output
