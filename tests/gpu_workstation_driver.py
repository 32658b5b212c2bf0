"""Run the smoke study on a local Ray instance with one logical GPU and a 4-worker GPU request.

Used by test_gpu_workstation.py in a subprocess (its own Ray instance, apart from the test
session's). Writes ``workstation.json`` (the resource warnings) into the run folder.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import ray

from raystudy.config import load_config
from raystudy.study import run_study


class Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("resources:"):
            self.lines.append(record.getMessage())


def main(run_dir: Path) -> None:
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    warnings = Warnings()
    logging.getLogger("raystudy").addHandler(warnings)
    cfg = load_config(
        preset="smoke",
        overrides=[
            "grid.models=[moco, baseline]",
            "grid.sizes={4cat: [40]}",
            "pretrain.num_workers=4",  # a preset written for a 4-GPU node
            "pretrain.cpus_per_worker=1",
            "pretrain.use_gpu=true",
        ],
    )
    run_study(cfg, run_dir)
    (run_dir / "workstation.json").write_text(json.dumps({"warnings": warnings.lines}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
