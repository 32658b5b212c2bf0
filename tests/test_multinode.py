"""Trials spread over a head and two GPU worker nodes; the sweep finishes after one node is removed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.e2e

HERE = Path(__file__).resolve().parent


def test_sweep_spreads_over_nodes_and_survives_node_loss(tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(HERE.parent), "RAY_ADDRESS": ""}
    res = subprocess.run(
        [sys.executable, str(HERE / "multinode_driver.py"), str(run_dir)],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    info = json.loads((run_dir / "multinode.json").read_text())
    assert info["removed_after"] is not None  # the node was removed while the sweep ran
    trials = pd.read_parquet(run_dir / "results" / "trials")
    assert len(trials) == 8 and (trials["status"] == "done").all()
    assert trials["cell_id"].is_unique
    log = [json.loads(x) for x in (run_dir / "logs" / "trials.jsonl").read_text().splitlines()]
    started_on = {e["node"] for e in log if e["event"] == "start"}
    assert {info["worker_a"], info["worker_b"]} <= started_on  # trials spread over both workers
    assert set(trials["node"]) <= {info["worker_a"], info["worker_b"]}  # none on the CPU-only head
