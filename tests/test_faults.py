"""A trial that raises is retried from its own checkpoint and the sweep completes."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from raystudy.config import load_config
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
    log = [json.loads(x) for x in (run_dir / "logs" / "trials.jsonl").read_text().splitlines()]
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
