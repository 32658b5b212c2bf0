"""Encoder probes over pretraining seeds: does a recipe learn, or did one seed get lucky?

    python benchmarks/encoder_seeds.py RUN/config.yaml [--methods byol moco] [--seeds 0 1 2]
        [--set KEY=VALUE ...] [--threads 1]

Reads the resolved config a study saved in its run folder (``RUN/config.yaml``: its data,
fitted to them, included), pretrains each method in this process with the engine's own loop
(:func:`raystudy.training.pretrain.run_pretrain_loop`, no Ray), once per seed, and probes the
frozen encoder exactly as the study does (kNN and linear probe on the study's probe split),
next to the random-initialised encoder. Only the pretraining seed changes (weights, order,
augmentation); the probe split stays the study's. One line per run, then the mean and range
per method::

    python benchmarks/digits_folders.py /tmp/digits
    python studies/scaling.py --data /tmp/digits --out /tmp/dg --set grid.models=[moco,byol,baseline]
    python benchmarks/encoder_seeds.py /tmp/dg/config.yaml --methods byol --seeds 0 1 2

A test split of a few hundred images has a binomial SE of 2-3 pp, and pretraining seeds move
a probe by several points more: judge a recipe by its mean and worst seed, not by one run.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from raystudy.config import load_config
from raystudy.data.prepare import prepare_data
from raystudy.data.splits import derive_seed, kfold
from raystudy.models.encoders import save_checkpoint
from raystudy.scheduler import online_probe_rows
from raystudy.training.common import seed_everything
from raystudy.training.pretrain import run_pretrain_loop
from raystudy.training.probes import probe_encoder


def probe_split(cfg, data) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The study's probe split (:func:`raystudy.scheduler.build_context`): fold 0 of 5 of the first set."""
    set_name = next(iter(cfg.grid.sizes))
    pool = data.pools[set_name]
    vals, _ = kfold(pool.labels, 5, derive_seed(cfg.seed, set_name, "probe"))
    test = np.sort(vals[0])
    train = np.setdiff1d(np.arange(len(pool.labels)), test)
    return pool.indices[train], pool.labels[train], pool.indices[test], pool.labels[test]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", type=Path, help="a run folder's config.yaml")
    ap.add_argument("--methods", nargs="+", default=["byol"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the study's pretrain.cpus_per_worker)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, overrides=args.overrides)
    with tempfile.TemporaryDirectory() as tmp:
        data = prepare_data(cfg, Path(tmp) / "cache")
        images, device = data.images.images, torch.device("cpu")
        split = probe_split(cfg, data)
        random_init = probe_encoder(cfg, None, images, *split)
        print(f"random init: kNN {random_init['knn_accuracy']:.3f}  linear {random_init['linear_probe_accuracy']:.3f}")
        print(f"{'method':8} {'seed':>4} {'kNN':>6} {'linear':>7} {'online kNN':>10} {'seconds':>8}")
        for method in args.methods:
            scores = []
            for seed in args.seeds:
                run_cfg = cfg.model_copy(deep=True)
                run_cfg.seed = cfg.seed + seed  # the pretraining's seed only: the probe split stays
                seed_everything(run_cfg.seed)
                last: dict = {}
                t0 = time.time()
                run_pretrain_loop(
                    run_cfg,
                    method,
                    images,
                    device,
                    rows=data.pretrain_indices,
                    online_probe=online_probe_rows(cfg, data),
                    on_epoch=lambda metrics, state, last=last: last.update(state),
                )
                path = Path(tmp) / f"{method}-{seed}.pt"
                save_checkpoint(last["encoder"], path)
                s = probe_encoder(cfg, str(path), images, *split)
                scores.append((s["knn_accuracy"], s["linear_probe_accuracy"]))
                online = last["online_knn"][-1] if last.get("online_knn") else float("nan")
                print(
                    f"{method:8} {seed:>4} {scores[-1][0]:6.3f} {scores[-1][1]:7.3f} {online:10.2f} "
                    f"{time.time() - t0:8.0f}",
                    flush=True,
                )
            knn, linear = np.array(scores).T
            print(
                f"{method:8} mean {knn.mean():6.3f} {linear.mean():7.3f}   range kNN {knn.min():.3f}-{knn.max():.3f}, "
                f"linear {linear.min():.3f}-{linear.max():.3f}; vs random init "
                f"{100 * (knn.mean() - random_init['knn_accuracy']):+.1f} / "
                f"{100 * (linear.mean() - random_init['linear_probe_accuracy']):+.1f} pp"
            )


if __name__ == "__main__":
    main()
