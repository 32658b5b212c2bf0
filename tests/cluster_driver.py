"""Helpers for tests that run a study on a simulated multi-node cluster of their own.

A driver script (``multinode_driver.py``, ``nodeloss_driver.py``) starts the cluster with
:func:`own_cluster` and runs in a subprocess started by :func:`run_driver`, apart from the
test session's shared Ray instance.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def own_cluster(**head_args):
    """A ``ray.cluster_utils.Cluster`` with its head started, named in ``RAY_ADDRESS``.

    Ray Train's placement-group cleaner looks its cluster up through ``RAY_ADDRESS`` (else the
    newest Ray instance on the machine, maybe another's), so the head's port is fixed up front.
    Example: ``cluster = own_cluster(num_cpus=1, num_gpus=0); ray.init(address=cluster.address)``
    """
    import ray
    from ray.cluster_utils import Cluster

    with socket.socket() as s:
        s.bind(("", 0))
        port = s.getsockname()[1]
    os.environ["RAY_ADDRESS"] = f"{ray.util.get_node_ip_address()}:{port}"
    return Cluster(initialize_head=True, head_node_args={**head_args, "gcs_server_port": port})


def run_driver(script: str, run_dir: Path) -> subprocess.CompletedProcess:
    """Run ``tests/<script> RUN_DIR`` in a subprocess (at most 600 s); assert it exits 0."""
    env = {**os.environ, "PYTHONPATH": str(HERE.parent), "RAY_ADDRESS": ""}
    res = subprocess.run(
        [sys.executable, str(HERE / script), str(run_dir)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res
