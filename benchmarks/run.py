"""raystudy against a bare PyTorch loop, side by side in one run on one machine.

    python benchmarks/run.py [--out benchmarks/results/latest.json] [--steps 30]

Prints a table and writes it as JSON. Measured:
- training-step throughput (images/s) of the MoCo and BYOL pretraining step and of the
  fine-tuning step as raystudy runs them (inside Ray Train / Ray Tune, with its batched
  augmentation) against a bare single-process loop with the same model, batch size,
  thread count and precision on pre-augmented tensors (target ratio >= 0.90);
- augmentation throughput on the training device against the training step (target >= 5x);
- per-trial fixed overhead: trial start -> first step, last step -> result written (<= 3 s);
- sweep packing: makespan of 24 mixed-size trials against sum(trial time) / slots (<= 1.15);
- data sharing: images decoded once per study, the array held once in the object store.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from raystudy.config import load_config  # noqa: E402 - after the checkout is put on sys.path
from raystudy.events import read_events  # noqa: E402 - after the checkout is put on sys.path
from raystudy.models import BYOL, Classifier, MoCo, build_encoder  # noqa: E402 - after the checkout is put on sys.path
from raystudy.training.augment import FinetuneAugment, PretrainAugment  # noqa: E402 - after the checkout is put on sys.path
from raystudy.training.lars import LARS, lars_param_groups  # noqa: E402 - after the checkout is put on sys.path

ARCH, CROP, RESIZE = "resnet18", 32, 40
PRETRAIN_BATCH, FINETUNE_BATCH = 64, 32


def timed_steps(step, n_steps: int, batch: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        step()
    t = time.perf_counter()
    for _ in range(n_steps):
        step()
    return n_steps * batch / (time.perf_counter() - t)


def bare_pretrain(method: str, n_steps: int, queue: int) -> float:
    """A bare loop: same model, batch and threads as raystudy's worker, pre-augmented views."""
    torch.manual_seed(0)
    enc, dim = build_encoder(ARCH, 1)
    if method == "moco":
        model = MoCo(enc, dim, proj_hidden_dim=256, proj_dim=64, queue_size=queue, symmetric=False)
    else:
        model = BYOL(enc, dim, proj_hidden_dim=256, proj_dim=64, pred_hidden_dim=256)
    opt = LARS(lars_param_groups(model, 1e-6), lr=0.1, momentum=0.9)
    v1 = torch.randn(PRETRAIN_BATCH, 1, CROP, CROP)
    v2 = torch.randn(PRETRAIN_BATCH, 1, CROP, CROP)

    def step() -> None:
        loss = model(v1, v2)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        model.update_momentum(0.99)

    return timed_steps(step, n_steps, PRETRAIN_BATCH)


def bare_finetune(n_steps: int) -> float:
    torch.manual_seed(0)
    enc, dim = build_encoder(ARCH, 1)
    model = Classifier(enc, dim, 19, hidden_dim=128)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x = torch.randn(FINETUNE_BATCH, 1, CROP, CROP)
    y = torch.randint(0, 19, (FINETUNE_BATCH,))

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return timed_steps(step, n_steps, FINETUNE_BATCH)


def augmentation_rate(n_steps: int) -> dict[str, float]:
    images = torch.randint(0, 255, (PRETRAIN_BATCH, 1, RESIZE, RESIZE), dtype=torch.uint8)
    pre = PretrainAugment(resize=RESIZE, crop_size=CROP)
    fine = FinetuneAugment(resize=RESIZE, crop_size=CROP)
    g = torch.Generator().manual_seed(0)
    return {
        "pretrain_two_views": timed_steps(lambda: (pre(images, g), pre(images, g)), n_steps, PRETRAIN_BATCH),
        "finetune": timed_steps(lambda: fine(images, g), n_steps, PRETRAIN_BATCH),
    }


def bare_loops(queue: int, steps: int) -> dict[str, float]:
    return {
        "moco": bare_pretrain("moco", steps, queue),
        "byol": bare_pretrain("byol", steps, queue),
        "finetune": bare_finetune(steps),
    }


def study_config(overrides: list[str]):
    return load_config(preset="smoke", overrides=overrides)


def raystudy_runs(work: Path, pretrain_epochs: int, steps: int) -> dict:
    """Run raystudy's own pretraining and fine-tuning on the local Ray instance, one at a time."""
    import ray

    from raystudy.data import loading
    from raystudy.data.prepare import prepare_data
    from raystudy.grid import plan_grid
    from raystudy.resources import shrink_to_cluster
    from raystudy.results import read_table
    from raystudy.scheduler import build_context, run_jobs
    from raystudy.sweep import plan_jobs, run_pretraining

    out: dict = {}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    common = [
        "data.synthetic.campaigns={NASCENT19: 1200, NASCENT20: 600, CLOUDLAB: 100}",
        f"pretrain.epochs={pretrain_epochs}",
        f"pretrain.batch_size_per_worker={PRETRAIN_BATCH}",
        "pretrain.probe=false",
    ]
    # pretraining: one method at a time so each gets the same cores as its bare loop
    decodes_before = loading.DECODE_COUNT
    for method in ("moco", "byol"):
        cfg = shrink_to_cluster(study_config(common + [f"pretrain.methods=[{method}]", f"grid.models=[{method}]"]))
        run_dir = work / f"pretrain-{method}"
        data = prepare_data(cfg, work / "cache")
        run_pretraining(cfg, run_dir, data)
        out[f"{method}_pretrain_images_per_s"] = float(read_table(run_dir, "pretraining")["images_per_s"].iloc[0])
        out["queue"] = cfg.pretrain.section("moco").queue_size
    out["decoded_images"] = loading.DECODE_COUNT - decodes_before
    out["images_in_study"] = len(data.images.images)
    out["dataset_mb"] = data.images.images.nbytes / 2**20

    # fine-tuning throughput: two 640-image cells, one at a time (like the bare loop)
    def finetune_grid(
        name: str, sizes: list[int], folds: int, concurrent: int, epochs: int
    ) -> tuple[pd.DataFrame, float]:
        cfg = shrink_to_cluster(
            study_config(
                common
                + [
                    "grid.models=[baseline]",
                    f"grid.sizes={{19cat: {sizes}}}",
                    f"grid.folds={folds}",
                    f"finetune.epochs={epochs}",
                    "finetune.min_steps=0",
                    f"finetune.batch_size={FINETUNE_BATCH}",
                    f"finetune.max_concurrent_trials={concurrent}",
                ]
            )
        )
        run_dir = work / name
        data = prepare_data(cfg, work / "cache")
        planned = plan_grid(cfg, {s: p.labels for s, p in data.pools.items()})
        jobs = plan_jobs(cfg, run_dir, planned)
        context = build_context(cfg, run_dir, data, planned, ray.put(data.images.images))
        t = time.time()
        run_jobs(cfg, run_dir, context, jobs, None)
        log = pd.DataFrame(read_events(run_dir))
        return log, time.time() - t

    log, _ = finetune_grid("throughput", [800], 2, 1, 3)
    last = log[log["event"] == "last_step"]
    out["finetune_images_per_s"] = float(last["images"].sum() / last["seconds"].sum())

    # sweep packing and per-trial overhead: 24 trials of mixed sizes on 2 slots
    log, makespan = finetune_grid("packing", [64, 128, 256, 384, 512, 640], 4, 0, 2)
    wide = log.pivot_table(index="cell_id", columns="event", values="time", aggfunc="first")
    out["trial_start_to_first_step_s"] = float((wide["first_step"] - wide["start"]).median())
    out["trial_last_step_to_written_s"] = float((wide["finish"] - wide["last_step"]).median())
    busy = float((wide["finish"] - wide["start"]).sum())
    span = float(wide["finish"].max() - wide["start"].min())
    out["trials"] = int(len(wide))
    out["sweep_makespan_s"] = makespan  # includes starting the Tuner and its worker processes
    out["sweep_span_s"] = span  # first trial start -> last result written
    out["sweep_packing_ratio"] = span / (busy / 2)
    out["bare"] = bare_loops(out["queue"], steps)  # while Ray is up, so both see the same machine
    ray.shutdown()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "latest.json")
    parser.add_argument("--steps", type=int, default=30, help="timed steps of each bare loop and augmentation")
    parser.add_argument("--pretrain-epochs", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    torch.set_num_threads(1)  # raystudy's CPU workers and trials run one thread per CPU they hold

    with tempfile.TemporaryDirectory() as tmp:
        ours = raystudy_runs(Path(tmp), args.pretrain_epochs, args.steps)
    bare = ours.pop("bare")
    aug = augmentation_rate(args.steps)
    rows = [
        ("MoCo pretraining step (img/s)", ours["moco_pretrain_images_per_s"], bare["moco"], ">= 0.90"),
        ("BYOL pretraining step (img/s)", ours["byol_pretrain_images_per_s"], bare["byol"], ">= 0.90"),
        ("fine-tuning step (img/s)", ours["finetune_images_per_s"], bare["finetune"], ">= 0.90"),
        ("augmentation, 2 views vs MoCo step (img/s)", aug["pretrain_two_views"], bare["moco"], ">= 5"),
        ("augmentation, fine-tune vs step (img/s)", aug["finetune"], bare["finetune"], ">= 5"),
    ]
    table = [
        {"measure": name, "raystudy": round(a, 2), "reference": round(b, 2), "ratio": round(a / b, 3), "target": target}
        for name, a, b, target in rows
    ]
    table += [
        {
            "measure": "trial start -> first step (s, median)",
            "raystudy": round(ours["trial_start_to_first_step_s"], 3),
            "reference": None,
            "ratio": None,
            "target": "<= 3 s",
        },
        {
            "measure": "last step -> result written (s, median)",
            "raystudy": round(ours["trial_last_step_to_written_s"], 3),
            "reference": None,
            "ratio": None,
            "target": "<= 3 s",
        },
        {
            "measure": f"sweep packing, {ours['trials']} trials on 2 slots (span / ideal)",
            "raystudy": round(ours["sweep_span_s"], 1),
            "reference": None,
            "ratio": round(ours["sweep_packing_ratio"], 3),
            "target": "<= 1.15",
        },
        {
            "measure": "sweep makespan incl. Tuner and worker start (s)",
            "raystudy": round(ours["sweep_makespan_s"], 1),
            "reference": None,
            "ratio": None,
            "target": "-",
        },
        {
            "measure": "images decoded per study (of images in study)",
            "raystudy": ours["decoded_images"],
            "reference": ours["images_in_study"],
            "ratio": None,
            "target": "decoded once",
        },
    ]
    machine = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "threads_per_worker": 1,
        "arch": ARCH,
        "crop": CROP,
    }
    print(f"machine: {machine}")
    print(pd.DataFrame(table).to_string(index=False))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "results": table, "raw": ours}, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
