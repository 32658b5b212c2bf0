"""Run a small sweep on a simulated 3-node cluster and remove a worker node mid-sweep.

Used by test_multinode.py in a subprocess (its own Ray cluster, apart from the test session's).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import ray
from cluster_driver import own_cluster

from raystudy.config import load_config
from raystudy.events import read_events
from raystudy.study import run_study


def finished(run_dir: Path) -> int:
    return sum(e["event"] == "finish" for e in read_events(run_dir))


def main(run_dir: Path) -> None:
    cluster = own_cluster(num_cpus=1, num_gpus=0)
    worker_a = cluster.add_node(num_cpus=1, num_gpus=1)
    worker_b = cluster.add_node(num_cpus=1, num_gpus=1)
    ray.init(address=cluster.address)
    cfg = load_config(
        preset="smoke",
        overrides=[
            "grid.models=[baseline]",
            "grid.sizes={4cat: [40, 60]}",
            "grid.folds=4",
            "finetune.epochs=3",
            "finetune.gpus_per_trial=1",  # logical GPUs: one trial per worker node at a time
            "finetune.cpus_per_trial=1",
            "finetune.max_retries=3",
            "pretrain.probe=false",
        ],
    )
    removed = {}

    def remove_when_two_finished() -> None:
        while finished(run_dir) < 2:
            time.sleep(0.2)
        cluster.remove_node(worker_b)
        removed["at"] = finished(run_dir)

    watcher = threading.Thread(target=remove_when_two_finished, daemon=True)
    watcher.start()
    run_study(cfg, run_dir)
    watcher.join(timeout=5)
    json.dump(
        {"removed_after": removed.get("at"), "worker_a": worker_a.node_id, "worker_b": worker_b.node_id},
        open(run_dir / "multinode.json", "w"),
    )
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
