"""Trials spread over a head and two GPU worker nodes; the sweep finishes after one node is removed."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from cluster_driver import run_driver

from raystudy.events import read_events

pytestmark = pytest.mark.e2e


def test_sweep_spreads_over_nodes_and_survives_node_loss(tmp_path):
    run_dir = tmp_path / "run"
    run_driver("multinode_driver.py", run_dir)
    info = json.loads((run_dir / "multinode.json").read_text())
    assert info["removed_after"] is not None  # the node was removed while the sweep ran
    trials = pd.read_parquet(run_dir / "results" / "trials")
    assert len(trials) == 8 and (trials["status"] == "done").all()
    assert trials["cell_id"].is_unique
    log = read_events(run_dir)
    started_on = {e["node"] for e in log if e["event"] == "start"}
    assert {info["worker_a"], info["worker_b"]} <= started_on  # trials spread over both workers
    assert set(trials["node"]) <= {info["worker_a"], info["worker_b"]}  # none on the CPU-only head
