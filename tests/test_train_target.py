"""`fisherlab train --probe_languages` and `fisher:data=target` on the tiny testbed, end to end."""

from __future__ import annotations

from test_train import STEPS, _flags

from fisherlab.analysis import load_runs
from fisherlab.config import parse_config
from fisherlab.runs import read_run
from fisherlab.train import run_training


def test_train_probes_target_languages_and_fun_target_decides(tiny_testbed, tmp_path):
    targets = [lang for lang in tiny_testbed.languages if lang != tiny_testbed.source_language]
    chosen = targets[:2]
    run_dir = tmp_path / "ft"
    strategy = f"fisher:k=3;n_batches=2;data=target;languages={','.join(chosen)};first=fisher"
    config = parse_config(None, _flags(tiny_testbed, run_dir, "--strategy", strategy, "--probe_languages", "all",
                                       "--probe_language_examples", "8", "--probe_language_split", "validation"))
    run_training(config)
    run = read_run(run_dir)
    assert run.problems == [] and run.info["status"] == "completed"
    assert run.info["labels"]["method"] == "fisher_target"
    assert run.info["fisher"]["languages"] == "all" and run.info["fisher"]["language_examples"] == 8
    fisher = run.fisher
    assert sorted(fisher["language"].dropna().unique()) == sorted(targets)
    source = fisher[fisher["language"].isna()]
    for language in targets:
        rows = fisher[fisher["language"] == language]
        assert sorted(set(rows["step"])) == sorted(set(source["step"])) == list(range(0, STEPS + 1, 3))
        assert (rows["n_examples"] == 8).all() and (rows["trace"] >= 0).all()
    # the decisions use the mean target traces: the chosen block has the largest score among the frozen
    frozen = set(run.schedule.iloc[0]["scores"])
    for _, event in run.schedule.sort_values("step").iterrows():
        scores = {b: s for b, s in event["scores"].items() if b in frozen}
        assert event["blocks"][0] == max(scores, key=lambda b: (scores[b], int(b.split(".")[1])))
        frozen -= set(event["blocks"])
    rs = load_runs(tmp_path)
    assert len(rs.target_fisher) == len(fisher) - len(source) and len(rs.fisher) == len(source)
