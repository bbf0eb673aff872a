"""MAD-X assembly: what is loaded, what is trainable, what is active, and the errors."""

from __future__ import annotations

import pytest
import torch

from fisherlab.models import MadxError, build_madx, madx_setup, swap_language
from fisherlab.tiny import tiny_batch, tiny_config

LANGS = ("en", "de")


def _save_base(arch: str, path) -> str:
    from adapters import AutoAdapterModel

    torch.manual_seed(0)
    model = AutoAdapterModel.from_config(tiny_config(arch, num_layers=2, hidden=16))
    model.add_masked_lm_head("mlm")  # like the testbed base: build_madx must drop it
    model.save_pretrained(str(path))
    return str(path)


def _perturbing_trainer(model, language, path):
    """Stands in for MLM training: a seq_bn_inv adapter with non-zero weights, saved to ``path``."""
    from adapters import SeqBnInvConfig

    model.add_adapter(language, config=SeqBnInvConfig(reduction_factor=2))
    gen = torch.Generator().manual_seed(len(language) + ord(language[0]))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if f".{language}." in name:
                param.add_(torch.randn(param.shape, generator=gen) * 0.5)
    model.save_adapter(str(path), language)


@pytest.fixture(scope="module", params=["bert", "xlm-roberta"])
def madx_dirs(request, tmp_path_factory):
    """A saved tiny base and saved language adapters (created once via the trainer path)."""
    root = tmp_path_factory.mktemp(request.param)
    base = _save_base(request.param, root / "base")
    adapters = {lang: root / "adapters" / lang for lang in LANGS}
    build_madx(base, "nli", lang_adapters=adapters, train_missing=_perturbing_trainer)
    assert all((p / "adapter_config.json").is_file() for p in adapters.values())
    return base, adapters


@pytest.mark.parametrize("task_module", ["seq_bn", "lora"])
def test_only_task_module_and_head_train(madx_dirs, task_module):
    base, adapters = madx_dirs
    model = build_madx(base, "nli", task_module=task_module, lang_adapters=adapters, num_labels=3)
    setup = madx_setup(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(setup.task_parameters) | set(setup.head_parameters) == set(setup.trainable)
    marker = ".adapters.nli." if task_module == "seq_bn" else ".loras.nli."
    assert all(marker in n for n in setup.task_parameters)
    assert setup.head_parameters and all(n.startswith("heads.nli.") for n in setup.head_parameters)
    assert not any("mlm" in n for n, _ in model.named_parameters())  # the base's MLM head is gone
    assert list(model.heads) == ["nli"]
    assert str(model.active_adapters) == "Stack[en, nli]"
    assert setup.model_name == "base"  # the directory name unless model_name is given

    batch = tiny_batch("classification", vocab=64, num_labels=3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model(**batch).loss.backward()
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert changed and changed <= trainable
    assert any(n in changed for n in setup.head_parameters)


def test_swap_language_changes_the_stack_not_the_trainable_set(madx_dirs):
    base, adapters = madx_dirs
    model = build_madx(base, "nli", lang_adapters=adapters, num_labels=3, seed=1)
    batch = tiny_batch("classification", vocab=64, num_labels=3)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    with torch.no_grad():
        en_logits = model(**batch).logits
        swap_language(model, "de")
        de_logits = model(**batch).logits
    assert str(model.active_adapters) == "Stack[de, nli]"
    assert madx_setup(model).active_language == "de"
    assert not torch.allclose(en_logits, de_logits)  # the language adapter is in the forward pass
    assert [n for n, p in model.named_parameters() if p.requires_grad] == trainable
    swap_language(model, "en")
    with torch.no_grad():
        assert torch.allclose(model(**batch).logits, en_logits)


def test_same_seed_same_task_module(madx_dirs):
    base, adapters = madx_dirs
    a = build_madx(base, "nli", lang_adapters=adapters, seed=3)
    b = build_madx(base, "nli", lang_adapters=adapters, seed=3)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_sizes_are_configurable(madx_dirs):
    base, adapters = madx_dirs
    hidden = 16
    model = build_madx(base, "nli", lang_adapters=adapters, reduction_factor=4)
    downs = [p for n, p in model.named_parameters() if ".adapters.nli." in n and n.endswith("adapter_down.0.weight")]
    assert downs and all(p.shape == (hidden // 4, hidden) for p in downs)
    lora = build_madx(base, "nli", task_module="lora", lang_adapters=adapters, lora_r=4, lora_alpha=16)
    a_mats = [p for n, p in lora.named_parameters() if ".loras.nli." in n and n.endswith("lora_A")]
    assert len(a_mats) == 2 * 2  # q and v in each of 2 layers
    assert all(p.shape == (4, hidden) for p in a_mats)
    assert lora.adapters_config.get("nli").alpha == 16
    default = build_madx(base, "nli", task_module="lora", lang_adapters=adapters)
    assert default.adapters_config.get("nli").r == 8 and default.adapters_config.get("nli").alpha == 8


def test_full_fine_tuning_trains_the_base_not_the_language_adapters(madx_dirs):
    base, adapters = madx_dirs
    model = build_madx(base, "nli", task_module="full", lang_adapters=adapters)
    for name, param in model.named_parameters():
        is_language_adapter = any(f".{lang}." in name for lang in LANGS)
        assert param.requires_grad == (not is_language_adapter), name
    assert str(model.active_adapters) == "Stack[en]"
    plain = build_madx(base, "nli", task_module="full")
    assert all(p.requires_grad for p in plain.parameters())


@pytest.mark.parametrize("head,extra", [("multiple_choice", {"num_choices": 2}), ("qa", {}),
                                        ("tagging", {"num_labels": 5})])
def test_other_heads(madx_dirs, head, extra):
    base, adapters = madx_dirs
    model = build_madx(base, "t", head=head, lang_adapters=adapters, **extra)
    batch = tiny_batch(head, vocab=64, num_labels=5)
    model.train()
    assert torch.isfinite(model(**batch).loss)


def test_errors_name_the_field(madx_dirs, tmp_path):
    base, adapters = madx_dirs
    with pytest.raises(MadxError, match="base .* does not exist"):
        build_madx(tmp_path / "nope", "nli")
    with pytest.raises(MadxError, match="config.json"):
        build_madx(str(tmp_path), "nli")
    with pytest.raises(MadxError, match=r"lang_adapters\['fr'\]"):
        build_madx(base, "nli", lang_adapters={**adapters, "fr": tmp_path / "fr"})
    with pytest.raises(MadxError, match="source_language 'sw'"):
        build_madx(base, "nli", lang_adapters=adapters, source_language="sw")
    with pytest.raises(MadxError, match="task_module"):
        build_madx(base, "nli", task_module="prefix")
    with pytest.raises(MadxError, match="head"):
        build_madx(base, "nli", head="regression")
    with pytest.raises(MadxError, match="reduction_factor"):
        build_madx(base, "nli", reduction_factor=0)
    model = build_madx(base, "nli", lang_adapters=adapters)
    with pytest.raises(MadxError, match="language 'fr' has no language adapter"):
        swap_language(model, "fr")
    with pytest.raises(MadxError, match="build_madx"):
        swap_language(torch.nn.Linear(2, 2), "en")


def test_tiny_and_madx_builders_leave_the_global_rng_alone(madx_dirs):
    from fisherlab.tiny import tiny_adapter_model

    base, _ = madx_dirs
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tiny_adapter_model("bert", seed=7)
    build_madx(base, "nli", seed=7)
    assert torch.equal(torch.rand(3), expected)


def test_add_head_makes_every_head_kind_including_mlm():
    from fisherlab.models import ADDABLE_HEADS, add_head
    from fisherlab.tiny import tiny_adapter_model

    model = tiny_adapter_model("bert", task_module=None, head="mlm", task="lm")
    assert model.heads["lm"].config["head_type"] == "masked_lm"
    for kind in ADDABLE_HEADS:
        add_head(model, f"h_{kind}", kind, num_labels=4, num_choices=3)
    assert {f"h_{kind}" for kind in ADDABLE_HEADS} <= set(model.heads.keys())
    with pytest.raises(MadxError, match="add_head: head 'regression' unknown"):
        add_head(model, "x", "regression")
