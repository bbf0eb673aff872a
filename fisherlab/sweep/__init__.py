"""Many runs of the protocol: methods x seeds x sampled permutation schedules.

:mod:`~fisherlab.sweep.plan` turns one base config into a validated list of
:class:`PlannedRun`; :mod:`~fisherlab.sweep.run` executes it (locally or on SLURM) and
writes the ``sweep.json`` manifest; :mod:`~fisherlab.sweep.console` is the local console
(one progress bar, one line per run, each run's output in its ``train.log``).
``fisherlab demo`` is a preset of this (:mod:`fisherlab.demo`).
"""

from __future__ import annotations

from fisherlab.spec.methods import DEFAULT_METHODS
from fisherlab.sweep.plan import PlannedRun, SweepResult, count_layers, format_plan, plan_sweep
from fisherlab.sweep.run import MANIFEST, execute_planned, parse_slurm_options, run_sweep

__all__ = ["DEFAULT_METHODS", "MANIFEST", "PlannedRun", "SweepResult", "count_layers", "execute_planned",
           "format_plan", "parse_slurm_options", "plan_sweep", "run_sweep"]
