"""A one-GPU workstation (issue 23 item 1): a 4-worker GPU pretraining request never hangs."""

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
