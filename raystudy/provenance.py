"""Facts about a run recorded while it runs: software versions, hardware, seeds, wall time.

``RUN_DIR/run_info.json`` is written atomically at the start of ``run_study`` and
updated at its end; the report reads it (a run folder without it says "not recorded").
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from raystudy.storage import Location, as_location, redact

RUN_INFO = "run_info.json"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else platform.processor())."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def gpu_models() -> list[str]:
    """Names of the visible CUDA devices (empty without torch or CUDA)."""
    try:
        import torch  # deferred: start-up cost, and a run records what it can without torch

        if torch.cuda.is_available():
            return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # a broken driver must not stop a run from recording what it can
        return []
    return []


def collect(seeds: dict[str, int], config_hash: str) -> dict[str, Any]:
    """Software versions, hardware, seeds and config hash of this process's machine.

    Example:
        >>> info = collect({"study": 0}, "abc123def456")
        >>> sorted(info["software"])[:2]
        ['python', 'ray']
    """
    return {
        "software": {
            "python": platform.python_version(),
            "raystudy": _version("raystudy"),
            "torch": _version("torch"),
            "ray": _version("ray"),
        },
        "hardware": {
            "cpu_model": cpu_model(),
            "cpu_cores": os.cpu_count(),
            "gpu_models": gpu_models(),
            "platform": platform.platform(),
            "hostname": platform.node(),
        },
        "seeds": dict(seeds),
        "config_hash": config_hash,
        "command": redact(" ".join([Path(sys.argv[0]).name, *sys.argv[1:]])) if sys.argv else None,
    }


def write_run_info(run_dir: str | Path | Location, info: dict[str, Any]) -> Location:
    """Write ``RUN_DIR/run_info.json`` atomically."""
    return (as_location(run_dir) / RUN_INFO).write_text(json.dumps(info, indent=2, default=str))


def start_run_info(run_dir: str | Path | Location, seeds: dict[str, int], config_hash: str) -> dict[str, Any]:
    """Record the run's facts at its start (wall time still unknown); returns them for :func:`finish_run_info`."""
    info = collect(seeds, config_hash) | {"started_at": time.time(), "finished_at": None, "wall_seconds": None}
    write_run_info(run_dir, info)
    return info


def finish_run_info(run_dir: str | Path | Location, info: dict[str, Any]) -> None:
    """Add the end time and the study's wall time to ``RUN_DIR/run_info.json``."""
    end = time.time()
    write_run_info(run_dir, info | {"finished_at": end, "wall_seconds": end - float(info["started_at"])})


def read_run_info(run_dir: str | Path | Location) -> dict[str, Any] | None:
    """The recorded facts, or None when the run folder has no (readable) ``run_info.json``."""
    path = as_location(run_dir) / RUN_INFO
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None
