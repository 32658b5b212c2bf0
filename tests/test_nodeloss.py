"""A node holding a pretraining worker is removed after the first checkpoint; the DDP group
restarts (``pretrain.max_failures``) and continues from that checkpoint, not from scratch."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from cluster_driver import run_driver

pytestmark = pytest.mark.e2e


def test_pretraining_resumes_from_its_checkpoint_after_node_loss(tmp_path):
    run_dir = tmp_path / "run"
    res = run_driver("nodeloss_driver.py", run_dir)
    out = res.stdout + res.stderr
    info = json.loads((run_dir / "nodeloss.json").read_text())
    assert info["checkpoints_when_removed"] and not info["finished_when_removed"]  # removed mid-run
    assert len({info["head"], info["removed"], info["replacement"]}) == 3

    assert (run_dir / "encoders" / "moco.pt").is_file()
    row = pd.read_parquet(run_dir / "results" / "pretraining").iloc[0]
    assert row["world_size"] == 2 and row["epochs"] == 4
    assert row["restarts"] >= 1 and 0 <= row["resumed_from_epoch"] < 3  # from a checkpoint, not from scratch
    assert f"pretrain moco: resumed from epoch {row['resumed_from_epoch']} checkpoint" in out

    losses = pd.read_parquet(run_dir / "results" / "losses")
    steps_per_epoch = losses.groupby("epoch")["step"].count()
    assert list(steps_per_epoch.index) == [0, 1, 2, 3]
    assert steps_per_epoch.nunique() == 1  # every epoch has all its steps
    assert sorted(losses["step"]) == list(range(4 * steps_per_epoch.iloc[0]))  # each step exactly once
