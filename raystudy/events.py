"""The audit log of trial executions: one event per start / resume / finish of a cell.

Each event is one small file (or object) under ``RUN_DIR/logs/trials/``, on every file system:
appends to one shared file from several nodes interleave on a network mount (NFS gives
``O_APPEND`` no atomicity across clients), and object stores cannot append at all. The name
(``<time_ns>-<random>.json``) is unique, so no two writers touch one file. :func:`read_events`
also reads the ``RUN_DIR/logs/trials.jsonl`` of runs made before this layout.

Example:
    >>> log_event(run, "moco-4cat-n40-f0", "start", node="abc")
    >>> [e["event"] for e in read_events(run)]
    ['start']
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from raystudy.storage import Location, as_location


def log_event(run_dir: str | Path | Location, cell_id: str, event: str, **fields: Any) -> None:
    """Record one event of a cell's trial (see the module docstring for where it lands)."""
    run = as_location(run_dir)
    line = json.dumps({"time": time.time(), "cell_id": cell_id, "event": event, "pid": os.getpid(), **fields})
    (run / "logs" / "trials" / f"{time.time_ns()}-{uuid.uuid4().hex[:8]}.json").write_text(line)


def _parse(lines: list[str]) -> list[dict[str, Any]]:
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a crash
            continue
    return out


def read_events(run_dir: str | Path | Location) -> list[dict[str, Any]]:
    """Every recorded event, oldest first."""
    run = as_location(run_dir)
    jsonl = run / "logs" / "trials.jsonl"
    lines = jsonl.read_text().splitlines() if jsonl.is_file() else []
    lines += [obj.read_text() for obj in (run / "logs" / "trials").glob("*.json")]
    return sorted(_parse(lines), key=lambda e: e.get("time", 0.0))
