"""Tiny Trainer set-up shared by the unfreezing tests, and the worker of the 2-process DDP test.

As a script (``python -m torch.distributed.run --nproc_per_node 2 tests/ddp_worker.py OUT``)
every rank trains the same tiny 6-layer adapter model on CPU/gloo with the strategy in
``$FISHERLAB_DDP_STRATEGY`` (default ``gradual:k=2``) and a FisherProbeCallback
(``$FISHERLAB_DDP_GC=1``: non-reentrant gradient checkpointing; ``$FISHERLAB_DDP_STEPS``;
``$FISHERLAB_DDP_GAS``: gradient accumulation steps; ``$FISHERLAB_DDP_BF16=1``: bf16 autocast),
and writes ``OUT/rank{r}.pt`` with its final weights, the gradients it saw for each block
at every step, its schedule events and its probe measurements; ``tests/test_ddp.py``
compares the ranks.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch

N_LAYERS = 6


def tiny_model(seed: int = 0, dropout: float = 0.0, num_layers: int = N_LAYERS) -> torch.nn.Module:
    from fisherlab.tiny import tiny_adapter_model

    return tiny_adapter_model("bert", num_layers=num_layers, hidden=16, intermediate=32, seed=seed,
                              dropout=dropout, task="task")


def tiny_dataset(n: int = 32, seed: int = 1) -> Any:
    from datasets import Dataset

    from fisherlab.tiny import tiny_batch

    batch = tiny_batch("classification", batch_size=n, seq_len=8, seed=seed)
    return Dataset.from_dict({k: v.tolist() for k, v in batch.items()})


def tiny_args(output_dir: str | Path, **overrides: Any) -> Any:
    from transformers import TrainingArguments

    kwargs: dict[str, Any] = dict(
        output_dir=str(output_dir), report_to=[], use_cpu=True, per_device_train_batch_size=4,
        learning_rate=1e-2, weight_decay=0.1, max_steps=8, logging_steps=1000, save_strategy="no",
        label_names=["labels"], disable_tqdm=True, seed=0, dataloader_num_workers=0,
    )
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


class Recorder:
    """TrainerCallback recording block weights after every step and grads before every optimizer step."""

    def __init__(self, blocks: Any) -> None:
        from transformers import TrainerCallback

        recorder = self
        self.blocks = blocks
        self.weights: dict[int, dict[str, torch.Tensor]] = {}
        self.grads: dict[int, dict[str, torch.Tensor | None]] = {}

        class _CB(TrainerCallback):
            def on_train_begin(self, args, state, control, model=None, **kwargs):
                recorder.weights[state.global_step] = recorder.snapshot(model)

            def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
                recorder.grads[state.global_step] = {
                    n: (p.grad.detach().clone() if p.grad is not None else None)
                    for n, p in blocks.all_parameters(model).items()
                }

            def on_step_end(self, args, state, control, model=None, **kwargs):
                recorder.weights[state.global_step] = recorder.snapshot(model)

        self.callback = _CB()

    def snapshot(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self.blocks.all_parameters(model).items()}


def main(out: str) -> None:
    from transformers import Trainer

    from fisherlab.blocks import BlockMap
    from fisherlab.hf import FisherProbeCallback, UnfreezeCallback, bind_callbacks

    strategy = os.environ.get("FISHERLAB_DDP_STRATEGY", "gradual:k=2")
    model = tiny_model(seed=0)
    blocks = BlockMap.from_model(model, adapter="task")
    unfreeze = UnfreezeCallback(strategy, blocks)
    recorder = Recorder(blocks)
    # exact estimator (no label sampling): the all-reduced traces can be checked against a
    # single-process measurement over the same batches
    probe_cb = FisherProbeCallback(every=4, n_batches=3, estimator="exact", batch_size=4, blocks=blocks)
    args = tiny_args(Path(out) / "trainer", max_steps=int(os.environ.get("FISHERLAB_DDP_STEPS", "8")),
                     ddp_backend="gloo", ddp_find_unused_parameters=True,
                     gradient_checkpointing=os.environ.get("FISHERLAB_DDP_GC") == "1",
                     gradient_checkpointing_kwargs={"use_reentrant": False},
                     gradient_accumulation_steps=int(os.environ.get("FISHERLAB_DDP_GAS", "1")),
                     bf16=os.environ.get("FISHERLAB_DDP_BF16") == "1")
    trainer = Trainer(model=model, args=args, train_dataset=tiny_dataset(64),
                      callbacks=[probe_cb, unfreeze, recorder.callback])
    bind_callbacks(trainer)  # a plain Trainer: bind explicitly
    trainer.train()
    rank = torch.distributed.get_rank()
    torch.save({
        "rank": rank,
        "world": torch.distributed.get_world_size(),
        "final": {n: p.detach().clone() for n, p in blocks.all_parameters(trainer.model).items()},
        "weights": recorder.weights,
        "grads": recorder.grads,
        "events": [e.to_dict() for e in unfreeze.schedule.events],
        "probe": [(m.step, m.traces, m.n_examples) for m in probe_cb.history],
        "precision": [m.meta.get("precision") for m in probe_cb.history],
        "global_step": trainer.state.global_step,
        "find_unused": getattr(trainer.model_wrapped, "find_unused_parameters", None),
        "wrapper": type(trainer.model_wrapped).__name__,
        "gradient_checkpointing": bool(getattr(trainer.model, "is_gradient_checkpointing", False)),
    }, Path(out) / f"rank{rank}.pt")


if __name__ == "__main__":
    import faulthandler
    import signal

    faulthandler.register(signal.SIGUSR1)  # dump stacks of a hung worker: kill -USR1 <pid>
    main(sys.argv[1])
