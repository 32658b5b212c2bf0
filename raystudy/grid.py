"""The study grid: every cell of model types x category sets x train sizes x folds."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from raystudy.config import StudyConfig
from raystudy.data.splits import Split, make_split


@dataclass(frozen=True)
class Cell:
    model: str
    category_set: str
    n_categories: int
    train_size: int
    fold: int

    @property
    def cell_id(self) -> str:
        return f"{self.model}-{self.category_set}-n{self.train_size}-f{self.fold}"

    def to_dict(self) -> dict:
        return {"cell_id": self.cell_id, **asdict(self)}


@dataclass
class PlannedCell:
    cell: Cell
    split: Split | None  # None when skipped
    reason: str | None = None  # why skipped


def plan_grid(cfg: StudyConfig, set_labels: dict[str, np.ndarray]) -> list[PlannedCell]:
    """Plan every cell; ``set_labels[name]`` are the class indices of that set's labeled pool.

    Cells are ordered largest train size first so the sweep's tail is short.
    """
    planned: list[PlannedCell] = []
    for set_name, sizes in cfg.grid.sizes.items():
        labels = set_labels[set_name]
        n_categories = len(cfg.catalog.category_sets[set_name])
        for size in sorted(sizes, reverse=True):
            for fold in range(cfg.grid.folds):
                split = make_split(labels, size, fold, cfg.grid.folds, cfg.grid.protocol, cfg.seed, set_name)
                for model in cfg.grid.models:
                    cell = Cell(model, set_name, n_categories, size, fold)
                    if isinstance(split, str):
                        planned.append(PlannedCell(cell, None, split))
                    else:
                        planned.append(PlannedCell(cell, split))
    return planned


def grid_frame(planned: list[PlannedCell]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {**p.cell.to_dict(), "planned": "skipped" if p.split is None else "run", "reason": p.reason}
            for p in planned
        ]
    )
