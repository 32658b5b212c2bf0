"""Pretrain with two Ray Train workers on two nodes and remove one node after the first checkpoint.

Used by test_nodeloss.py in a subprocess (its own Ray cluster, apart from the test session's).
The head (one CPU) starts alone, so the pretraining trial and its Train controller sit on it; a
one-CPU node joins once the controller is up, so one of the two DDP workers (one CPU each) lands there.
When Ray Train has registered the first epoch checkpoint, that node is removed and a fresh one
added: the group of two restarts (``pretrain.max_failures``) and resumes from the checkpoint.
Writes ``nodeloss.json`` (node ids, the checkpoints when the node went) into the run folder.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import ray
from cluster_driver import own_cluster
from ray.cluster_utils import Cluster
from ray.util.state import list_actors

from raystudy.config import StudyConfig, load_config
from raystudy.data.prepare import prepare_data
from raystudy.sweep import run_pretraining

WAIT_S = 300  # every wait below is bounded


def wait_for(what: str, ready: Callable[[], bool], runner: threading.Thread) -> None:
    """Poll ``ready()`` every 0.1 s while ``runner`` runs; raise after ``WAIT_S``."""
    deadline = time.time() + WAIT_S
    while not ready():
        if time.time() > deadline or not runner.is_alive():
            raise TimeoutError(f"{what}: not seen after {WAIT_S}s or before the pretraining ended")
        time.sleep(0.1)


def read(path: Path) -> str:
    return path.read_text() if path.is_file() else ""


def controller_alive() -> bool:
    return bool(list_actors(filters=[("class_name", "=", "TrainController"), ("state", "=", "ALIVE")]))


def run(cluster: Cluster, cfg: StudyConfig, run_dir: Path) -> None:
    """Pretrain in a thread; add, then remove a node around the first checkpoint."""
    data = prepare_data(cfg, run_dir / "cache")
    train_run = run_dir / "ray" / "pretrain-moco"
    snapshot = train_run / "checkpoint_manager_snapshot.json"  # the controller writes it per registered checkpoint
    info: dict = {"head": cluster.head_node.node_id}
    outcome: dict = {}

    def pretrain() -> None:  # Tune in a thread: Ray adds nodes only from the main thread
        t0 = time.time()
        try:
            run_pretraining(cfg, run_dir, data)
        except BaseException as e:  # noqa: BLE001 - raised again by the main thread
            outcome["error"] = e
        outcome["seconds"] = time.time() - t0

    runner = threading.Thread(target=pretrain, daemon=True)
    runner.start()
    wait_for("the Train controller (on the head, the only node)", controller_alive, runner)
    doomed = cluster.add_node(num_cpus=1, num_gpus=0)
    info["removed"] = doomed.node_id
    wait_for("the first registered checkpoint", lambda: "checkpoint_" in read(snapshot), runner)
    info["checkpoints_when_removed"] = sorted(p.name for p in train_run.glob("checkpoint_*") if p.is_dir())
    info["finished_when_removed"] = (run_dir / "encoders" / "moco.pt").is_file()
    cluster.remove_node(doomed)
    info["replacement"] = cluster.add_node(num_cpus=1, num_gpus=0).node_id
    runner.join(timeout=WAIT_S)
    if runner.is_alive() or "error" in outcome:
        raise RuntimeError(f"pretraining did not finish: {outcome.get('error', 'still running')}")
    info["seconds"] = outcome["seconds"]
    (run_dir / "nodeloss.json").write_text(json.dumps(info))


def describe_node_types(run_dir: Path) -> None:
    """Node types for the driver: nodes join and leave this cluster by hand (no autoscaler),
    and without its node types the driver would fit the study to the lone head it sees."""
    types = {
        "head_node_type": "head",
        "available_node_types": {
            "head": {"resources": {"CPU": 1}},
            "worker": {"resources": {"CPU": 1}, "max_workers": 2},
        },
    }
    path = run_dir.parent / "node_types.json"
    path.write_text(json.dumps(types))
    os.environ["RAYSTUDY_AUTOSCALER_CONFIG"] = str(path)


def main(run_dir: Path) -> None:
    describe_node_types(run_dir)
    cluster = own_cluster(num_cpus=1, num_gpus=0)
    ray.init(address=cluster.address)
    cfg = load_config(
        preset="smoke",
        overrides=[
            "grid.models=[moco, baseline]",
            "pretrain.num_workers=2",
            "pretrain.cpus_per_worker=1",  # nodes of one CPU: one worker per node
            "pretrain.epochs=4",
            "pretrain.probe=false",
        ],
    )
    try:
        run(cluster, cfg, run_dir)
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
