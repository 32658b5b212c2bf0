"""Issue 22 item 2: a pretraining that did not beat its starting weights on the online kNN stops
the study before its CSSL cells, with one message that says what to do; finished cells are kept
and ``pretrain.allow_unlearned`` continues."""

from __future__ import annotations

import pandas as pd
import pytest
from ray.tune.search import Searcher

from raystudy.cli import main
from raystudy.config import load_config
from raystudy.grid import Cell, Job
from raystudy.scheduler import StudySearcher
from raystudy.study import run_study
from raystudy.training.pretrain import unlearned_reason

ROW = {"online_knn_final": 0.76, "online_knn_random_init": 0.86, "online_knn_queries": 128}


def test_an_encoder_below_its_starting_weights_is_named_with_intervals_and_what_to_do():
    cfg = load_config(preset="smoke")
    why = unlearned_reason(cfg, "moco", ROW)
    assert why is not None and why.startswith("pretraining of moco did not beat its starting weights")
    assert "online kNN 0.76 (95 % CI 0.68\u20130.82) vs 0.86 (95 % CI 0.79\u20130.91)" in why  # Wilson, 128 queries
    assert "--set pretrain.allow_unlearned=true" in why and "pretrain.epochs" in why
    # a gain below the margin is not enough; one at or above it is
    assert unlearned_reason(cfg, "moco", {**ROW, "online_knn_final": 0.865}) is not None  # +0.5 < 1 point
    assert unlearned_reason(cfg, "moco", {**ROW, "online_knn_final": 0.88}) is None
    # no online probe: nothing measured, no verdict; allow_unlearned: no gate
    assert unlearned_reason(cfg, "moco", {**ROW, "online_knn_final": None}) is None
    allowed = load_config(preset="smoke", overrides=["pretrain.allow_unlearned=true"])
    assert unlearned_reason(allowed, "moco", ROW) is None
    assert allowed.config_hash() == cfg.config_hash()  # the gate trains nothing


def jobs() -> list[Job]:
    cell = Job("cell", "moco", "resnet18", needs="moco", cell=Cell("moco", "4cat", 4, 8, 0, "resnet18", "resnet18"))
    base = Job("cell", "baseline", "resnet18", cell=Cell("baseline", "4cat", 4, 8, 0, "resnet18", "resnet18"))
    return [Job("pretrain", "moco", "resnet18", name="moco"), cell, base]


def test_the_searcher_hands_out_nothing_once_a_pretraining_did_not_learn():
    s = StudySearcher(jobs(), hold_s=0.0, gate=lambda name: "moco did not learn" if name == "moco" else None)
    assert s.suggest("t1")["kind"] == "pretrain"
    assert s.suggest("t2")["job"].cell.model == "baseline"  # cells without the encoder run meanwhile
    s.on_trial_complete("t1", result={"done": True, "encoder": "/run/encoders/moco.pt"})
    assert s.unlearned == {"moco": "moco did not learn"} and "moco" not in s.encoders
    assert s.suggest("t3") == Searcher.FINISHED
    # a rerun that finds the unlearned encoder on disk stops at once, before any trial
    again = StudySearcher(jobs()[1:], {"moco": "/run/encoders/moco.pt"}, gate=lambda n: "moco did not learn")
    assert again.suggest("t1") == Searcher.FINISHED and again.unlearned


@pytest.mark.e2e
def test_a_study_whose_pretraining_falls_short_stops_before_its_cssl_cells(ray_instance, tmp_path, capsys):
    """The gate on a real study: the margin is set beyond reach (+100 points), as if pretraining
    could not learn; the study stops with exit 2 and the message, no MoCo cell runs, the baseline
    cells that ran are kept; allow_unlearned then continues on the same encoder."""
    run = tmp_path / "run"
    shrink = ["grid.models=[moco, baseline]", "grid.sizes={4cat: [40]}", "finetune.epochs=1"]
    args = ["run", "--preset", "smoke", "--out", str(run)] + [a for s in shrink for a in ("--set", s)]
    assert main([*args, "--set", "pretrain.learn_margin_pp=100"]) == 2
    err = capsys.readouterr().err
    assert err.count("pretraining of moco did not beat its starting weights") == 1
    assert "continue anyway with --set pretrain.allow_unlearned=true" in err
    trials = pd.read_parquet(run / "results" / "trials") if (run / "results" / "trials").exists() else None
    assert trials is None or not (trials["model"] == "moco").any()
    encoder = run / "encoders" / "moco.pt"
    assert encoder.is_file()
    mtime = encoder.stat().st_mtime
    report = run_study(
        load_config(
            preset="smoke", overrides=[*shrink, "pretrain.learn_margin_pp=100", "pretrain.allow_unlearned=true"]
        ),
        run,
    )
    trials = pd.read_parquet(run / "results" / "trials")
    done = trials[trials["status"] == "done"]
    assert sorted(done["model"].unique()) == ["baseline", "moco"] and len(done) == 4
    assert encoder.stat().st_mtime == mtime  # the encoder was not pretrained again
    assert report.is_file()
