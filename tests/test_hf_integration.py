"""The Hugging Face integration: explicit binding, the ScheduleSettler hand-off, one
make_trainer_class with unfreezing and regularisers together, unwrapping, the error base,
and the lazy public surface."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from ddp_worker import N_LAYERS, Recorder, tiny_args, tiny_dataset, tiny_model
from transformers import Trainer, TrainerCallback

from fisherlab.blocks import BlockMap
from fisherlab.errors import FisherlabError
from fisherlab.hf import (
    FisherProbeCallback,
    ScheduleSettler,
    UnboundCallbackError,
    UnfreezeCallback,
    make_trainer_class,
)
from fisherlab.torch_utils import mix_seed, step_seed, unwrap_model

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")]


# -- binding -------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda: UnfreezeCallback("gradual:k=1", "task"),
                                  lambda: FisherProbeCallback(every=1, n_batches=1, blocks="task")])
def test_unbound_callback_in_a_plain_trainer_fails_clearly(tmp_path, make):
    callback = make()
    trainer = Trainer(model=tiny_model(), args=tiny_args(tmp_path, max_steps=1), train_dataset=tiny_dataset(),
                      callbacks=[callback])
    assert callback.trainer is None  # nothing walks the call stack to find it
    with pytest.raises(UnboundCallbackError, match=r"not bound .*make_trainer_class.*\.bind\(trainer\)"):
        trainer.train()
    assert isinstance(UnboundCallbackError("x"), FisherlabError) and isinstance(UnboundCallbackError("x"),
                                                                                 RuntimeError)


def test_factory_binds_in_init_and_add_callback_and_plain_bind_works(tmp_path):
    probe = FisherProbeCallback(every=1, n_batches=1, blocks="task")
    trainer = make_trainer_class(Trainer)(model=tiny_model(), args=tiny_args(tmp_path / "a", max_steps=1),
                                          train_dataset=tiny_dataset(), callbacks=[probe])
    assert probe.trainer is trainer
    late = UnfreezeCallback("gradual:k=1", "task")
    trainer.add_callback(late)
    assert late.trainer is trainer
    # a plain Trainer: bind() registers the callback and binds it
    plain = Trainer(model=tiny_model(), args=tiny_args(tmp_path / "b", max_steps=1), train_dataset=tiny_dataset())
    other = FisherProbeCallback(every=1, n_batches=1, blocks="task").bind(plain)
    assert other.trainer is plain and other in plain.callback_handler.callbacks
    plain.train()
    assert [m.step for m in other.history] == [0, 1]
    # moved to another Trainer without binding there: unbound again
    plain.remove_callback(other)
    assert other.trainer is None


def test_factory_classes_are_cached_per_arguments():
    assert make_trainer_class(Trainer) is make_trainer_class(Trainer)
    assert make_trainer_class(Trainer, regularisers=False) is not make_trainer_class(Trainer)
    bare = make_trainer_class(Trainer, unfreezing=False, regularisers=False)
    assert issubclass(bare, Trainer)
    assert bare.create_optimizer is Trainer.create_optimizer and bare.compute_loss is Trainer.compute_loss
    both = make_trainer_class(Trainer)
    assert both.create_optimizer is not Trainer.create_optimizer and both.compute_loss is not Trainer.compute_loss


# -- the hand-off --------------------------------------------------------------------------------
def test_schedule_settler_protocol_and_hand_off_order(tmp_path):
    assert isinstance(UnfreezeCallback("gradual:k=1", "task"), ScheduleSettler)
    assert not isinstance(FisherProbeCallback(), ScheduleSettler)
    events: list[tuple[str, int]] = []

    class Settler(TrainerCallback):
        """A user schedule: settles the step's decision when asked (registered AFTER the probe)."""

        def settle(self, state, model=None):
            events.append(("settle", state.global_step))

    assert isinstance(Settler(), ScheduleSettler)
    probe = FisherProbeCallback(every=2, n_batches=1, blocks="task")
    measure = probe.probe.measure

    def recording_measure(model, blocks, step, block_names=None):
        events.append(("measure", step))
        return measure(model, blocks, step, block_names)

    probe.probe.measure = recording_measure
    make_trainer_class(Trainer)(model=tiny_model(), args=tiny_args(tmp_path, max_steps=4),
                                train_dataset=tiny_dataset(), callbacks=[probe, Settler()]).train()
    measured = [s for kind, s in events if kind == "measure"]
    assert measured == [0, 2, 4]
    for step in measured:  # every measurement is preceded by the settler's decision of that step
        index = events.index(("measure", step))
        assert events[index - 1] == ("settle", step)


# -- one factory, both mixins --------------------------------------------------------------------
def test_make_trainer_class_with_unfreezing_and_regularisers_together(tmp_path):
    model = tiny_model()
    blocks = BlockMap.from_model(model, adapter="task")
    blocks.set_trainable(model, blocks.layer_blocks, False)  # frozen at init: still registered in the optimizer
    unfreeze = UnfreezeCallback("gradual:k=1", blocks)
    recorder = Recorder(blocks)
    trainer_class = make_trainer_class(Trainer, unfreezing=True, regularisers=True)
    trainer = trainer_class(model=model, args=tiny_args(tmp_path, max_steps=3, logging_steps=1),
                            train_dataset=tiny_dataset(), callbacks=[unfreeze, recorder.callback],
                            regularisers=["l2:weight=0.5"])
    trainer.train()
    # unfreezing: one layer per step from the top (steps 0, 1, 2); lower layers never move
    assert unfreeze.schedule.unfrozen == [f"layer.{N_LAYERS - 1 - i}" for i in range(3)]
    held = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert all(id(p) in held for p in blocks.all_parameters(model).values())
    first, last = recorder.weights[0], recorder.weights[3]
    for name in blocks["layer.0"].param_names:
        assert torch.equal(first[name], last[name])
    assert any(not torch.equal(first[n], last[n]) for n in blocks[f"layer.{N_LAYERS - 1}"].param_names)
    # regularisers: the L2 term and the task loss are logged, and the total is their sum
    logged = [h for h in trainer.state.log_history if "reg/l2" in h]
    assert len(logged) == 3
    for row in logged:
        assert row["reg/l2"] > 0
        assert row["loss"] == pytest.approx(row["task_loss"] + row["reg/l2"], abs=1e-3)


# -- unwrapping, seeds, errors -------------------------------------------------------------------
def test_unwrap_model_strips_compile_and_data_parallel():
    model = tiny_model()
    compiled = torch.compile(model)  # an OptimizedModule; nothing compiles until it is called
    assert unwrap_model(compiled) is model
    assert unwrap_model(torch.nn.DataParallel(model)) is model
    assert unwrap_model(torch.nn.DataParallel(compiled)) is model  # nested wrappers come off too
    assert unwrap_model(model) is model
    assert BlockMap.from_model(compiled, adapter="task").names == BlockMap.from_model(model, adapter="task").names


def test_one_seed_mixer():
    assert step_seed(3, 7, 2) == mix_seed(3, 7, 2)
    assert step_seed(3, 7) == mix_seed(3, 7, 0)
    assert mix_seed(1, 2) != mix_seed(2, 1)
    assert 0 <= mix_seed(2**40, -1) < 2**63


def test_torch_side_errors_share_the_base():
    from fisherlab.blocks import BlockMapError
    from fisherlab.fisher.outputs import FisherError
    from fisherlab.models import MadxError
    from fisherlab.regularisers import RegulariserError
    from fisherlab.tasks import UnknownTaskError
    from fisherlab.testbed.cache import TestbedError

    for cls in (BlockMapError, FisherError, MadxError, RegulariserError, UnknownTaskError, TestbedError):
        assert issubclass(cls, FisherlabError) and issubclass(cls, ValueError), cls


# -- the public surface --------------------------------------------------------------------------
def test_public_surface_is_lazy_and_load_runs_does_not_import_torch():
    code = textwrap.dedent("""
        import sys
        import fisherlab
        assert "torch" not in sys.modules
        fisherlab.load_runs
        assert "torch" not in sys.modules, "fisherlab.load_runs imported torch"
        from fisherlab import BlockMap, trace_fisher, UnfreezeCallback, FisherProbeCallback, load_runs
        from fisherlab import make_trainer_class, FisherMeasurement, FisherProbe, PerExampleGradNorms
        from fisherlab.fisher import FisherProbe as P, PerExampleGradNorms as E, trace_fisher as t
        assert P is FisherProbe and E is PerExampleGradNorms and t is trace_fisher
        assert "torch" in sys.modules
        try:
            fisherlab.no_such_name
        except AttributeError as err:
            assert "no_such_name" in str(err)
        else:
            raise SystemExit("no AttributeError")
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


@pytest.mark.parametrize("package", ["fisherlab", "fisherlab.fisher", "fisherlab.hf", "fisherlab.regularisers"])
def test_every_lazy_export_resolves(package):
    import importlib

    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{package}.{name}"
        assert name in dir(module)


def test_lazy_exports_follow_their_module(monkeypatch):
    import fisherlab
    import fisherlab.fisher
    import fisherlab.fisher.estimators as estimators

    assert fisherlab.fisher.trace_fisher is estimators.trace_fisher  # a first access
    monkeypatch.setattr(estimators, "trace_fisher", lambda *a, **k: "patched")
    assert fisherlab.fisher.trace_fisher() == "patched" and fisherlab.trace_fisher() == "patched"
