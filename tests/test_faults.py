"""A trial that raises is retried from its own checkpoint and the sweep completes."""

from __future__ import annotations

import pandas as pd
import pytest

from raystudy.config import load_config
from raystudy.events import read_events
from raystudy.study import run_study

pytestmark = pytest.mark.e2e

OVERRIDES = [
    "grid.models=[baseline]",
    "grid.sizes={4cat: [40]}",
    "finetune.epochs=3",
    "finetune.checkpoint_every_s=0",
    "finetune.max_retries=2",
    "pretrain.probe=false",
]


def test_injected_failure_is_retried_from_checkpoint(ray_instance, tmp_path, monkeypatch):
    monkeypatch.setenv("RAYSTUDY_INJECT_FAILURE", "baseline-4cat-n40-f0@1")
    run_dir = tmp_path / "run"
    run_study(load_config(preset="smoke", overrides=OVERRIDES), run_dir)
    trials = pd.read_parquet(run_dir / "results" / "trials").set_index("cell_id")
    assert set(trials.index) == {"baseline-4cat-n40-f0", "baseline-4cat-n40-f1"}
    assert (trials["status"] == "done").all()
    log = read_events(run_dir)
    mine = [e for e in log if e["cell_id"] == "baseline-4cat-n40-f0" and e["event"] in ("start", "resume", "finish")]
    assert [e["event"] for e in mine] == ["start", "start", "resume", "finish"]
    assert mine[2]["epoch"] == 2  # continued after the checkpoint of epoch 1, not from scratch
    losses = pd.read_parquet(run_dir / "results" / "losses")
    steps = losses.loc[losses["run"] == "baseline-4cat-n40-f0", "step"]
    assert steps.is_unique and steps.min() == 0
    assert not list((run_dir / "checkpoints").glob("*.pt"))  # removed once the result is written


def test_failing_trial_is_marked_failed_and_rerun_completes(ray_instance, tmp_path, monkeypatch):
    monkeypatch.setenv("RAYSTUDY_INJECT_FAILURE", "baseline-4cat-n40-f1@0")
    run_dir = tmp_path / "run"
    cfg = load_config(preset="smoke", overrides=OVERRIDES + ["finetune.max_retries=0"])
    run_study(cfg, run_dir)  # the sweep does not stop at the failure
    trials = pd.read_parquet(run_dir / "results" / "trials").set_index("cell_id")
    assert trials.loc["baseline-4cat-n40-f0", "status"] == "done"
    assert trials.loc["baseline-4cat-n40-f1", "status"] == "failed"
    assert "injected failure" in trials.loc["baseline-4cat-n40-f1", "message"]
    from raystudy.status import format_status

    text = format_status(run_dir)
    assert "1 done, 0 running, 0 pending, 0 skipped, 1 failed" in text
    assert "failed baseline-4cat-n40-f1: " in text and "injected failure" in text

    run_study(cfg, run_dir)  # the rerun retries the failed cell (the injection fires once)
    trials = pd.read_parquet(run_dir / "results" / "trials").set_index("cell_id")
    assert (trials["status"] == "done").all() and len(trials) == 2


def test_a_full_disk_inside_a_trial_stops_the_study_at_once(ray_instance, tmp_path, monkeypatch, capsys):
    """Issue 23 item 12: a trial's write fails for a full disk; the study stops at its first error
    (no retry, no cell after cell failing the same way) with one message naming the device and its
    free space, exit 2, no cell recorded failed; the rerun finishes."""
    from raystudy.cli import main

    monkeypatch.setenv("RAYSTUDY_INJECT_FAILURE", "baseline-4cat-n40-f0@0@disk_full")
    run_dir = tmp_path / "run"
    args = ["run", "--preset", "smoke", "--out", str(run_dir)]
    for o in [*OVERRIDES, "grid.folds=4", "finetune.max_concurrent_trials=1"]:
        args += ["--set", o]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "raystudy: error: no space left on the device holding" in err and "MiB free" in err
    assert "then rerun the same command to resume" in err
    trials = pd.read_parquet(run_dir / "results" / "trials") if (run_dir / "results" / "trials").exists() else None
    assert trials is None or not (trials["status"] == "failed").any()
    starts = [e["cell_id"] for e in read_events(run_dir) if e["event"] == "start"]
    assert starts.count("baseline-4cat-n40-f0") == 1  # not retried into the same full disk
    assert starts[-1] == "baseline-4cat-n40-f0"  # one cell at a time: nothing started after it failed
    assert trials is None or len(trials[trials["status"] == "done"]) == len(starts) - 1
    monkeypatch.delenv("RAYSTUDY_INJECT_FAILURE")
    assert main(args) == 0  # space again: the same command finishes the study
    trials = pd.read_parquet(run_dir / "results" / "trials")
    assert len(trials) == 4 and (trials["status"] == "done").all()
