"""The images a grid cell trains on: its planned split, with the ``train_size`` training
images chosen by the cell's selection strategy (``grid.selection``)."""

from __future__ import annotations

import numpy as np
import torch

from raystudy.config import StudyConfig
from raystudy.data.splits import Split, derive_seed
from raystudy.grid import Cell, selection_encoder
from raystudy.selection import select
from raystudy.training.probes import FrozenEncoder


def selected_split(
    cfg: StudyConfig,
    cell: Cell,
    split: Split,
    labels: np.ndarray,
    rows: np.ndarray,
    images: np.ndarray,
    encoders: dict[str, str],
    device: torch.device,
) -> Split:
    """The cell's split with its ``train_size`` training images chosen by ``cell.selection``.

    The pool is every labeled image outside the split's validation fold (the holdout
    protocol's training pool); the validation fold is kept, so cells of every strategy are
    validated on the same images. Deterministic from the study seed and the selection
    encoder, so every model type of a (set, size, fold, strategy) trains on the same images.

    Args:
        cfg: the study config (``selection`` knobs, the encoder's arch and transform).
        cell: the grid cell (its set, size, fold, strategy and arch).
        split: the planned split of (set, size, fold).
        labels: (P,) categories of the set's labeled pool; rows: (P,) their rows of ``images``.
        images: (N, S, S) uint8, every image of the study.
        encoders: run name -> encoder checkpoint (``FinetuneContext.encoders``).
        device: where the encoder embeds.
    """
    pool = np.setdiff1d(np.arange(len(labels)), split.validation)
    name = selection_encoder(cfg, cell)

    def features() -> np.ndarray:  # (len(pool), D), only for the strategies that embed
        if name is None:
            raise ValueError(
                f"cell {cell.cell_id}: strategy '{cell.selection}' embeds, but the study has no selection encoder"
            )
        with torch.no_grad():
            return FrozenEncoder(cfg, encoders[name], cell.arch or cfg.model.arch, device).embed(images, rows[pool])

    seed = derive_seed(cfg.seed, cell.category_set, cell.train_size, cell.fold, cell.selection, "select")
    pick = select(
        cell.selection,
        cell.train_size,
        seed,
        labels=labels[pool],
        features=features,
        rounds=cfg.selection.uncertainty_rounds,
        seed_fraction=cfg.selection.uncertainty_seed_fraction,
    )
    return Split(train=np.sort(pool[pick]), validation=split.validation, notes=list(split.notes))
