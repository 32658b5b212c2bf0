"""The study on an autoscaling cluster: Ray's fake multi-node provider, then cluster.yaml's node types.

The fake cluster has a head with 0 CPUs and a GPU worker type (1 CPU + 1 logical GPU,
0 to 2 nodes). The smoke study asks 0.5 GPU per cell; run through the driver and then
through ``ray job submit``, each run must make the autoscaler start workers from zero,
run every cell on them (never on the head), shrink nothing and finish. Logical GPUs
have no CUDA behind them: trials say so and record ``device`` = cpu; pretraining runs
on CPU workers (``pretrain.use_gpu=false``: NCCL cannot start without a real GPU).
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from raystudy.config import load_config
from raystudy.data.prepare import synthetic_root
from raystudy.resources import ResourceError, check_fits, fit_resources, load_node_types, started_here, study_requests

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CLUSTER = REPO / "cluster.yaml"
# one pretraining method and the baseline (8 cells): the test is about placement, not methods
STUDY_ARGS = [
    "--set",
    "finetune.gpus_per_trial=0.5",
    "--set",
    "pretrain.use_gpu='false'",
    "--set",
    "grid.models=[moco,baseline]",
]


NO_INITS = ["model.require_init=false"]  # these tests check resource requests; no weights are loaded


def check_run(
    run_dir: Path, output: str, head: str, workers: list[str], temp_dir: Path, cells: int = 8
) -> pd.DataFrame:
    """Every runnable cell done on a worker node; no request shrunk; the CUDA warning written."""
    assert "study 'smoke' finished" in output, output[-3000:]
    assert "a cell (finetune.cpus_per_trial=1, finetune.gpus_per_trial=0.5) asks {CPU: 1, GPU: 0.5}" in output
    assert "->" not in "".join(line for line in output.splitlines() if "resources:" in line)  # nothing shrunk
    trials = pd.read_parquet(run_dir / "results" / "trials")
    done = trials[trials["status"] == "done"]
    assert len(done) == cells and set(trials["status"]) == {"done", "skipped"}
    assert head not in set(done["node"])
    assert set(done["node"]) <= set(workers)
    assert (done["device"] == "cpu").all()  # logical GPUs: the truth is recorded
    worker_logs = " ".join(p.read_text(errors="ignore") for p in temp_dir.rglob("worker-*.err"))
    assert "holds 0.5 GPU but CUDA is absent" in worker_logs
    return done


@pytest.mark.e2e
def test_smoke_study_scales_gpu_workers_from_zero(tmp_path):
    sys.path.insert(0, str(HERE))
    from fake_cluster import FakeAutoscalingCluster

    env = {"PYTHONPATH": str(REPO), "RAY_AIR_NEW_OUTPUT": "0"}
    t0 = time.time()
    with FakeAutoscalingCluster(
        {"CPU": 1, "GPU": 1, "object_store_memory": 300_000_000}, max_workers=2, idle_timeout_minutes=0.25, env=env
    ) as cluster:
        head = cluster.head_id()
        assert cluster.workers() == []  # starts with the head only

        # 0. a request no node type can ever hold fails at once, naming it and the node types
        env_driver = {**cluster.env, "RAY_ADDRESS": cluster.address}
        refused = subprocess.run(
            [
                sys.executable,
                "studies/scaling.py",
                "--preset",
                "smoke",
                "--set",
                "finetune.gpus_per_trial=2",
                "--out",
                str(tmp_path / "refused"),
            ],
            cwd=REPO,
            env=env_driver,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert refused.returncode == 2, refused.stderr[-3000:]
        assert "asks {CPU: 1, GPU: 2}" in refused.stderr and "gpu_worker {CPU: 1, GPU: 1} x2" in refused.stderr
        assert not (tmp_path / "refused").exists()  # nothing left behind

        # 1. the driver, connected to the cluster from outside
        driver = subprocess.run(
            [sys.executable, "studies/scaling.py", "--preset", "smoke", *STUDY_ARGS, "--out", str(tmp_path / "driver")],
            cwd=REPO,
            env=env_driver,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert driver.returncode == 0, driver.stdout[-3000:] + driver.stderr[-3000:]
        first = cluster.workers()  # alive or gone: an idle worker may be replaced mid-run
        assert len(first) >= 1
        t_driver = time.time() - t0
        done = check_run(tmp_path / "driver", driver.stdout + driver.stderr, head, first, cluster.temp_dir)
        assert cluster.wait_for_no_workers(180)  # idle workers go away again

        # 2. ray job submit, relative --config and --data resolved in the working dir, results
        # where --out says. The working dir is given as local://REPO: the fake nodes share one
        # disk, and each new node's runtime-env agent deletes and unpacks an uploaded working dir
        # again (under running processes); on a real cluster every node has its own disk.
        data = synthetic_root(load_config(preset="smoke")).relative_to(REPO)
        job = subprocess.run(
            [
                "ray",
                "job",
                "submit",
                "--address",
                cluster.dashboard_url,
                "--working-dir",
                f"local://{REPO}",
                "--",
                "python",
                "studies/scaling.py",
                "--config",
                "studies/smoke.yaml",
                *STUDY_ARGS,
                "--set",  # the driver's run placed the full grid; the job needs fewer cells to show the same
                "grid.sizes={19cat: [1000], 4cat: [40]}",
                "--data",
                str(data),
                "--out",
                str(tmp_path / "job"),
            ],
            cwd=REPO,
            env=cluster.env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
        second = [w for w in cluster.workers() if w not in first]
        assert len(second) >= 1  # started again from zero
        job_done = check_run(tmp_path / "job", job.stdout + job.stderr, head, second, cluster.temp_dir, cells=4)
    summary = {
        "workers_started": [len(first), len(second)],
        "cells_per_node": [done.groupby("node").size().tolist(), job_done.groupby("node").size().tolist()],
        "driver_run_s": round(t_driver),
        "wall_s": round(time.time() - t0),
    }
    print("autoscaling:", json.dumps(summary))


def test_paper_requests_fit_cluster_yaml_node_types():
    node_types = {t.name: t for t in load_node_types(CLUSTER)}
    head = yaml.safe_load(CLUSTER.read_text())["head_node_type"]
    assert node_types[head].resources == {"CPU": 0.0}  # the head takes no work
    cfg = load_config(preset="paper", overrides=NO_INITS)
    requests = study_requests(cfg, use_gpu=True)
    check_fits(requests, list(node_types.values()), str(CLUSTER))
    for r in requests:
        fitting = [t for t in node_types.values() if t.holds(r.bundle) >= 1]
        assert fitting and head not in [t.name for t in fitting], r.describe()


def test_a_request_no_node_type_holds_fails_naming_both():
    node_types = load_node_types(CLUSTER)
    cfg = load_config(preset="paper", overrides=[*NO_INITS, "finetune.gpus_per_trial=8"])
    with pytest.raises(ResourceError) as err:
        check_fits(study_requests(cfg, use_gpu=True), node_types, str(CLUSTER))
    text = str(err.value)
    assert "finetune.gpus_per_trial=8" in text and "GPU: 8" in text
    assert "gpu_worker {CPU: 48, GPU: 4}" in text and "cluster.yaml" in text
    big = copy.deepcopy(cfg)
    big.finetune.gpus_per_trial = 1
    big.pretrain.num_workers = 1000  # each worker fits, all of them at once cannot
    with pytest.raises(ResourceError, match="hold at most 32 at once"):
        check_fits(study_requests(big, use_gpu=True), node_types, str(CLUSTER))


def test_a_local_instance_is_shrunk_to_fit(ray_instance):
    assert started_here()  # the test session started this instance itself: not a cluster
    with fit_resources(load_config(preset="paper", overrides=NO_INITS)) as cfg:
        assert cfg.finetune.gpus_per_trial == 0 and cfg.finetune.cpus_per_trial <= 2
        assert cfg.pretrain.cpus_per_worker <= 2
