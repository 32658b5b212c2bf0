"""A local autoscaling Ray cluster on Ray's fake multi-node provider, for tests.

The head advertises 0 CPUs; a GPU worker type with logical GPUs starts at 0 nodes and
the autoscaler adds worker nodes (local raylets) when work asks for them, exactly as
``ray.cluster_utils.AutoscalingCluster`` does. Unlike it, this one uses free ports
and its own temp folder and never runs ``ray stop`` (other Ray instances on the same
machine are left alone): it ends only the processes it started.

Example:
    with FakeAutoscalingCluster(worker_resources={"CPU": 1, "GPU": 1}, max_workers=2) as cluster:
        subprocess.run([...], env={**os.environ, "RAY_ADDRESS": cluster.address})
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

GPU_WORKER = "gpu_worker"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fake_cluster_config(
    gcs_address: str, worker_resources: dict[str, Any], max_workers: int, idle_timeout_minutes: float
) -> dict[str, Any]:
    """The autoscaler config of the fake multi-node provider (the wheel lacks its example.yaml)."""
    return {
        "cluster_name": "raystudy-fake",
        "max_workers": max_workers,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": idle_timeout_minutes,
        "provider": {
            "type": "fake_multinode",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            "gcs_address": gcs_address,
        },
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
            GPU_WORKER: {
                "resources": dict(worker_resources),
                "node_config": {},
                "min_workers": 0,
                "max_workers": max_workers,
            },
        },
        "head_node_type": "ray.head.default",
        "auth": {"ssh_user": "ubuntu"},
        "docker": {},
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


class FakeAutoscalingCluster:
    """``ray start --head --block`` with the fake provider; ``address`` / ``dashboard_url`` to connect."""

    def __init__(
        self,
        worker_resources: dict[str, Any],
        max_workers: int,
        idle_timeout_minutes: float = 0.1,
        env: dict[str, str] | None = None,
    ) -> None:
        self.temp_dir = Path(tempfile.mkdtemp(prefix="rs-fake-", dir="/tmp"))  # short: socket paths
        self.port, self.dashboard_port = free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.dashboard_url = f"http://127.0.0.1:{self.dashboard_port}"
        self.config = fake_cluster_config(self.address, worker_resources, max_workers, idle_timeout_minutes)
        self.env = {
            **os.environ,
            **(env or {}),
            "RAY_FAKE_CLUSTER": "1",
            "AUTOSCALER_UPDATE_INTERVAL_S": "1",
            "RAY_AUTH_MODE": "token",  # ray start turns token authentication on: drivers need it too
            "RAYSTUDY_AUTOSCALER_CONFIG": str(self.temp_dir / "autoscaler.json"),
        }
        self.env.pop("RAY_ADDRESS", None)
        if not (self.env.get("RAY_AUTH_TOKEN") or self.env.get("RAY_AUTH_TOKEN_PATH")):
            # `ray start` does not generate a token (ray.init does): on a fresh machine no
            # ~/.ray/auth_token exists yet, so the cluster gets its own, which its drivers read
            token_path = self.temp_dir / "auth_token"
            token_path.write_text(secrets.token_hex(32))
            token_path.chmod(0o600)
            self.env["RAY_AUTH_TOKEN_PATH"] = str(token_path)
        self.head: subprocess.Popen | None = None

    def start(self, timeout_s: float = 120.0) -> FakeAutoscalingCluster:
        config_path = Path(self.env["RAYSTUDY_AUTOSCALER_CONFIG"])
        config_path.write_text(json.dumps(self.config))
        cmd = [
            "ray",
            "start",
            "--head",
            "--block",
            f"--port={self.port}",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=0",
            "--num-gpus=0",
            f"--autoscaling-config={config_path}",
            f"--temp-dir={self.temp_dir}",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            "--object-store-memory=300000000",
        ]
        log = open(self.temp_dir / "head.log", "w")
        self.head = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.head.poll() is not None:
                raise RuntimeError(f"ray start exited: {(self.temp_dir / 'head.log').read_text()[-3000:]}")
            if "Ray runtime started" in (self.temp_dir / "head.log").read_text():
                return self
            time.sleep(1)
        raise TimeoutError(f"the fake cluster's head did not start in {timeout_s:.0f}s")

    def nodes(self) -> list[dict[str, Any]]:
        """Every node the cluster has had (``Alive`` says which still run), from a short-lived driver."""
        code = (
            f"import json, ray; ray.init(address={self.address!r}, log_to_driver=False); print(json.dumps(ray.nodes()))"
        )
        out = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-2000:])
        return json.loads(out.stdout.strip().splitlines()[-1])

    def head_id(self) -> str:
        return next(n["NodeID"] for n in self.nodes() if "node:__internal_head__" in n["Resources"])

    def workers(self, alive_only: bool = False) -> list[str]:
        """Node ids of the worker nodes the autoscaler started (alive ones only with ``alive_only``)."""
        return [
            n["NodeID"]
            for n in self.nodes()
            if "node:__internal_head__" not in n["Resources"] and (n["Alive"] or not alive_only)
        ]

    def wait_for_no_workers(self, timeout_s: float) -> bool:
        """True once the autoscaler has removed every idle worker node."""
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if not self.workers(alive_only=True):
                return True
            time.sleep(3)
        return False

    def own_processes(self) -> list[psutil.Process]:
        """Processes of this cluster: the head's process group and anything naming its temp folder."""
        mine = []
        for proc in psutil.process_iter(["pid", "cmdline"]):
            try:
                if str(self.temp_dir) in " ".join(proc.info["cmdline"] or []) or (
                    self.head is not None and os.getpgid(proc.info["pid"]) == self.head.pid
                ):
                    mine.append(proc)
            except (psutil.Error, ProcessLookupError, PermissionError):
                continue
        return mine

    def shutdown(self) -> None:
        if self.head is not None and self.head.poll() is None:
            self.head.send_signal(signal.SIGTERM)  # ray start --block stops what it started
            try:
                self.head.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.head.kill()
        time.sleep(2)
        for proc in self.own_processes():  # worker nodes' raylets, started by the autoscaler
            try:
                proc.kill()
            except psutil.Error:
                pass

    def __enter__(self) -> FakeAutoscalingCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.shutdown()
