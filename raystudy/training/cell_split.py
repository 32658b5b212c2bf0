"""The images a grid cell trains on: its planned split, with the ``train_size`` training
images chosen by the cell's selection strategy (``grid.selection``).

A selection is computed once per (category set, n, fold, strategy, arch) by a ``select`` job,
before the cells that read it, with fp32 embeddings of the selection encoder, and stored as
``results/selections/<Cell.selection_key>.parquet`` (the chosen image ids in the order picked).
Every model type of that key, and a resumed cell, reads the same rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from raystudy.config import StudyConfig
from raystudy.data.prepare import LabeledPool
from raystudy.data.splits import Split, derive_seed
from raystudy.grid import Cell, selection_encoder
from raystudy.results import parquet_files, read_parquet, results_dir, write_table
from raystudy.selection import select
from raystudy.storage import Location, as_location
from raystudy.training.common import pick_device
from raystudy.training.probes import FrozenEncoder

SELECTIONS = "selections"


def choose_training_images(
    cfg: StudyConfig,
    cell: Cell,
    split: Split,
    labels: np.ndarray,
    rows: np.ndarray,
    images: np.ndarray,
    encoders: dict[str, str],
    device: torch.device,
) -> np.ndarray:
    """Pool positions (into ``labels``) of the cell's ``train_size`` training images, in the order picked.

    The pool is every labeled image outside the split's validation fold (the holdout
    protocol's training pool); the validation fold is kept, so cells of every strategy are
    validated on the same images. The selection encoder embeds in fp32 (no autocast).

    Args:
        cfg: the study config (``selection`` knobs, the encoder's arch and transform).
        cell: a cell of the selection key (its set, size, fold, strategy and arch).
        split: the planned split of (set, size, fold).
        labels: (P,) categories of the set's labeled pool; rows: (P,) their rows of ``images``.
        images: (N, S, S) uint8, every image of the study.
        encoders: run name -> encoder checkpoint (``Job.refs``).
        device: where the encoder embeds.
    """
    pool = np.setdiff1d(np.arange(len(labels)), split.validation)
    name = selection_encoder(cfg, cell)

    def features() -> np.ndarray:  # (len(pool), D), only for the strategies that embed
        if name is None or name not in encoders:
            raise ValueError(
                f"selection {cell.selection_key}: strategy '{cell.selection}' embeds, but no selection encoder "
                f"reached it ({name}); set selection.encoder"
            )
        with torch.no_grad():
            frozen = FrozenEncoder(cfg, encoders[name], cell.arch or cfg.model.arch, device, fp32=True)
            return frozen.embed(images, rows[pool])

    seed = derive_seed(cfg.seed, cell.category_set, cell.train_size, cell.fold, cell.selection, "select")
    pick = select(
        cell.selection,
        cell.train_size,
        seed,
        labels=labels[pool],
        features=features,
        rounds=cfg.selection.uncertainty_rounds,
        seed_fraction=cfg.selection.uncertainty_seed_fraction,
        n_classes=cell.n_categories,
    )
    return pool[pick]


def store_selection(
    cfg: StudyConfig,
    run_dir: str | Path | Location,
    cell: Cell,
    pool: LabeledPool,
    positions: np.ndarray,
    image_ids: np.ndarray,
) -> Location:
    """Write the selection of ``cell.selection_key`` (``positions`` into ``pool``, in order); returns its file."""
    rows = pool.indices[positions]
    frame = pd.DataFrame(
        {
            "selection_key": cell.selection_key,
            "category_set": cell.category_set,
            "train_size": cell.train_size,
            "fold": cell.fold,
            "selection": cell.selection,
            "arch": cell.arch or cfg.model.arch,
            "encoder": selection_encoder(cfg, cell),
            "rank": np.arange(1, len(rows) + 1),
            "image_id": np.asarray(image_ids)[rows].astype(str),
            "category": [pool.categories[c] for c in pool.labels[positions]],
        }
    )
    return write_table(run_dir, SELECTIONS, cell.selection_key, frame)


def select_and_store(
    cfg: StudyConfig,
    run_dir: str | Path | Location,
    cell: Cell,
    pool: LabeledPool,
    split: Split,
    images: np.ndarray,
    image_ids: np.ndarray,
    encoders: dict[str, str],
) -> tuple[Location, int]:
    """The ``select`` job: choose the key's training images and store them; (its file, how many)."""
    torch.set_num_threads(max(1, int(cfg.finetune.cpus_per_trial)))
    device = pick_device(cfg.finetune.gpus_per_trial)
    positions = choose_training_images(cfg, cell, split, pool.labels, pool.indices, images, encoders, device)
    return store_selection(cfg, run_dir, cell, pool, positions, image_ids), len(positions)


def stored_selections(run_dir: str | Path | Location) -> dict[str, str]:
    """Selection key -> URI of every stored selection of a run."""
    return {f.name.removesuffix(".parquet"): f.uri for f in parquet_files(results_dir(run_dir) / SELECTIONS)}


def stored_split(
    run_dir: str | Path | Location, cell: Cell, split: Split, pool: LabeledPool, image_ids: np.ndarray
) -> Split:
    """The cell's split with the training images its stored selection names (validation fold kept).

    Raises:
        RuntimeError: no selection is stored for the cell's key, or it names images outside the pool.
    """
    where = results_dir(run_dir) / SELECTIONS / f"{cell.selection_key}.parquet"
    if not where.is_file():
        raise RuntimeError(
            f"{cell.cell_id}: no stored selection {where.uri}; its select job did not finish (rerun the study)"
        )
    chosen = read_parquet(as_location(where), columns=["image_id"]).column("image_id").to_numpy(zero_copy_only=False)
    position = {str(image_ids[row]): i for i, row in enumerate(pool.indices)}
    missing = [i for i in chosen if i not in position]
    if missing:
        raise RuntimeError(
            f"{cell.cell_id}: the stored selection {where.uri} names images outside its pool: {missing[:5]}"
        )
    return Split(train=np.sort([position[i] for i in chosen]), validation=split.validation, notes=list(split.notes))
