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
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def smoke_run(ray_instance, tmp_path_factory) -> Path:
    """The smoke preset, run once end to end; tests assert on its run folder."""
    from raystudy.config import load_config
    from raystudy.sweep import run_study

    run_dir = tmp_path_factory.mktemp("smoke") / "run"
    run_study(load_config(preset="smoke"), run_dir)
    return run_dir
