"""A one-GPU workstation (issue 23 item 1): a 4-worker GPU pretraining request never hangs, and
a worker group that can never start fails its pretraining once, with its reason."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from cluster_driver import run_driver

pytestmark = pytest.mark.e2e


def test_a_four_gpu_request_on_a_one_gpu_instance_finishes_with_one_warning(tmp_path):
    run_dir = tmp_path / "run"
    run_driver("gpu_workstation_driver.py", run_dir)  # asserts exit 0 within 600 s
    warnings = json.loads((run_dir / "workstation.json").read_text())["warnings"]
    assert len(warnings) == 1 and "pretrain.num_workers 4 -> 1" in warnings[0] and "GPU" in warnings[0]
    pretraining = pd.read_parquet(run_dir / "results" / "pretraining")
    assert pretraining["world_size"].tolist() == [1]
    assert pretraining["device"].tolist() == ["cpu"]  # Ray's GPU is logical: torch finds no CUDA here
    trials = pd.read_parquet(run_dir / "results" / "trials")
    done = trials[trials["status"] == "done"]
    assert set(done["model"]) == {"moco", "baseline"} and len(done) == 2 * 2  # 2 folds each


def test_a_pretraining_group_that_never_starts_fails_once_and_its_cells_say_why(tmp_path):
    # an actor holds the instance's one GPU: the request fits the instance but can never start
    run_dir = tmp_path / "run"
    res = run_driver("gpu_held_driver.py", run_dir)
    assert json.loads((run_dir / "held.json").read_text())["ended"] == "finished"  # no hang, no retry loop
    out = res.stdout + res.stderr
    assert out.count("pretrain-moco failed: its worker group of 1 x {CPU: 1, GPU: 1} did not start in") == 1
    trials = pd.read_parquet(run_dir / "results" / "trials")
    moco, baseline = trials[trials["model"] == "moco"], trials[trials["model"] == "baseline"]
    assert (baseline["status"] == "done").all() and len(baseline) == 2
    assert (moco["status"] == "failed").all() and len(moco) == 2
    assert moco["message"].str.contains("pretrain.start_attempts = 2 attempts").all()
    assert moco["message"].str.contains("WorkerGroupStartupTimeoutError").all()
