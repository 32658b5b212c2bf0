"""The smoke grid three times in a row on one Ray instance: no growth in open files,
driver memory or Ray worker processes beyond a stated bound."""

from __future__ import annotations

import os

import psutil
import pytest

from raystudy.config import load_config
from raystudy.study import run_study

pytestmark = pytest.mark.e2e

OVERRIDES = ["grid.models=[baseline]", "grid.sizes={4cat: [40]}", "finetune.epochs=2", "pretrain.probe=false"]
FD_BOUND = 16  # open files
RSS_BOUND_MB = 150  # driver resident memory
WORKER_BOUND = 2  # Ray worker processes


def ray_workers() -> list[psutil.Process]:
    procs = []
    for p in psutil.process_iter(["name", "cmdline"]):
        cmd = " ".join(p.info.get("cmdline") or [])
        if "default_worker.py" in cmd or (p.info.get("name") or "").startswith("ray::"):
            procs.append(p)
    return procs


def test_three_runs_do_not_leak(ray_instance, tmp_path):
    me = psutil.Process()
    samples = []
    for i in range(3):
        run_study(load_config(preset="smoke", overrides=OVERRIDES), tmp_path / f"run{i}")
        samples.append((len(os.listdir("/proc/self/fd")), me.memory_info().rss / 2**20, len(ray_workers())))
    (fd1, rss1, w1), (fd2, rss2, w2), (fd3, rss3, w3) = samples
    # the first run warms caches and starts workers; later runs must stay flat
    assert fd3 - fd2 <= FD_BOUND, samples
    assert rss3 - rss2 <= RSS_BOUND_MB, samples
    assert w3 - w2 <= WORKER_BOUND, samples
