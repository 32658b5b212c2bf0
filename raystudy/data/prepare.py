"""Turn a study config into decoded images and the index sets each stage uses."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raystudy.catalog import Catalog
from raystudy.config import StudyConfig
from raystudy.data.loading import ImageSet, check_campaigns, load_images, read_manifest, scan_folder
from raystudy.data.problems import Problems
from raystudy.data.synthetic import MARKER_NAME, generate_dataset
from raystudy.storage import as_location

log = logging.getLogger("raystudy")

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class LabeledPool:
    """The images of one category set in the labeled (or generalization) campaign."""

    indices: np.ndarray  # rows of ImageSet.images
    labels: np.ndarray  # class index into ``categories``
    categories: list[str]


@dataclass
class StudyData:
    images: ImageSet
    catalog: Catalog
    pools: dict[str, LabeledPool]  # category set -> labeled pool
    generalization: LabeledPool | None
    pretrain_indices: np.ndarray

    def fingerprint(self) -> dict[str, Any]:
        """What identifies the study's images wherever they are kept: a hash of every image's
        campaign, category, file name and size in bytes, with the counts per campaign."""
        idx = self.images.index.sort_values(["campaign", "category", "image_id"])
        h = hashlib.sha256()
        for image_id, category, path in zip(idx["image_id"], idx["category"], idx["path"], strict=True):
            size = os.path.getsize(path) if os.path.isfile(path) else -1
            h.update(f"{image_id}|{category}|{size}\n".encode())
        return {
            "hash": h.hexdigest()[:16],
            "images": len(idx),
            "per_campaign": {str(k): int(v) for k, v in idx["campaign"].value_counts().sort_index().items()},
        }

    def dataset_table(self, cfg: StudyConfig) -> pd.DataFrame:
        """Class counts per campaign and role (Fig. 1)."""
        idx = self.images.index
        roles = {c: ["pretrain"] for c in cfg.data.pretrain_campaigns}
        roles.setdefault(cfg.data.labeled_campaign, []).append("labeled")
        if cfg.data.generalization_campaign:
            roles.setdefault(cfg.data.generalization_campaign, []).append("generalization")
        rows = []
        for (campaign, category), count in idx.groupby(["campaign", "category"]).size().items():
            for role in roles.get(campaign, ["unused"]):
                rows.append({"campaign": campaign, "category": category, "count": int(count), "role": role})
        return pd.DataFrame(rows)


def synthetic_root(cfg: StudyConfig) -> Path:
    spec = json.dumps(
        {"c": cfg.data.synthetic.campaigns, "s": cfg.data.synthetic.image_size, "seed": cfg.data.synthetic.seed},
        sort_keys=True,
    )
    tag = hashlib.sha256(spec.encode()).hexdigest()[:8]
    return REPO_ROOT / "data" / f"synthetic-{cfg.data.synthetic.image_size}px-{tag}"


def image_table(
    cfg: StudyConfig, catalog: Catalog, problems: Problems | None = None, new_categories: bool = False
) -> tuple[pd.DataFrame, str]:
    """List the study's images: a manifest, a data folder, or the synthetic set.

    Args:
        problems: collects what is wrong with the input; None: raise at once.
        new_categories: names outside the catalog become new categories instead of problems.
    """
    if cfg.data.manifest:
        table = read_manifest(Path(cfg.data.manifest), catalog, problems, new_categories)
        return table, f"manifest {cfg.data.manifest}"
    if cfg.data.root:
        return scan_folder(Path(cfg.data.root), catalog, problems, new_categories), f"data folder {cfg.data.root}"
    root = synthetic_root(cfg)
    generate_dataset(
        root,
        campaigns=dict(cfg.data.synthetic.campaigns),
        size=cfg.data.synthetic.image_size,
        seed=cfg.data.synthetic.seed,
    )
    return scan_folder(root, catalog, problems, own_files=frozenset({MARKER_NAME})), f"synthetic data set {root}"


def _pool(index: pd.DataFrame, campaign: str, categories: list[str]) -> LabeledPool:
    lookup = {c: i for i, c in enumerate(categories)}
    mask = (index["campaign"] == campaign) & index["category"].isin(categories)
    rows = np.flatnonzero(mask.to_numpy())
    labels = np.array([lookup[c] for c in index["category"].to_numpy()[rows]], dtype=np.int64)
    return LabeledPool(indices=rows, labels=labels, categories=list(categories))


def check_inits(cfg: StudyConfig, problems: Problems) -> None:
    """Initial-weight checkpoints named in the config must exist."""
    inits = {"model.baseline_init": cfg.model.baseline_weights()}
    inits.update({f"model.pretrain_init.{m}": cfg.model.pretrain_weights(m) for m in cfg.model.pretrain_init})
    for key, path in inits.items():  # None: random weights
        try:
            found = not path or as_location(path).is_file()
        except (OSError, ValueError) as err:  # an unreachable object store, a bad URI
            problems.add(
                "initial weight file(s) not readable",
                f"{key}: {path}: {err}",
                fix="check the URI and the credentials (AWS_* variables for s3://)",
            )
            continue
        if not found:
            problems.add(
                "initial weight file(s) not found",
                f"{key}: {path}",
                fix="give the path of a checkpoint file (e.g. MoCo v2's moco_v2_800ep_pretrain.pth.tar)",
            )


def check_category_sets(cfg: StudyConfig, catalog: Catalog, table: pd.DataFrame, problems: Problems) -> None:
    """Every category set of the grid (and the generalization set) must be held by its campaign."""
    labeled = set(table.loc[table["campaign"] == cfg.data.labeled_campaign, "category"])
    fix = (
        "declare category sets the data hold under catalog.category_sets (with grid.sizes), "
        "or run with --data and no category sets to derive them from the data"
    )
    for set_name in cfg.grid.sizes:
        if len(catalog.category_set(set_name)) < 2:
            problems.add(
                "category set(s) the data lack",
                f"category set '{set_name}' has {len(catalog.category_set(set_name))} category; "
                "a classifier needs at least 2",
                fix=fix,
            )
        absent = [c for c in catalog.category_set(set_name) if c not in labeled]
        if absent:
            problems.add(
                "category set(s) the data lack",
                f"category set '{set_name}' names {absent}, "
                f"which the labeled campaign '{cfg.data.labeled_campaign}' lacks",
                fix=fix,
            )
    gset, gcamp = cfg.data.generalization_category_set, cfg.data.generalization_campaign
    if gcamp and gset:
        held = table[(table["campaign"] == gcamp) & table["category"].isin(catalog.category_set(gset))]
        if held.empty and gcamp in set(table["campaign"]):
            problems.add(
                "category set(s) the data lack",
                f"generalization campaign '{gcamp}' has no images of category set '{gset}'",
                fix="set data.generalization_campaign: null, or data.generalization_category_set to a set it holds",
            )


def listed_images(cfg: StudyConfig, catalog: Catalog, problems: Problems) -> tuple[pd.DataFrame, str]:
    """The images the study uses (path, category, campaign) and where they come from; what is wrong with
    the initial weights, the folders, the campaigns or the category sets goes into ``problems``."""
    check_inits(cfg, problems)
    table, source = image_table(cfg, catalog, problems)
    needed = {"data.labeled_campaign": cfg.data.labeled_campaign}
    for i, c in enumerate(cfg.data.pretrain_campaigns):
        needed[f"data.pretrain_campaigns[{i}]"] = c
    if cfg.data.generalization_campaign:
        needed["data.generalization_campaign"] = cfg.data.generalization_campaign
    if not table.empty:  # an empty table is already a problem of its own
        check_campaigns(table, needed, source, problems)
        check_category_sets(cfg, catalog, table, problems)
    return table[table["campaign"].isin(set(needed.values()))], source


def check_inputs(cfg: StudyConfig, cache_dir: Path) -> None:
    """The cheap checks of :func:`prepare_data` (listing, no decoding), run before Ray starts; when any
    fails, :func:`prepare_data` raises every problem together (unreadable images included)."""
    problems = Problems()
    listed_images(cfg, cfg.catalog.build(), problems)
    if problems:
        prepare_data(cfg, cache_dir)  # raises: the listing found problems


def prepare_data(cfg: StudyConfig, cache_dir: Path) -> StudyData:
    """Find, check and decode the study's images.

    Every problem of every kind (config keys, folders, manifest rows, files) is
    collected and raised in one DataError before anything is trained or written.
    """
    catalog = cfg.catalog.build()
    problems = Problems()
    table, source = listed_images(cfg, catalog, problems)
    images = load_images(table, cfg.data.image_size, cache_dir, problems, where=source)
    index = images.index
    pools = {s: _pool(index, cfg.data.labeled_campaign, list(catalog.category_set(s))) for s in cfg.grid.sizes}
    generalization = None
    gset = cfg.data.generalization_category_set
    if cfg.data.generalization_campaign and gset:
        generalization = _pool(index, cfg.data.generalization_campaign, list(catalog.category_set(gset)))
    pretrain = np.flatnonzero(index["campaign"].isin(cfg.data.pretrain_campaigns).to_numpy())
    log.info("%s: %d images decoded at %d px", source, len(index), cfg.data.image_size)
    return StudyData(
        images=images, catalog=catalog, pools=pools, generalization=generalization, pretrain_indices=pretrain
    )
