"""Regularised training: configuration strings, a few optimisation steps per term, and the
Trainer/AdapterTrainer integration (logging to the Trainer and to the run's metrics.jsonl)."""

from __future__ import annotations

import contextlib

import pytest
import torch

from fisherlab.hf import make_trainer_class
from fisherlab.regularisers import (
    L2,
    Consistency,
    Dropout,
    EmbeddingNoise,
    FisherPenalty,
    ParameterNoise,
    RegulariserError,
    Resegment,
    regularised_loss,
    regulariser_from_string,
    regularisers_from_strings,
)
from fisherlab.tiny import tiny_adapter_model, tiny_batch, tiny_tokenizer
from fisherlab.torch_utils import trainable_parameters

# Tests read values of tensors that carry a graph (for later backward): fine here.
pytestmark = [pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad=True:UserWarning"),
              pytest.mark.usefixtures("one_thread")]


# ---------------------------------------------------------------------------- strings
def test_strings_build_the_terms():
    penalty = regulariser_from_string("fisher_penalty:alpha=0.01;method=finite_difference")
    assert isinstance(penalty, FisherPenalty) and penalty.alpha == 0.01 and penalty.method == "finite_difference"
    penalty = regulariser_from_string("fisher_penalty: alpha=1e-3; method=double_backprop; scaled=false; sub_batch=8")
    assert (penalty.alpha, penalty.method, penalty.scaled, penalty.sub_batch) == (1e-3, "double_backprop", False, 8)
    term = regulariser_from_string("consistency:view=dropout;weight=1.0")
    assert isinstance(term, Consistency) and isinstance(term.view, Dropout) and term.weight == 1.0
    term = regulariser_from_string("consistency:view=embedding_noise;eps=1e-4;dist=normal;divergence=kl;stop_grad=true")
    assert isinstance(term.view, EmbeddingNoise) and term.view.eps == 1e-4 and term.view.dist == "normal"
    assert term.divergence == "kl" and term.stop_grad is True
    term = regulariser_from_string("consistency:view=parameter_noise;sigma=0.01;reduction=rowmean")
    assert isinstance(term.view, ParameterNoise) and term.view.sigma == 0.01 and term.reduction == "rowmean"
    l2 = regulariser_from_string("l2:weight=0.01;to=init")
    assert isinstance(l2, L2) and (l2.weight, l2.to) == (0.01, "init")
    terms = regularisers_from_strings("l2:weight=0.1; consistency:view=dropout")
    assert [type(t) for t in terms] == [L2, Consistency]


@pytest.mark.parametrize("spec,message", [
    ("fisher_penalty:alpha=0.01;lr=3", r"unknown key 'lr' for 'fisher_penalty'; allowed keys: alpha, method, scaled, h"),
    ("fisher_penalty:alpha=lots", r"bad value for key 'alpha': expected a number, got 'lots'"),
    ("fisher_penalty:method=newton",
     r"bad value for key 'method': expected one of finite_difference, double_backprop, got 'newton'"),
    ("fisher_penalty:alpha", r"'alpha' is not key=value"),
    ("consistency:weight=1", r"needs view=\.\.\. with one of dropout, embedding_noise, parameter_noise, resegment"),
    ("consistency:view=cutoff", r"view='cutoff'; consistency needs view=\.\.\. with one of dropout"),
    ("consistency:view=dropout;eps=0.1", r"\['eps'\] belong to other views; view 'dropout' takes no keys of its own"),
    ("consistency:view=embedding_noise;sigma=1", r"\['sigma'\] belong to other views; .* takes eps, dist, seed"),
    ("consistency:view=resegment", r"needs the tokenizer"),
    ("l2:weight=0.1;to=origin", r"bad value for key 'to': expected one of zero, init, got 'origin'"),
    ("l2:weight=0.1;weight=0.2", r"key 'weight' given twice"),
    ("l2:weight=0.1,to=init", r"keys are separated by ';' \(',' was the old form\); write 'l2:weight=0.1;to=init'"),
    ("sam:rho=0.05", r"unknown regulariser 'sam' .*expected one of \['consistency', 'fisher_penalty', 'l2', 'mvr'\]"),
    ("", r"non-empty string"),
])
def test_bad_strings_fail_with_a_clear_message(spec, message):
    with pytest.raises(RegulariserError, match=message):
        regulariser_from_string(spec)


# ---------------------------------------------------------------------------- training
@pytest.mark.parametrize("spec", [
    "fisher_penalty:alpha=0.1;method=finite_difference",
    "fisher_penalty:alpha=0.1;method=double_backprop",
    "consistency:view=dropout;weight=1.0",
    "consistency:view=embedding_noise;eps=0.01;weight=1.0",
    "consistency:view=parameter_noise;sigma=0.01;weight=10.0",
    "l2:weight=0.1;to=zero",
])
def test_a_few_steps_decrease_the_total_loss(spec):
    model = tiny_adapter_model("bert", head="classification", dropout=0.1, seed=1)
    model.train()
    batch = tiny_batch("classification", batch_size=8)
    term = regulariser_from_string(spec)

    def evaluate() -> float:
        """The total at fixed labels/noise (step 0) and fixed dropout masks: a fixed objective."""
        with torch.random.fork_rng():
            torch.manual_seed(0)
            return float(regularised_loss(model, batch, [term], step=0)[0].detach())

    before = evaluate()
    optimizer = torch.optim.AdamW(trainable_parameters(model).values(), lr=1e-2)
    for step in range(15):
        optimizer.zero_grad()
        total, parts, _ = regularised_loss(model, batch, [term], step=step)
        assert torch.isfinite(parts[term.name]) and float(parts[term.name].detach()) >= 0
        total.backward()
        optimizer.step()
    assert evaluate() < before


def test_resegment_term_trains_from_a_string():
    tokenizer = tiny_tokenizer("wordpiece", ["low", "##er", "##est", "new", "hello", "##lo", "world"])
    term = regulariser_from_string("consistency:view=resegment;dropout=0.3;seed=2", tokenizer=tokenizer)
    assert isinstance(term.view, Resegment) and term.view.dropout == 0.3
    model = tiny_adapter_model("bert", head="tagging", vocab=len(tokenizer), seed=1)
    model.train()
    words = [["lower", "newest", "hello"], ["world", "lowest", "news"]]
    enc = tokenizer(words, is_split_into_words=True, padding=True, return_tensors="pt")
    labels = torch.full(enc["input_ids"].shape, -100)
    for b in range(len(words)):
        for position, word in enumerate(enc.word_ids(b)):
            if word is not None and word != enc.word_ids(b)[position - 1]:
                labels[b, position] = word % 3
    batch = {**enc, "labels": labels, "words": words}
    optimizer = torch.optim.AdamW(trainable_parameters(model).values(), lr=1e-2)
    before = float(regularised_loss(model, batch, [term], step=0)[0].detach())
    for step in range(10):
        optimizer.zero_grad()
        total, _, _ = regularised_loss(model, batch, [term], step=step)
        total.backward()
        optimizer.step()
    assert float(regularised_loss(model, batch, [term], step=0)[0].detach()) < before


def test_fused_views_leave_no_hook_behind_when_one_fails_to_enter():
    class Broken(Dropout):
        @contextlib.contextmanager
        def context(self, model, rows, offset, total):
            raise RegulariserError("broken view")
            yield

    model = tiny_adapter_model("bert", seed=0)
    model.train()
    embeddings = model.get_input_embeddings()
    before = len(embeddings._forward_hooks)
    terms = [Consistency(EmbeddingNoise(eps=1e-3)), Consistency(Broken())]
    with pytest.raises(RegulariserError, match="broken view"):
        regularised_loss(model, tiny_batch("classification"), terms)
    assert len(embeddings._forward_hooks) == before


# ---------------------------------------------------------------------------- Trainer
class _Writer:
    def __init__(self):
        self.rows = []

    def log_metric(self, step, split, language, metric, value):
        self.rows.append({"step": step, "split": split, "language": language, "metric": metric, "value": value})


def _examples(n=16):
    batch = tiny_batch("classification", batch_size=n, padding=False, seed=5)
    return [{k: v[i] for k, v in batch.items()} for i in range(n)]


@pytest.mark.parametrize("base,specs", [
    ("Trainer", ["fisher_penalty:alpha=0.05", "consistency:view=dropout;weight=0.5", "l2:weight=0.01;to=init"]),
    ("AdapterTrainer", ["fisher_penalty:alpha=0.05", "consistency:view=dropout;weight=0.5", "l2:weight=0.01;to=init"]),
    ("AdapterTrainer", ["fisher_penalty:alpha=0.05"]),  # the shared finite difference through compute_loss
])
def test_trainer_logs_each_term_and_writes_metrics(tmp_path, base, specs):
    import adapters
    import transformers

    trainer_class = make_trainer_class(getattr(adapters if base == "AdapterTrainer" else transformers, base))
    assert issubclass(trainer_class, getattr(adapters if base == "AdapterTrainer" else transformers, base))
    model = tiny_adapter_model("bert", head="classification", dropout=0.1, seed=2)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=4, gradient_accumulation_steps=2, max_steps=4,
        logging_steps=2, learning_rate=1e-2, report_to=[], save_strategy="no", use_cpu=True,
        remove_unused_columns=False, disable_tqdm=True)
    writer = _Writer()
    trainer = trainer_class(model=model, args=args, train_dataset=_examples(),
                            regularisers=specs, writer=writer)
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert [entry["step"] for entry in logs] == [2, 4]
    for entry in logs:
        reg = {k: v for k, v in entry.items() if k.startswith("reg/")}
        assert set(reg) == {"reg/" + regulariser_from_string(spec).name for spec in specs}
        # the Trainer's loss is the mean total: task loss plus the terms, scaled alike
        assert entry["loss"] == pytest.approx(entry["task_loss"] + sum(reg.values()), rel=1e-3, abs=1e-4)
    metrics = {(row["step"], row["metric"]) for row in writer.rows}
    assert {(2, "task_loss"), (4, "task_loss"), (2, "reg/fisher_penalty"), (4, "reg/fisher_penalty")} <= metrics
    assert len(writer.rows) == 2 * (1 + len(specs))
    assert all(row["split"] == "train" and row["language"] is None for row in writer.rows)


# ---------------------------------------------------------------------------- DDP
DDP_SPECS = [
    "fisher_penalty:alpha=0.5",                              # shared finite difference (task at theta + r g)
    "fisher_penalty:alpha=0.5;task_at=theta",
    "fisher_penalty:alpha=0.5;method=double_backprop",
    "consistency:view=dropout;consistency:view=embedding_noise;eps=0.05",   # fused 3B forward
    "consistency:view=parameter_noise;sigma=0.05;l2:weight=0.1",
]
DDP_WORKER = '''
import os, sys, torch, torch.distributed as dist
from fisherlab.regularisers import regularised_loss, regularisers_from_strings
from fisherlab.torch_utils import trainable_parameters
from fisherlab.tiny import tiny_adapter_model, tiny_batch
torch.set_num_threads(1)
dist.init_process_group("gloo")
rank = dist.get_rank()
model = tiny_adapter_model("bert", dtype=torch.float64, seed=0)
model.train()
ddp = torch.nn.parallel.DistributedDataParallel(model)
batch = tiny_batch("classification", batch_size=4, seed=10 + rank)
out = {}
for spec in SPECS:
    for p in model.parameters():
        p.grad = None
    total, parts, _ = regularised_loss(ddp, batch, regularisers_from_strings(spec), step=3)
    total.backward()
    out[spec] = {n: p.grad.clone() for n, p in trainable_parameters(model).items()}
torch.save(out, os.path.join(sys.argv[1], f"rank{rank}.pt"))
dist.destroy_process_group()
'''


@pytest.mark.ddp
def test_ddp_gradients_are_the_mean_of_the_per_device_regularised_gradients(tmp_path):
    """Under DDP each rank penalises its own batch; the gradient is the mean over ranks of the
    single-process gradients of (task loss + terms) on each rank's batch."""
    import os
    import signal
    import subprocess
    import sys

    worker = tmp_path / "worker.py"
    worker.write_text(f"SPECS = {DDP_SPECS!r}\n" + DDP_WORKER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(worker), str(tmp_path)]
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"DDP workers timed out:\n{stderr[-4000:]}")
    assert proc.returncode == 0, f"{stdout[-2000:]}\n{stderr[-6000:]}"
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]

    model = tiny_adapter_model("bert", dtype=torch.float64, seed=0)
    model.train()
    params = trainable_parameters(model)
    for spec in DDP_SPECS:
        single = []
        for rank in range(2):
            total, _, _ = regularised_loss(model, tiny_batch("classification", batch_size=4, seed=10 + rank),
                                           regularisers_from_strings(spec), step=3)
            single.append(dict(zip(params, torch.autograd.grad(total, list(params.values())), strict=True)))
        for name in params:
            expected = (single[0][name] + single[1][name]) / 2
            assert torch.equal(ranks[0][spec][name], ranks[1][spec][name]), (spec, name)
            assert torch.allclose(ranks[0][spec][name], expected, rtol=1e-7, atol=1e-10), (spec, name)


def test_trainer_with_resegment_keeps_the_words(tmp_path):
    import transformers
    from datasets import Dataset

    from fisherlab.hf import KeepText

    tokenizer = tiny_tokenizer("unigram", ["▁low", "er", "est", "▁new", "▁hello", "lo", "▁world", "ld"])
    sentences = [["lower", "newest", "hello"], ["world", "lowest"], ["hello", "world", "news"], ["newer"]] * 2
    rows = [{**tokenizer(words, is_split_into_words=True), "labels": i % 3, "words": words}
            for i, words in enumerate(sentences)]
    dataset = Dataset.from_list(rows)
    model = tiny_adapter_model("xlm-roberta", head="classification", vocab=len(tokenizer), seed=3)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=2, logging_steps=1, learning_rate=1e-2,
        report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True, label_names=["labels"])
    # remove_unused_columns stays on: the mixin keeps the words column
    trainer = make_trainer_class(transformers.Trainer)(
        model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
        data_collator=KeepText(transformers.DataCollatorWithPadding(tokenizer)),
        regularisers="consistency:view=resegment;alpha=0.05;weight=1.0")
    trainer.train()
    logged = [entry["reg/consistency.resegment"] for entry in trainer.state.log_history
              if "reg/consistency.resegment" in entry]
    assert len(logged) == 2 and all(value > 0 for value in logged)


def test_terms_reach_the_run_store_metrics(tmp_path):
    import adapters
    import transformers

    from fisherlab.runs import RunWriter, read_run

    writer = RunWriter.create(tmp_path / "run", config={"regularisers": ["fisher_penalty:alpha=0.05"]}, fsync=False)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, max_steps=2, logging_steps=1,
        learning_rate=1e-2, report_to=[], save_strategy="no", use_cpu=True, remove_unused_columns=False,
        disable_tqdm=True)
    trainer = make_trainer_class(adapters.AdapterTrainer)(
        model=tiny_adapter_model("bert", head="classification", seed=4), args=args, train_dataset=_examples(8),
        regularisers="fisher_penalty:alpha=0.05", writer=writer)
    trainer.train()
    writer.finish()
    metrics = read_run(tmp_path / "run").metrics
    assert set(metrics["metric"]) == {"task_loss", "reg/fisher_penalty"}
    assert sorted(metrics["step"].unique().tolist()) == [1, 2]
    assert (metrics["split"] == "train").all() and (metrics["value"] > 0).all()
