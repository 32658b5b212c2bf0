"""Hyperparameter search at one train size, with a Tune search algorithm and early stopping.

``raystudy search --preset demo`` samples the ``search.space`` of the study config
(dotted keys such as ``finetune.base_lr`` or ``pretrain.moco.temperature``), fine-tunes the
``search.model`` at ``search.train_size`` per sample on an inner split of fold
``search.fold``'s training images (:func:`~raystudy.data.splits.inner_split`: the fold's
validation images never choose a value), reports the inner validation accuracy after every
epoch and stops poor samples early (ASHA). Samples
that change ``pretrain.*`` keys first pretrain their own encoder (single process). The
best values land in ``RUN_DIR/search/best.yaml`` (overrides) and
``RUN_DIR/search/best_config.yaml`` (the study config with them applied), which the grid
study takes with ``--config``. Every sample is rebuilt through the config loader, so a
sampled value out of its declared range fails that sample with a ConfigError.
"""

from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from ray import tune

from raystudy.config import ConfigError, StudyConfig, dump_config, load_config
from raystudy.data.prepare import StudyData
from raystudy.data.splits import derive_seed, inner_split, make_split
from raystudy.grid import Cell
from raystudy.registry import BASELINE
from raystudy.runfolder import check_driver_token, write_driver_token
from raystudy.storage import Location
from raystudy.training.common import pick_device, seed_everything
from raystudy.training.finetune import CellTrainer
from raystudy.training.pretrain import run_pretrain_loop
from raystudy.training.shipped import receive_init_weights, ship_init_weights

DISTRIBUTIONS = {
    "loguniform": lambda lo, hi: tune.loguniform(lo, hi),
    "uniform": lambda lo, hi: tune.uniform(lo, hi),
    "randint": lambda lo, hi: tune.randint(lo, hi),
    "choice": lambda *values: tune.choice(list(values)),
}


def search_space(space: dict[str, dict[str, list]]) -> dict[str, Any]:
    """``{"finetune.base_lr": {"loguniform": [1e-3, 1]}}`` -> Tune's search space."""
    out = {}
    for key, spec in space.items():
        if len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
            raise ConfigError(
                f"search.space.{key}: use one of {sorted(DISTRIBUTIONS)}, e.g. {{loguniform: [0.001, 1.0]}}"
            )
        ((kind, args),) = spec.items()
        out[key] = DISTRIBUTIONS[kind](*args)
    return out


def apply_values(cfg: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys in a config dict (a copy)."""
    cfg = copy.deepcopy(cfg)
    for key, value in values.items():
        node = cfg
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        if leaf not in node:
            raise ConfigError(f"search.space: unknown key '{key}'")
        node[leaf] = value
    return cfg


def sample_config(base: StudyConfig, values: dict[str, Any]) -> StudyConfig:
    """The study config with one sample's dotted values, rebuilt and checked by the loader."""
    return load_config(raw=apply_values(base.to_dict(), values))


def pretrain_in_process(cfg: StudyConfig, method: str, images: np.ndarray, out: Path) -> str:
    """Pretrain one encoder in this process (a search sample that changes pretraining keys)."""
    device = pick_device(cfg.finetune.gpus_per_trial)
    state = run_pretrain_loop(cfg, method, images, device)
    path = out / f"{method}.pt"
    torch.save(state["encoder"], path)
    return str(path)


def search_trial(config: dict[str, Any], data: dict[str, Any]) -> None:
    """One search sample: (pretrain,) fine-tune, validation accuracy after every epoch."""
    check_driver_token(data["run_dir"], data["driver_token"])  # a node added later must see the run folder
    cfg = sample_config(data["cfg"], config["values"])
    receive_init_weights(data["init_weights"])  # this node may not see the driver's initial-weight files
    s, f = cfg.search, cfg.finetune
    torch.set_num_threads(max(1, int(f.cpus_per_trial)))
    seed_everything(derive_seed(cfg.seed, "search", s.model))
    device = pick_device(f.gpus_per_trial)
    encoders = dict(data["encoders"])
    with tempfile.TemporaryDirectory() as tmp:
        if s.model != BASELINE and any(k.startswith("pretrain.") for k in config["values"]):
            encoders[s.model] = pretrain_in_process(cfg, s.model, data["images"][data["pretrain_rows"]], Path(tmp))
        pool = data["pool"]
        split = data["split"]
        cell: Cell = data["cell"]
        trainer = CellTrainer(
            cfg,
            cell,
            encoders,
            data["images"],
            pool.indices[split.train],
            pool.labels[split.train],
            len(pool.categories),
            device,
            "search",
        )
        for epoch in range(trainer.epochs):
            loss = trainer.run_epoch(epoch)
            trainer.prepare_evaluation()
            acc = trainer.evaluate(
                pool.indices[split.validation], pool.labels[split.validation], pool.categories
            ).overall_accuracy
            tune.report({"val_accuracy": acc, "loss": loss, "epoch": epoch})


def run_search(cfg: StudyConfig, run_dir: Location, data: StudyData, encoders: dict[str, str]) -> dict[str, Any]:
    """Run the search; write best.yaml and best_config.yaml; return the best values."""
    s = cfg.search
    set_name = s.category_set or next(iter(cfg.grid.sizes))
    pool = data.pools[set_name]
    size = s.train_size or max(n for n in cfg.grid.sizes[set_name] if n <= len(pool.labels))
    outer = make_split(pool.labels, size, s.fold, cfg.grid.folds, cfg.grid.protocol, cfg.seed, set_name)
    if isinstance(outer, str):
        raise ConfigError(f"search.train_size: {outer}")
    # tune on an inner split of the fold's training images: its validation images choose nothing
    split = inner_split(pool.labels, outer, cfg.grid.folds, cfg.seed, set_name, size, s.fold)
    if s.algorithm == "optuna":
        try:
            from ray.tune.search.optuna import OptunaSearch
        except ImportError as err:  # optional dependency
            raise ConfigError("search.algorithm optuna needs `pip install -e .[search]` (optuna)") from err
        algorithm = OptunaSearch(metric="val_accuracy", mode="max", seed=cfg.seed)
    else:
        algorithm = None  # random sampling
    scheduler = (
        tune.schedulers.ASHAScheduler(metric="val_accuracy", mode="max", grace_period=s.grace_period, max_t=10_000)
        if s.scheduler == "asha"
        else None
    )
    f = cfg.finetune
    shared = {
        "cfg": cfg,
        "cell": Cell(s.model, set_name, len(pool.categories), size, s.fold, cfg.model.arch, cfg.model.arch),
        "images": data.images.images,
        "pretrain_rows": data.pretrain_indices,
        "init_weights": ship_init_weights(cfg),
        "run_dir": run_dir.uri,
        "driver_token": write_driver_token(run_dir),
        "pool": pool,
        "split": split,
        "encoders": {m: str(p) for m, p in encoders.items()},
    }
    tuner = tune.Tuner(
        tune.with_parameters(
            tune.with_resources(search_trial, {"cpu": f.cpus_per_trial, "gpu": f.gpus_per_trial}), data=shared
        ),
        param_space={"values": search_space(s.space)},
        tune_config=tune.TuneConfig(
            num_samples=s.num_samples,
            search_alg=algorithm,
            scheduler=scheduler,
            metric=None if scheduler else "val_accuracy",
            mode=None if scheduler else "max",
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=f"search-{time.strftime('%Y%m%d-%H%M%S')}", **(run_dir / "ray").ray_storage(), verbose=0
        ),
    )
    results = tuner.fit()
    rows = []
    for r in results:
        if r.error is None and r.metrics:
            history = r.metrics_dataframe
            best_acc = float(history["val_accuracy"].max()) if "val_accuracy" in history else float("nan")
            rows.append({**r.config["values"], "val_accuracy": best_acc, "epochs_run": len(history)})
    if not rows:
        raise RuntimeError("every search sample failed; see the Tune logs under RUN_DIR/ray")
    table = pd.DataFrame(rows).sort_values("val_accuracy", ascending=False)
    best = {k: (v.item() if hasattr(v, "item") else v) for k, v in table.iloc[0].items() if k in s.space}
    out = run_dir / "search"
    (out / "samples.csv").write_text(table.to_csv(index=False))
    (out / "best.yaml").write_text(
        yaml.safe_dump(
            {
                "train_size": size,
                "model": s.model,
                "tuned_on": (
                    f"an inner split of fold {s.fold}'s {len(outer.train)} training images: "
                    f"{len(split.train)} train, {len(split.validation)} validation (the fold's own "
                    f"{len(outer.validation)} validation images are not used)"
                ),
                "val_accuracy": float(table.iloc[0]["val_accuracy"]),
                "values": best,
            },
            sort_keys=False,
        )
    )
    best_cfg = sample_config(cfg, best)
    dump_config(best_cfg, out / "best_config.yaml")
    print(
        f"search: best val accuracy {table.iloc[0]['val_accuracy']:.3f} with {best}; "
        f"config in {out / 'best_config.yaml'}",
        flush=True,
    )
    return best
