"""Cheap diagnostic for one language adapter: retrain it with other settings over a built testbed's base.

For each setting (JSON of ``TrainSpec`` fields for the language adapters), trains
the adapter of ``LANG`` as the build would (same corpus and seed), then reports:
the MLM loss (first -> last 10 steps), CPU seconds, *retrieval* (percent of the
language's private words whose lexical-table row has, among the source words'
base embeddings, the source word of the same concept as its cosine nearest
neighbour; only with ``lexical``), and with one standard task adapter (seed 0,
the world's task-training defaults) the accuracy with the own adapter and with
the source adapter kept, on all test items and on private-subject items.
Costs about a tenth of a build; used to choose the variants of issue 13.

    python benchmarks/testbed_adapter_diag.py /tmp/tb few '{"lexical": true, "lexical_lr": 0.01, "steps": 400}'
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

import torch


def _quality_module():
    spec = importlib.util.spec_from_file_location("testbed_quality", Path(__file__).with_name("testbed_quality.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def retrieval(testbed, tokenizer, lang: str, table: dict) -> float:
    """Percent of ``lang``'s private words whose table row's nearest source base embedding is its translation."""
    from safetensors.torch import load_file

    from fisherlab.testbed.languages import build_languages

    languages = build_languages(testbed.config)
    source = languages[testbed.source_language]
    weights = load_file(str(testbed.base_dir / "model.safetensors"))
    embeddings = next(v for k, v in weights.items() if k.endswith("word_embeddings.weight"))
    source_rows = embeddings[torch.tensor(tokenizer.convert_tokens_to_ids(source.words))]
    hits = total = 0
    for concept, word in languages[lang].lexicon.items():
        if word in source.words:
            continue
        row = table["weight"][(table["token_ids"] == tokenizer.convert_tokens_to_ids(word)).nonzero()[0, 0]]
        nearest = torch.nn.functional.cosine_similarity(source_rows, row[None], dim=-1).argmax()
        hits += int(source.words[int(nearest)] == source.lexicon[concept])
        total += 1
    return 100.0 * hits / total


def main() -> None:
    from safetensors.torch import load_file

    from fisherlab.models import build_madx, swap_language
    from fisherlab.tasks import get_task
    from fisherlab.testbed import load_testbed
    from fisherlab.testbed.lang_adapters import train_world_adapter
    from fisherlab.testbed.lexical import LEXICAL_FILE

    if len(sys.argv) < 4:
        raise SystemExit(__doc__)
    torch.set_num_threads(1)
    quality = _quality_module()
    testbed, lang = load_testbed(sys.argv[1]), sys.argv[2]
    tokenizer = testbed.tokenizer()
    task = get_task("testbed", path=testbed.root)
    test = task.load("test", lang)
    labels = list(test["labels"])
    private = [i for i, shared in enumerate(quality.subject_is_anchor(task)[lang]) if not shared]

    def accuracy(predictions, items):
        return 100.0 * sum(predictions[i] == labels[i] for i in items) / len(items)

    for setting in map(json.loads, sys.argv[3:]):
        config = dataclasses.replace(testbed.config, adapters=dataclasses.replace(testbed.config.adapters, **setting))
        out = Path(f"/tmp/testbed-diag-{config.digest()}-{lang}")
        cpu0 = time.process_time()
        losses = train_world_adapter(config, testbed.base_dir, tokenizer, lang, out, progress=False)
        cpu = time.process_time() - cpu0
        found = (out / LEXICAL_FILE).is_file()
        ret = retrieval(testbed, tokenizer, lang, load_file(str(out / LEXICAL_FILE))) if found else float("nan")
        model = build_madx(**{**task.model_defaults(), "lang_adapters": {**testbed.lang_adapters, lang: out}},
                           task=task, seed=0)
        t = task.training_defaults()
        quality.train_task_adapter(model, task.load("train", task.source_language), tokenizer,
                                   steps=t["steps"], batch_size=t["batch_size"], lr=t["lr"], seed=0)
        swap_language(model, lang)
        own = task.predict(model, test, tokenizer)
        swap_language(model, task.source_language)
        kept = task.predict(model, test, tokenizer)
        everything = range(len(labels))
        print(json.dumps(setting), f"loss {statistics.fmean(losses[:10]):.2f}->{statistics.fmean(losses[-10:]):.2f}",
              f"cpu {cpu:.0f} s retrieval {ret:.0f}%", f"own {accuracy(own, everything):.1f}",
              f"kept {accuracy(kept, everything):.1f} private own {accuracy(own, private):.1f}",
              f"private kept {accuracy(kept, private):.1f}", flush=True)


if __name__ == "__main__":
    main()
