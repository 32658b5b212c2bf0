"""What a tracker logs, read from the result store: a cell's or a pretraining run's tags, params and metrics.

The records are built from what the study already wrote (the ``trials``, ``losses``, ``pretraining``
and ``probes`` tables), so logging needs nothing from the trials themselves and works wherever
they ran.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from raystudy import registry
from raystudy.config import StudyConfig
from raystudy.results import read_result
from raystudy.storage import Location

# the tags that let a tracker group the folds of one configuration (every key of a cell but its fold, plus the fold)
CELL_TAGS = ("category_set", "train_size", "fold", "model", "arch", "selection", "protocol", "config_hash")
CELL_METRICS = ("overall_accuracy", "macro_f1", "generalization_accuracy", "train_accuracy", "steps", "train_seconds")
CELL_PARAMS = ("seed", "n_train", "n_validation", "epochs", "batch_size", "stop_reason", "init", "device")
PRETRAIN_METRICS = ("final_loss", "seconds", "images_per_s", "no_learning_loss", "restarts")
PROBE_METRICS = ("knn_accuracy", "linear_probe_accuracy")
KIND_TAG, KEY_TAG = "raystudy.kind", "raystudy.key"  # what a run is (study, cell, pretrain) and which one


@dataclass
class RunRecord:
    """One tracker run: ``key`` finds it again (``cell:<cell_id>``, ``pretrain:<name>``)."""

    key: str
    name: str
    kind: str
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]
    series: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # metric -> (epoch, value)
    failed: str | None = None  # the error of a failed cell


def flat(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested settings as dotted keys with text values (``finetune.augment.crop_size``)."""
    out: dict[str, str] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flat(value, f"{dotted}."))
        else:
            out[dotted] = str(value)
    return out


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, str):
        return None
    number = float(value)
    return None if math.isnan(number) else number


def _numbers(row: pd.Series, names: tuple[str, ...]) -> dict[str, float]:
    values = {name: _number(row.get(name)) for name in names}
    return {name: v for name, v in values.items() if v is not None}


def epoch_means(losses: pd.DataFrame | None) -> list[tuple[int, float]]:
    """The mean per-step loss of each epoch, as (epoch, loss)."""
    if losses is None or losses.empty:
        return []
    means = losses.groupby("epoch")["loss"].mean()
    return [(int(epoch), float(loss)) for epoch, loss in means.items()]


def configuration(row: pd.Series) -> str:
    """A cell's configuration without its fold: the folds of one configuration share it."""
    return "/".join(str(row[k]) for k in ("model", "arch", "category_set", "train_size", "selection", "protocol"))


def cell_record(cfg: StudyConfig, run: Location, row: pd.Series) -> RunRecord:
    """The run of one cell from its ``trials`` row and its ``losses`` file."""
    hashed = cfg.to_dict(hashed_only=True)
    row = row.copy()
    row["selection"] = row.get("selection") or "random"  # null in runs older than the selection axis
    tags = {k: str(row[k]) for k in CELL_TAGS}
    tags.update({"configuration": configuration(row), "cell_id": str(row["cell_id"]), "status": str(row["status"])})
    params = {**flat(hashed["finetune"], "finetune."), **flat(hashed["model"], "model.")}
    params.update({k: str(row[k]) for k in CELL_PARAMS if row.get(k) is not None})
    failed = str(row["message"]) if row["status"] == "failed" else None
    return RunRecord(
        key=f"cell:{row['cell_id']}",
        name=str(row["cell_id"]),
        kind="cell",
        tags=tags,
        params=params,
        metrics=_numbers(row, CELL_METRICS),
        series={"train_loss": epoch_means(read_result(run, "losses", str(row["cell_id"])))},
        failed=failed,
    )


def pretraining_record(cfg: StudyConfig, run: Location, name: str) -> RunRecord | None:
    """The run of one pretraining (``name``: ``moco``, ``moco-resnet34``) with its probes; None before it ends."""
    table = read_result(run, "pretraining", name)
    if table is None or table.empty:
        return None
    row = table.iloc[0]
    method = str(row["model"])
    pretrain = {
        k: v for k, v in cfg.to_dict(hashed_only=True)["pretrain"].items() if k not in registry.methods() or k == method
    }
    params = flat(pretrain, "pretrain.")
    params.update({k: str(row[k]) for k in ("n_images", "batch_size", "world_size", "device")})
    return RunRecord(
        key=f"pretrain:{name}",
        name=f"pretrain-{name}",
        kind="pretrain",
        tags={"model": method, "arch": str(row["arch"]), "config_hash": cfg.config_hash()},
        params=params,
        metrics=_numbers(row, PRETRAIN_METRICS + PROBE_METRICS),
        series={"loss": epoch_means(read_result(run, "losses", f"pretrain-{name}"))},
    )


def probe_metrics(run: Location, name: str) -> dict[str, float]:
    """The kNN and linear-probe accuracy of probe ``name`` (a pretraining run, ``random_init``, ``pretrain_init``)."""
    table = read_result(run, "probes", name)
    if table is None or table.empty:
        return {}
    return _numbers(table.iloc[0], PROBE_METRICS)


def study_params(cfg: StudyConfig) -> dict[str, str]:
    """The parent run's params: what the study is (the grid and its seed), not every setting."""
    g = cfg.grid
    return {
        "study": cfg.name,
        "seed": str(cfg.seed),
        "config_hash": cfg.config_hash(),
        "grid.models": str(g.models),
        "grid.archs": str(g.archs),
        "grid.sizes": str(g.sizes),
        "grid.folds": str(g.folds),
        "grid.protocol": g.protocol,
        "grid.selection": str(g.selection),
        "pretrain.methods": str(cfg.pretrain.methods),
        "data.labeled_campaign": cfg.data.labeled_campaign,
    }
