"""Run the smoke study on a local Ray instance whose one logical GPU an actor holds, so the
pretraining worker group can never start (issue 23 item 1).

Used by test_gpu_workstation.py in a subprocess (its own Ray instance). Each worker-group
start-up waits 2 s (``RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S``, set before Ray starts so the
Train controller inherits it). Writes ``held.json``: how the study ended.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] = "2"

import ray  # noqa: E402 - after the start-up timeout is set, kept with the imports that use it

from raystudy.config import load_config  # noqa: E402 - after the start-up timeout is set
from raystudy.study import run_study  # noqa: E402 - after the start-up timeout is set


@ray.remote(num_gpus=1, num_cpus=0)
class HoldsTheGPU:
    def ready(self) -> bool:
        return True


def main(run_dir: Path) -> None:
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    holder = HoldsTheGPU.remote()
    ray.get(holder.ready.remote())
    cfg = load_config(
        preset="smoke",
        overrides=[
            "grid.models=[moco, baseline]",
            "grid.sizes={4cat: [40]}",
            "pretrain.use_gpu=true",
            "pretrain.start_attempts=2",
        ],
    )
    try:
        run_study(cfg, run_dir)
        ended = "finished"
    except Exception as err:  # the test reads how it ended
        ended = f"{type(err).__name__}: {err}"
    (run_dir / "held.json").write_text(json.dumps({"ended": ended}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
