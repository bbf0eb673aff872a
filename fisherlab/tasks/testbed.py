"""The testbed task: the category of the grammatical subject (agent), in every world language.

Labels follow from meaning (the subject noun's category, balanced, so chance
is 1/categories); the test meanings are shared by all languages (parallel), so
per-language accuracies are directly comparable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fisherlab.tasks.base import ClassificationTask
from fisherlab.testbed.world import BASE_NAME


class TestbedTask(ClassificationTask):
    """``get_task("testbed", path=<testbed dir>)`` or ``get_task("testbed", world="default", seed=0)``.

    Without ``path`` the world is built into (or reused from) the cache; with
    ``build=False`` a missing testbed is an error instead. ``threads``: language adapters
    trained at once when building (default: the number of CPU cores; see ``build_testbed``).
    """

    __test__ = False  # not a pytest test class

    head = "classification"

    def __init__(self, path: str | Path | None = None, *, world: str = "default", seed: int = 0,
                 build: bool = True, threads: int | None = None, progress: bool = False, name: str = "testbed") -> None:
        from fisherlab.testbed.cache import build_testbed, default_cache_dir, load_testbed
        from fisherlab.testbed.world import world_config

        if path is not None:
            self.testbed = load_testbed(path)
        else:
            config = world_config(world, seed=seed)
            if build:
                self.testbed = build_testbed(config, threads=threads, progress=progress)
            else:
                self.testbed = load_testbed(default_cache_dir() / config.digest())
        config = self.testbed.config
        self.name = name
        self.num_labels = config.categories
        self.languages = config.language_codes
        self.source_language = config.source_language
        self._world = self.testbed.world()
        self._languages = self.testbed.language_models()
        self._tokenizer = None

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = self.testbed.tokenizer()
        return self._tokenizer

    def texts(self, split: str, language: str) -> tuple[list[str], list[int]]:
        """Untokenized sentences and labels of a split (the same meanings in every language)."""
        self.check_split(split, language)
        meanings = self._world.split_meanings(split)
        realise = self._languages[language].sentence
        return [realise(m) for m in meanings], [self._world.label(m) for m in meanings]

    def load(self, split: str, language: str, tokenizer: Any = None):
        """Tokenized ``datasets.Dataset`` with ``input_ids``, ``token_type_ids``, ``attention_mask``, ``labels``."""
        from datasets import Dataset

        sentences, labels = self.texts(split, language)
        encoded = (tokenizer or self.tokenizer)(sentences, truncation=True)
        return Dataset.from_dict({**{k: encoded[k] for k in encoded.keys()}, "labels": labels})

    def model_defaults(self) -> dict[str, Any]:
        """The testbed's base, language adapters and the task-adapter size suited to it."""
        return {"base": self.testbed.base_dir, "lang_adapters": self.testbed.lang_adapters,
                "model_name": BASE_NAME,
                "source_language": self.source_language,
                "reduction_factor": self.testbed.config.task.reduction_factor}

    def training_defaults(self) -> dict[str, Any]:
        """Recommended task-adapter training budget for this world (steps, batch size, lr)."""
        t = self.testbed.config.task
        return {"steps": t.steps, "batch_size": t.batch_size, "lr": t.lr}
