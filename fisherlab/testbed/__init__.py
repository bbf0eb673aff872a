"""The offline synthetic multilingual testbed: a world, its languages, a tiny encoder, language adapters.

``build_testbed(config)`` builds (or reuses from the cache) a pretrained tiny
BERT-style encoder, its tokenizer and one MAD-X language adapter per language;
``fisherlab.tasks.get_task("testbed")`` serves the labelled task. Importing this
package does not import torch.
"""

from __future__ import annotations

from fisherlab.testbed.cache import (
    Testbed,
    TestbedError,
    build_testbed,
    default_cache_dir,
    load_testbed,
)
from fisherlab.testbed.languages import Language, build_languages
from fisherlab.testbed.world import (
    LanguageSpec,
    Meaning,
    ModelSpec,
    TaskSpec,
    TrainSpec,
    World,
    WorldConfig,
    default_world_config,
    old_default_world_config,
    tiny_world_config,
    world_config,
)

__all__ = [
    "Language", "LanguageSpec", "Meaning", "ModelSpec", "TaskSpec", "Testbed", "TestbedError", "TrainSpec",
    "World", "WorldConfig", "build_languages", "build_testbed", "default_cache_dir", "default_world_config",
    "load_testbed", "old_default_world_config", "tiny_world_config", "world_config",
]
