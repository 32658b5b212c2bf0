"""The driver is killed with SIGKILL at three points of a smoke sweep; rerunning finishes it.

Each driver is a separate process with its own local Ray instance (RAY_ADDRESS=local),
as a user's interrupted command would be.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from raystudy.config import load_config
from raystudy.events import read_events

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
# one pretraining method (MoCo) and the baseline: the kill points need one encoder, and each
# driver then starts one TorchTrainer, not two (the test is about resuming, not about methods)
OVERRIDES = [
    "--set",
    "pretrain.epochs=2",
    "--set",
    "finetune.checkpoint_every_s=0",
    "--set",
    "grid.models=[moco,baseline]",
]


def start_driver(run_dir: Path) -> tuple[subprocess.Popen, list[str]]:
    env = {**os.environ, "RAY_ADDRESS": "local", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, str(ROOT / "studies" / "scaling.py"), "--preset", "smoke", "--out", str(run_dir), *OVERRIDES]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    lines: list[str] = []

    def pump() -> None:
        for line in proc.stdout:
            lines.append(line)

    threading.Thread(target=pump, daemon=True).start()
    return proc, lines


def kill_when(proc: subprocess.Popen, condition, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError("the driver finished before the kill point was reached")
        if condition():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            time.sleep(2)  # let the orphaned Ray instance notice its driver is gone
            return
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("kill point not reached in time")


def events(run_dir: Path) -> list[dict]:
    return read_events(run_dir)


def test_sigkill_at_three_points_then_resume(tmp_path):
    run_dir = tmp_path / "run"

    def finishes() -> int:
        return sum(e["event"] == "finish" for e in events(run_dir))

    # 1. during pretraining, after its first epoch checkpoint (baseline cells run meanwhile)
    proc, _ = start_driver(run_dir)
    kill_when(proc, lambda: any((run_dir / "ray").glob("pretrain-*/checkpoint_*")))
    assert not (run_dir / "encoders" / "moco.pt").exists()
    after_first = finishes()

    # 2. just after a trial finished
    proc, lines = start_driver(run_dir)
    kill_when(proc, lambda: finishes() > after_first)
    finished_before = {e["cell_id"] for e in events(run_dir) if e["event"] == "finish"}

    # 3. in the middle of the grid
    proc, lines = start_driver(run_dir)
    kill_when(
        proc,
        lambda: sum(e["event"] == "finish" for e in events(run_dir)) >= len(finished_before) + 2,
    )

    # rerun to completion
    proc, lines = start_driver(run_dir)
    assert proc.wait(timeout=600) == 0, "".join(lines[-30:])

    cfg = load_config(preset="smoke", overrides=OVERRIDES[1::2])
    trials = pd.read_parquet(run_dir / "results" / "trials")
    assert trials["cell_id"].is_unique
    expected = {
        f"{m}-{s}-n{n}-f{f}"
        for s, sizes in cfg.grid.sizes.items()
        for n in sizes
        for f in range(cfg.grid.folds)
        for m in cfg.grid.models
    }
    assert set(trials["cell_id"]) == expected  # as many results as an uninterrupted run
    assert (trials["status"] != "failed").all()

    # no finished trial was executed again: one finish per cell, no start after it
    log = events(run_dir)
    finishes = Counter(e["cell_id"] for e in log if e["event"] == "finish")
    assert set(finishes) == set(trials.loc[trials["status"] == "done", "cell_id"])
    assert max(finishes.values()) == 1
    finished_at = {e["cell_id"]: e["time"] for e in log if e["event"] == "finish"}
    assert not [e for e in log if e["event"] == "start" and e["time"] > finished_at[e["cell_id"]]]

    # the interrupted pretraining continued from its checkpoint: each step once, both epochs
    losses = pd.read_parquet(run_dir / "results" / "losses")
    steps = losses.loc[losses["run"] == "pretrain-moco", ["epoch", "step"]]
    assert steps["step"].is_unique and set(steps["epoch"]) == {0, 1}
