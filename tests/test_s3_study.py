"""The smoke study on a local S3 API: killed with SIGKILL during the grid, resumed, every cell
exactly once; ``raystudy status`` and ``raystudy report`` work on the S3 location; nothing but
the decoded image cache is written on local disk."""

from __future__ import annotations

import io
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

from raystudy.events import read_events
from raystudy.results import read_table
from raystudy.storage import as_location

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]


def test_smoke_study_on_s3_killed_and_resumed(s3_server, tmp_path, capsys):
    endpoint, aws = s3_server
    uri = f"s3://raystudy/smoke?endpoint_override={endpoint}&scheme=http"
    work, cache = tmp_path / "cwd", tmp_path / "cache"
    work.mkdir()
    env = {**os.environ, **aws, "RAY_ADDRESS": "local", "PYTHONUNBUFFERED": "1", "RAYSTUDY_CACHE": str(cache)}
    # one pretraining method and the baseline on one runnable size (4 cells to run, 4 skipped: 19cat has
    # too few images for n = 1000): one TorchTrainer per driver, the skipped rows written to S3 too
    cmd = [sys.executable, str(ROOT / "studies" / "scaling.py"), "--preset", "smoke", "--out", uri]
    cmd += ["--set", "grid.models=[moco,baseline]", "--set", "grid.sizes={19cat: [1000], 4cat: [40]}"]

    def start() -> tuple[subprocess.Popen, list[str]]:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=work)
        lines: list[str] = []
        threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
        return proc, lines

    def finishes() -> int:
        return sum(e["event"] == "finish" for e in read_events(uri))

    proc, lines = start()
    deadline = time.time() + 600
    while finishes() < 2:  # kill during the grid, after two cells finished
        assert proc.poll() is None, "".join(lines[-40:])
        assert time.time() < deadline, "".join(lines[-40:])
        time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(2)  # let the orphaned Ray instance notice its driver is gone

    proc, lines = start()  # the same command resumes
    assert proc.wait(timeout=900) == 0, "".join(lines[-40:])

    trials = read_table(uri, "trials")
    assert trials["cell_id"].is_unique and len(trials) == 8
    done = set(trials.loc[trials["status"] == "done", "cell_id"])
    assert len(done) == 4 and (trials["status"] != "failed").all()
    finished = Counter(e["cell_id"] for e in read_events(uri) if e["event"] == "finish")
    assert set(finished) == done and max(finished.values()) == 1  # every cell exactly once
    assert (as_location(uri) / "encoders" / "moco.pt").is_file() and (as_location(uri) / "config.yaml").is_file()

    from raystudy.cli import main

    assert main(["status", uri]) == 0
    out = capsys.readouterr().out
    assert "4 done, 0 running, 0 pending, 4 skipped, 0 failed" in out
    assert main(["report", uri]) == 0
    html = (as_location(uri) / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "plotly" in html
    assert (
        pd.read_parquet(io.BytesIO((as_location(uri) / "results" / "grid" / "grid.parquet").read_bytes())).shape[0] == 8
    )

    assert list(work.iterdir()) == []  # nothing written where the command ran
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "cwd"]
    assert any(cache.rglob("*.npy"))  # the decoded images (and the driver's lock): all that is on local disk
    assert {p.suffix for p in cache.rglob("*") if p.is_file()} <= {".npy", ".parquet", ".lock"}
