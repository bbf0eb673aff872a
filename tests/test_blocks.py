"""BlockMap discovery on tiny bert / xlm-roberta / deberta-v2 models, and its errors."""

from __future__ import annotations

import re

import pytest
import torch

from fisherlab.blocks import BlockMap, BlockMapError, as_block_map
from fisherlab.tiny import ARCHITECTURES, tiny_adapter_model, tiny_config


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("task_module,mode,per_layer", [
    ("seq_bn", "adapter", 4), ("double_seq_bn", "adapter", 8), ("lora", "lora", 4),
])
def test_discovers_one_block_per_layer_and_the_head(arch, task_module, mode, per_layer):
    model = tiny_adapter_model(arch, task="nli", task_module=task_module, lang_adapters=["xx"], num_layers=5)
    blocks = BlockMap.from_model(model, adapter="nli")
    assert blocks.mode == mode
    assert blocks.names == [f"layer.{i}" for i in range(5)] + ["head"]
    assert blocks.layers == list(range(5)) and blocks.n_layers == 5
    for name in blocks.layer_blocks:
        block = blocks[name]
        assert len(block.param_names) == per_layer
        # every parameter of layer i's block lives under layer i and belongs to the task module
        assert all(f".{block.layer}." in p and ".nli." in p for p in block.param_names)
    # the language adapter is in no block
    assert not any(".xx." in p for b in blocks.values() for p in b.param_names)
    # exactly the trainable parameters are covered
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    covered = {p for b in blocks.values() for p in b.param_names}
    assert covered == trainable
    assert blocks.trainable_blocks(model) == blocks.names


def test_lora_block_holds_query_and_value_of_its_layer():
    model = tiny_adapter_model("bert", task="t", task_module="lora", num_layers=3)
    block = BlockMap.from_model(model, adapter="t")["layer.1"]
    targets = {re.search(r"self\.(\w+)\.loras", p).group(1) for p in block.param_names}
    assert targets == {"query", "value"}


def test_full_mode_blocks_are_whole_layers_without_adapters():
    model = tiny_adapter_model("bert", task="t", task_module=None, lang_adapters=["de"], num_layers=3)
    blocks = BlockMap.from_model(model)
    assert blocks.mode == "full"
    assert blocks.layer_blocks == ["layer.0", "layer.1", "layer.2"]
    assert "embeddings" in blocks and blocks["embeddings"].layer is None
    layer_params = blocks["layer.2"].param_names
    assert any(p.endswith("attention.self.query.weight") for p in layer_params)
    assert any("LayerNorm" in p for p in layer_params)
    assert not any(".de." in p for p in layer_params)


def test_plain_auto_model_with_adapters_init():
    import adapters
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_config(tiny_config("xlm-roberta", num_layers=4))
    adapters.init(model)
    model.add_adapter("task_x", config="seq_bn")
    model.train_adapter("task_x")
    blocks = BlockMap.from_model(model, adapter="task_x")
    assert blocks.n_layers == 4
    assert all(p.startswith("classifier.") for p in blocks["head"].param_names)
    assert blocks.trainable_blocks(model) == blocks.names


def test_unknown_adapter_lists_the_existing_ones():
    model = tiny_adapter_model("bert", task="nli", lang_adapters=["en", "sw"])
    with pytest.raises(BlockMapError, match=r"no adapter named 'xnli'.*en, nli, sw"):
        BlockMap.from_model(model, adapter="xnli")


def test_bad_mode_and_missing_adapter_for_mode():
    model = tiny_adapter_model("bert", task="nli")
    with pytest.raises(BlockMapError, match="unknown mode"):
        BlockMap.from_model(model, adapter="nli", mode="prefix")
    with pytest.raises(BlockMapError, match="needs adapter"):
        BlockMap.from_model(model, mode="lora")


def test_unknown_head_lists_heads():
    model = tiny_adapter_model("bert", task="nli")
    with pytest.raises(BlockMapError, match=r"no head named 'qa'.*\['nli'\]"):
        BlockMap.from_model(model, adapter="nli", head="qa")


def test_from_regex_and_its_errors():
    model = tiny_adapter_model("bert", task="nli", num_layers=3)
    blocks = BlockMap.from_regex(model, r"layer\.(\d+)\.output\.adapters\.nli\.", r"^heads\.nli\.")
    assert blocks.names == ["layer.0", "layer.1", "layer.2", "head"]
    with pytest.raises(BlockMapError, match="capture group"):
        BlockMap.from_regex(model, r"layer\.\d+")
    with pytest.raises(BlockMapError, match="no parameter name matches"):
        BlockMap.from_regex(model, r"nothing_(\d+)")


def test_blocks_without_parameters_or_overlapping_are_rejected():
    from fisherlab.blocks import Block

    with pytest.raises(BlockMapError, match="no parameters"):
        BlockMap([Block("layer.0", 0, ())])
    with pytest.raises(BlockMapError, match="in both"):
        BlockMap([Block("layer.0", 0, ("a",)), Block("layer.1", 1, ("a",))])


def test_set_trainable_freezes_and_drops_grads_and_validates_first():
    model = tiny_adapter_model("bert", task="nli", num_layers=3)
    blocks = BlockMap.from_model(model, adapter="nli")
    for p in blocks.parameters(model, "layer.0").values():
        p.grad = torch.ones_like(p)
    with pytest.raises(KeyError, match="no block named 'layer.9'"):
        blocks.set_trainable(model, ["layer.0", "layer.9"], False)
    assert all(p.requires_grad for p in blocks.parameters(model, "layer.0").values())  # nothing changed
    blocks.set_trainable(model, ["layer.0"], False)
    assert all(not p.requires_grad and p.grad is None for p in blocks.parameters(model, "layer.0").values())
    assert blocks.trainable_blocks(model) == ["layer.1", "layer.2", "head"]


def test_block_of_tolerates_ddp_prefix_and_as_block_map():
    model = tiny_adapter_model("bert", task="nli", num_layers=2)
    blocks = BlockMap.from_model(model, adapter="nli")
    pname = blocks["layer.1"].param_names[0]
    assert blocks.block_of(pname) == "layer.1"
    assert blocks.block_of("module." + pname) == "layer.1"
    assert blocks.block_of("bert.embeddings.word_embeddings.weight") is None
    plain = as_block_map({"layer.0": list(blocks["layer.0"].param_names)}, model)
    assert plain["layer.0"].layer == 0
    assert as_block_map(None, model, adapter="nli").names == blocks.names
