"""Scheduled unfreezing + Fisher probe under 2-process DDP (gloo on CPU), via torch.distributed.run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ddp_worker import N_LAYERS, tiny_dataset, tiny_model

from fisherlab.blocks import BlockMap
from fisherlab.fisher.probe import FisherProbe

WORKER = Path(__file__).with_name("ddp_worker.py")


def launch(out: Path, **env: str) -> list[dict]:
    # --standalone: a local rendezvous on a free port (no clash with other jobs on 29500)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(WORKER), str(out)]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    proc = subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both workers
        stdout, stderr = proc.communicate()
        pytest.fail(f"DDP workers timed out:\n{stderr[-6000:]}")
    if proc.returncode != 0:
        pytest.fail(f"DDP worker failed ({proc.returncode}):\n{stdout[-3000:]}\n{stderr[-6000:]}")
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.mark.ddp
def test_ddp_fun_same_decisions_and_synchronised_unfrozen_blocks(tmp_path):
    # first=fisher: FUN measures at step 0 too, so every decision (step 0 included) is a synchronised measurement
    ranks = launch(tmp_path, FISHERLAB_DDP_STRATEGY="fisher:k=2;n_batches=3;estimator=exact;first=fisher")
    r0, r1 = ranks
    assert (r0["world"], r0["wrapper"], r0["find_unused"]) == (2, "DistributedDataParallel", True)
    # the same decisions on both ranks, one block every 2 steps
    assert r0["events"] == r1["events"]
    assert [e["step"] for e in r0["events"]] == [0, 2, 4, 6]
    # the all-reduced traces are identical on both ranks ...
    assert r0["probe"] == r1["probe"]
    for event in r0["events"]:
        assert event["blocks"] == [max((b for b in event["scores"]
                                        if b not in [x for e in r0["events"] if e["step"] < event["step"]
                                                     for x in e["blocks"]]), key=event["scores"].get)]
    # ... and equal to one process measuring all the probe's batches (exact estimator: no sampling)
    model = tiny_model(seed=0)
    blocks = BlockMap.from_model(model, adapter="task")
    from transformers import default_data_collator

    probe = FisherProbe(n_batches=3, estimator="exact", batch_size=4).attach(tiny_dataset(64), default_data_collator)
    step0, traces0, n0 = r0["probe"][0]
    assert step0 == 0 and n0 == 12
    single = probe.measure(model, blocks, 0)
    for name in blocks.names:
        assert traces0[name] == pytest.approx(single.traces[name], rel=1e-9)

    check_synchronised(r0, r1, blocks, initial=blocks.all_parameters(model))
    assert len([b for b in blocks.layer_blocks if b not in {x for e in r0["events"] for x in e["blocks"]}]) \
        == N_LAYERS - 4


@pytest.mark.ddp
def test_ddp_gradual_with_non_reentrant_gradient_checkpointing(tmp_path):
    r0, r1 = launch(tmp_path, FISHERLAB_DDP_STRATEGY="gradual:k=2", FISHERLAB_DDP_GC="1", FISHERLAB_DDP_STEPS="5")
    assert r0["gradient_checkpointing"] and r0["find_unused"]
    assert r0["events"] == r1["events"]
    assert [(e["step"], e["blocks"]) for e in r0["events"]] == [(0, ["layer.5"]), (2, ["layer.4"]), (4, ["layer.3"])]
    model = tiny_model(seed=0)
    blocks = BlockMap.from_model(model, adapter="task")
    check_synchronised(r0, r1, blocks, initial=blocks.all_parameters(model))


@pytest.mark.ddp
def test_ddp_bf16_with_gradient_accumulation(tmp_path):
    """DDP + bf16 autocast + 2 accumulation steps: decisions and probe rows at optimizer steps, the
    probe measuring (and recording) bf16-autocast, replicas synchronised."""
    r0, r1 = launch(tmp_path, FISHERLAB_DDP_STRATEGY="gradual:k=2", FISHERLAB_DDP_GAS="2",
                    FISHERLAB_DDP_BF16="1", FISHERLAB_DDP_STEPS="5")
    assert r0["global_step"] == r1["global_step"] == 5
    assert r0["events"] == r1["events"]
    assert [e["step"] for e in r0["events"]] == [0, 2, 4]
    assert [step for step, _, _ in r0["probe"]] == [0, 4, 5]
    assert r0["probe"] == r1["probe"]
    assert set(r0["precision"]) == {"bf16-autocast"}
    model = tiny_model(seed=0)
    blocks = BlockMap.from_model(model, adapter="task")
    check_synchronised(r0, r1, blocks, initial=blocks.all_parameters(model))


def check_synchronised(r0: dict, r1: dict, blocks: BlockMap, initial: dict) -> None:
    """Grads: None while frozen, identical on both ranks once unfrozen; replicas identical at the end;
    frozen blocks untouched, unfrozen ones trained."""
    unfrozen_at = {b: e["step"] for e in r0["events"] for b in e["blocks"]}
    unfrozen_at["head"] = 0
    for step in sorted(r0["grads"]):
        for name, g0 in r0["grads"][step].items():
            g1 = r1["grads"][step][name]
            block = blocks.block_of(name)
            if block in unfrozen_at and step >= unfrozen_at[block]:
                # newly unfrozen parameters get gradients, averaged over both ranks' data
                assert g0 is not None and g1 is not None and torch.equal(g0, g1), (step, name)
            else:
                assert g0 is None and g1 is None, (step, name)
    # replicas identical after training; frozen blocks untouched, unfrozen ones trained
    for name, value in r0["final"].items():
        assert torch.equal(value, r1["final"][name]), name
        block = blocks.block_of(name)
        assert torch.equal(value, initial[name].detach()) == (block not in unfrozen_at), name
