"""Paper presets (torch-free): the FUN paper's hyper-parameter tables and the papers' base models.

* :mod:`~fisherlab.presets.models` -- layer counts of the papers' hub base models (so a
  sweep can plan permutation schedules without downloading a model config);
* :mod:`~fisherlab.presets.fun` -- Tables 3, 4 and 15 of Liu et al. (2024) as sweep presets
  (base config fields plus per-method overrides of ``k``, learning rate and epochs).
"""

from __future__ import annotations

from fisherlab.presets.fun import FUN_PRESETS, SweepPreset, fun_preset, preset_names
from fisherlab.presets.models import PAPER_BASE_MODELS, known_layer_count

__all__ = ["FUN_PRESETS", "PAPER_BASE_MODELS", "SweepPreset", "fun_preset", "known_layer_count", "preset_names"]
