"""What ``raystudy advise`` needs from a study, stored in its run location so that advising
needs neither the cluster's data folder nor its initial-weight paths.

``advise/<set>-<encoder>.npz`` per category set and selection encoder (run name): the fp32
embeddings of the set's labeled pool under that encoder (``features``, (L, D)), their category
indices (``labels``), the category names and image ids. The learning curves are fitted from the
``trials`` table, which the run location holds anyway. For a category set with a strategy other
than random, ``results/selection_map/<set>-<encoder>.parquet`` holds a 2-D t-SNE map of those
embeddings, on which the report draws each strategy's picks.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from raystudy.config import StudyConfig
from raystudy.data.prepare import LabeledPool
from raystudy.results import write_table
from raystudy.storage import Location, as_location
from raystudy.training.common import pick_device
from raystudy.training.probes import FrozenEncoder, tsne_2d


def pack_location(run_dir: str | Path | Location, category_set: str, encoder: str) -> Location:
    """Where the labeled-pool embeddings of ``category_set`` under ``encoder`` (a run name) live."""
    return as_location(run_dir) / "advise" / f"{category_set}-{encoder}.npz"


def write_advise_pack(
    cfg: StudyConfig,
    run_dir: str | Path | Location,
    pools: dict[str, LabeledPool],
    images: np.ndarray,
    image_ids: np.ndarray,
    encoder_uri: str,
    encoder: str,
    arch: str,
) -> list[Location]:
    """Embed every study category set's labeled pool with the selection encoder (fp32) and store it.

    Args:
        pools: category set -> its labeled pool (rows of ``images`` and labels).
        images: (N, S, S) uint8, every image of the study; image_ids: (N,) their ids.
        encoder_uri: the encoder checkpoint; encoder: its run name; arch: its backbone.
    """
    torch.set_num_threads(max(1, int(cfg.finetune.cpus_per_trial)))
    frozen = FrozenEncoder(cfg, encoder_uri, arch, pick_device(cfg.finetune.gpus_per_trial), fp32=True)
    written = []
    for name in cfg.grid.sizes:
        pool = pools[name]
        with torch.no_grad():
            features = frozen.embed(images, pool.indices).astype(np.float32)  # (L, D)
        buffer = io.BytesIO()
        np.savez(
            buffer,
            features=features,
            labels=np.asarray(pool.labels, dtype=np.int64),
            categories=np.asarray(pool.categories, dtype=str),
            image_ids=np.asarray(image_ids)[pool.indices].astype(str),
        )
        written.append(pack_location(run_dir, name, encoder).write_bytes(buffer.getvalue()))
        if set(cfg.grid.strategies(name)) - {"random"}:
            rows = map_rows(features, pool, np.asarray(image_ids)[pool.indices], cfg.embeddings.max_points, cfg.seed)
            written.append(
                write_table(
                    run_dir,
                    "selection_map",
                    f"{name}-{encoder}",
                    rows.assign(category_set=name, encoder=encoder, arch=arch),
                )
            )
    return written


def map_rows(
    features: np.ndarray, pool: LabeledPool, image_ids: np.ndarray, max_points: int, seed: int
) -> pd.DataFrame:
    """The 2-D t-SNE map of a labeled pool's selection embeddings, on which the report draws each
    strategy's picks: a seeded subsample of at most ``max_points`` images (every image when the pool
    is that small), with their ids and categories.

    Args:
        features: (L, D) the pool's fp32 embeddings; pool: its labels and category names;
        image_ids: (L,) the pool's ids; max_points: ``embeddings.max_points``; seed: the study's seed.
    """
    rows = np.arange(len(features))
    if len(rows) > max_points:
        rows = np.sort(np.random.default_rng(seed).choice(len(rows), size=max_points, replace=False))
    xy = tsne_2d(features[rows], seed)  # (m, 2)
    labels = np.asarray(pool.labels)[rows]
    return pd.DataFrame(
        {
            "image_id": np.asarray(image_ids)[rows].astype(str),
            "category": np.asarray(pool.categories, dtype=str)[labels],
            "x": xy[:, 0].astype(float),
            "y": xy[:, 1].astype(float),
        }
    )


def read_advise_pack(run_dir: str | Path | Location, category_set: str, encoder: str) -> dict[str, np.ndarray]:
    """The stored embeddings of one set (``features``, ``labels``, ``categories``, ``image_ids``).

    Raises:
        FileNotFoundError: the study stored none (it ran before advise packs, or did not finish).
    """
    where = pack_location(run_dir, category_set, encoder)
    if not where.is_file():
        raise FileNotFoundError(
            f"no stored labeled-pool embeddings at {where.uri}: rerun the study with its config and --out "
            "(finished cells are kept; it adds them), or use --strategy random"
        )
    with np.load(io.BytesIO(where.read_bytes()), allow_pickle=False) as data:
        return {k: data[k] for k in data.files}
