"""The spec layer: one grammar, registries that coerce/validate/round-trip, one canonical label."""

from __future__ import annotations

import pytest

from fisherlab.errors import FisherlabError
from fisherlab.spec import (
    METHODS,
    REGULARISERS,
    STRATEGIES,
    SpecError,
    describe_regularisers,
    format_spec,
    method_label,
    parse_regularisers,
    parse_spec,
    regulariser_family,
    regulariser_spec,
    split_specs,
    strategy_from_string,
)

# one example per registered name (a new registration must add one: see the coverage test)
STRATEGY_EXAMPLES = {
    "standard": "standard",
    "lpft": "lpft:k=7",
    "gradual": "gradual:k=3",
    "reverse": "reverse:k=3",
    "permutation": "permutation:order=2,0,1;k=4",
    "random": "random:k=5;seed=3;first=random",
    "fisher": "fisher:k=50;estimator=exact;n_batches=4;seed=1;batch_size=8;mode=train;first=fisher",
    "surgical": "surgical:blocks=layer.1,layer.2",
}
REGULARISER_EXAMPLES = {
    "fisher_penalty": "fisher_penalty:alpha=0.05;method=double_backprop;scaled=false;h=0.01;sub_batch=0.5;"
                      "seed=2;output=classification;task_at=theta",
    "consistency": "consistency:view=resegment;weight=2.0;divergence=kl;stop_grad=true;reduction=rowmean;"
                   "dropout=0.2;alpha=0.1;seed=4;max_length=64",
    "l2": "l2:weight=0.1;to=init",
    "mvr": "mvr:weight=0.5;temperature=2.0;ce_share=0.5;output=classification;dropout=0.1;alpha=0.2;seed=3;"
           "max_length=64",
}


def test_every_registered_spec_has_a_round_trip_example():
    assert set(STRATEGY_EXAMPLES) == set(STRATEGIES.names())
    assert set(REGULARISER_EXAMPLES) == set(REGULARISERS.names())


@pytest.mark.parametrize("text", list(STRATEGY_EXAMPLES.values()))
def test_strategy_round_trip(text):
    spec = strategy_from_string(text)
    assert spec.to_string() == text
    assert strategy_from_string(spec.to_string()) == spec == strategy_from_string(spec.to_dict())


@pytest.mark.parametrize("text", list(REGULARISER_EXAMPLES.values()))
def test_regulariser_round_trip(text):
    spec = regulariser_spec(text)
    assert spec.to_string() == text
    assert regulariser_spec(spec.to_string()) == spec == regulariser_spec(spec.to_dict())


@pytest.mark.parametrize("aliases, label", [
    (["fisher_penalty:alpha=0.01", "fisher:alpha=0.01", "fpen:alpha=0.01", "FPEN:alpha=0.01"], "fisher_penalty"),
    (["consistency:view=dropout", "consistency:view=rdrop", "kl:view=r-drop", "consistency:view=dropout;weight=1.0"],
     "consistency/dropout"),
    (["consistency:view=embedding_noise", "consistency:view=r3f", "kl:view=embedding"], "consistency/embedding_noise"),
])
def test_aliases_give_one_canonical_label_and_string(aliases, label):
    specs = [regulariser_spec(a) for a in aliases]
    assert {s.label for s in specs} == {label}
    assert len({s.to_string() for s in specs}) == 1
    assert {regulariser_family(a) for a in aliases} == {label.split("/")[0]}
    assert {method_label("gradual:k=2", [s]) for s in specs} == {f"gradual+{label}"}


def test_several_regularisers_one_grammar():
    joined = "fpen:alpha=0.1;method=double_backprop;kl:view=rdrop;weight=0.5; l2"
    specs = parse_regularisers(joined)
    assert [s.label for s in specs] == ["fisher_penalty", "consistency/dropout", "l2"]
    assert specs[0].method == "double_backprop" and specs[1].weight == 0.5
    assert parse_regularisers([s.to_string() for s in specs]) == specs
    assert parse_regularisers('["l2:weight=1", "fisher:alpha=0.1"]') == [regulariser_spec("l2:weight=1"),
                                                                          regulariser_spec("fpen:alpha=0.1")]
    assert describe_regularisers(specs[:1]) == {"kind": "fisher_penalty", "weight": 0.1,
                                                "terms": [specs[0].to_string()]}
    assert describe_regularisers(specs)["kind"] == "fisher_penalty+consistency/dropout+l2"
    assert describe_regularisers([]) == {"kind": "none", "weight": 0.0, "terms": []}
    assert parse_regularisers(None) == [] and split_specs("  ") == []


def test_grammar_parses_and_formats():
    assert parse_spec("permutation: order=5,4,3 ; k=2") == ("permutation", {"order": "5,4,3", "k": "2"})
    assert format_spec("random", {"k": 5, "seed": None, "flag": True, "order": (1, 0)}) == \
        "random:k=5;flag=true;order=1,0"
    assert split_specs("gradual:k=2;standard") == ["gradual:k=2", "standard"]


@pytest.mark.parametrize("parse, text, message", [
    (regulariser_spec, "fisher_penalty:alpha=0.01,method=finite_difference",
     r"separated by ';' .*write 'fisher_penalty:alpha=0.01;method=finite_difference'"),
    (regulariser_spec, "l2:weight=heavy", r"bad value for key 'weight': expected a number, got 'heavy'"),
    (regulariser_spec, "l2:to=moon", r"key 'to': expected one of zero, init, got 'moon'"),
    (regulariser_spec, "l2:colour=red", r"unknown key 'colour' for 'l2'; allowed keys: weight, to"),
    (regulariser_spec, "sam:rho=1", r"unknown regulariser 'sam'.*\['consistency', 'fisher_penalty', 'l2', 'mvr'\]"),
    (regulariser_spec, "consistency:view=dropout;sigma=1", r"\['sigma'\] belong to other views"),
    (strategy_from_string, "gradual:k=x", r"strategy 'gradual:k=x': bad value for key 'k': expected an integer"),
    (strategy_from_string, "fisher:batch_size=big", r"key 'batch_size': expected an integer or none"),
    (strategy_from_string, "random:k=2;k=3", r"key 'k' given twice"),
    (strategy_from_string, ":k=2", r"'' is not a name"),
    (strategy_from_string, 12, r"must be a string, dict or Strategy"),
])
def test_errors_name_the_key_and_what_is_allowed(parse, text, message):
    with pytest.raises(SpecError, match=message) as info:
        parse(text)
    assert isinstance(info.value, FisherlabError) and isinstance(info.value, ValueError)


def test_methods_give_strategies_and_need_k_from_one_table():
    assert METHODS["fisher"].strategy_string(5, 2, 8) == "fisher:k=5;n_batches=8;seed=2"
    assert METHODS["top_down"].strategy_string(3, 0, 1, order=(2, 1, 0)) == "permutation:order=2,1,0;k=3"
    assert [m for m, spec in METHODS.items() if not spec.uses_k] == ["standard"]
    for method in METHODS.values():
        if method.sweepable:
            strategy_from_string(method.strategy_string(4, 0, 1))  # every preset is a valid strategy
    with pytest.raises(SpecError, match="needs an unfreezing interval"):
        METHODS["gradual"].strategy_string(None, 0, 1)


def test_regulariser_marker_lookup_matches_real_consistency_runs():
    """The regulariser figure's marker table used raw kind names: a real run's kind
    (``consistency/dropout``, as ``fisherlab train`` writes it) never matched ``consistency``."""
    from fisherlab.plots.correlation import REGULARISER_MARKERS, _markers

    kinds = [describe_regularisers(parse_regularisers(s))["kind"]
             for s in ("kl:view=rdrop", "fpen:alpha=0.1", "l2:weight=0.1", None)]
    assert kinds == ["consistency/dropout", "fisher_penalty", "l2", "none"]
    markers = _markers(kinds)
    assert markers == {"consistency/dropout": REGULARISER_MARKERS["consistency"],
                       "fisher_penalty": REGULARISER_MARKERS["fisher_penalty"],
                       "l2": REGULARISER_MARKERS["l2"], "none": REGULARISER_MARKERS["none"]}
    assert len(set(markers.values())) == 4
