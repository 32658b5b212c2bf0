"""Shared fixtures: one local Ray instance and one smoke study per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread: OpenMP spin-waits make tiny CPU models 10x slower on a busy 2-core box."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def ray_instance():
    """A real local Ray instance, shared by every end-to-end test."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)  # never a stray cluster
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def smoke_run(ray_instance, tmp_path_factory) -> Path:
    """The smoke preset, run once end to end; tests assert on its run folder."""
    from raystudy.config import load_config
    from raystudy.study import run_study

    run_dir = tmp_path_factory.mktemp("smoke") / "run"
    run_study(load_config(preset="smoke"), run_dir)
    return run_dir


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A local S3 API (moto's server on a free port; no network): yields (endpoint, env).

    ``env`` holds the AWS_* variables a client (or a driver subprocess) needs; the bucket
    ``raystudy`` exists.
    """
    import socket
    import subprocess
    import sys
    import time

    pytest.importorskip("moto.server", reason="moto[server] is a test extra: pip install -e .[test]")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
    )
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    endpoint = f"127.0.0.1:{port}"
    try:
        import pyarrow.fs as pafs

        deadline = time.time() + 60
        while True:
            try:
                fs = pafs.S3FileSystem(endpoint_override=endpoint, scheme="http", allow_bucket_creation=True)
                fs.create_dir("raystudy")
                break
            except OSError as err:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"moto server did not start: {log.read_text()[-2000:]}") from err
                time.sleep(0.3)
        yield endpoint, env
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
