"""The study grid: every cell of model types x backbones x category sets x train sizes x folds,
and the typed jobs (pretraining, probe, cell) the scheduler hands to Ray Tune."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from itertools import product
from typing import Literal

import numpy as np
import pandas as pd

from raystudy.config import StudyConfig
from raystudy.data.splits import Split, holdout_fold, make_split
from raystudy.registry import BASELINE, embedding_strategy_names


def run_name(model: str, arch: str, default_arch: str) -> str:
    """The name of a model type on one backbone: ``moco`` on the study's own arch, else ``moco-resnet34``.

    It names the encoder file (``encoders/<name>.pt``) and prefixes the cell ids, so a
    single-arch study keeps its names.
    """
    return model if arch == default_arch else f"{model}-{arch}"


@dataclass(frozen=True)
class Cell:
    """One grid cell: a model type on a backbone, fine-tuned on ``train_size`` images of a set."""

    model: str
    category_set: str
    n_categories: int
    train_size: int
    fold: int
    arch: str = ""  # the backbone; "" in hand-made cells: the study's model.arch
    default_arch: str = ""  # the study's model.arch (cell ids of other archs name theirs)
    ceiling: bool = False  # the supervised ceiling: all labeled images of the set, trained long
    selection: str = "random"  # how the train_size images are chosen (grid.selection)

    @property
    def pair_key(self) -> str:
        """What cells paired across model types, archs and selection strategies share: the
        validation fold and the dice.

        Data order, augmentations and the head's initial weights are seeded from it, so a
        paired difference measures the model (or the selected images), not the random draws.
        The strategy is left out on purpose: cells of two strategies differ only in which n
        images they train on.
        """
        return f"{self.category_set}-n{self.train_size}-f{self.fold}"

    @property
    def name(self) -> str:
        """The model type on its backbone (``run_name``)."""
        return run_name(self.model, self.arch or self.default_arch, self.default_arch)

    @property
    def cell_id(self) -> str:
        if self.ceiling:
            return f"{self.name}-{self.category_set}-ceiling"
        chosen = "" if self.selection == "random" else f"-{self.selection}"
        return f"{self.name}-{self.category_set}-n{self.train_size}-f{self.fold}{chosen}"

    @property
    def selection_key(self) -> str:
        """What one stored selection serves: (set, n, fold, strategy, arch), the same for every
        model type, so all of them train on the same images (``results/selections/<key>.parquet``)."""
        return f"{self.category_set}-n{self.train_size}-f{self.fold}-{self.selection}-{self.arch or self.default_arch}"

    def keys(self) -> dict:
        """The cell's key columns in the results tables."""
        d = asdict(self)
        d.pop("default_arch")
        d.pop("ceiling")  # the trials row says it: protocol "ceiling"
        d["arch"] = self.arch or self.default_arch
        return {"cell_id": self.cell_id, **d}


@dataclass(frozen=True)
class Job:
    """One trial of the study experiment.

    ``kind``: ``pretrain`` (``model`` on ``arch``), ``probe`` (an encoder at ``path``;
    ``model`` names it: a method, or ``random_init`` / ``pretrain_init``), ``select`` (the
    training images of ``chooses.selection_key``, stored once for every model type of it),
    ``embed`` (the selection encoder ``needs``'s embeddings of the labeled pools, stored for
    ``raystudy advise``) or ``cell``. ``needs``: the encoder name (``run_name``) the job starts from, which must exist
    before it can start; ``selects_with``: the encoder that embeds the pool for a selection job
    (coreset, typiclust, ...), also needed first; ``selected_by``: the selection key a cell of a
    strategy other than random reads its images from. ``requires`` lists all three. When the
    scheduler releases the job it fills in ``refs`` (name -> URI of each required encoder or
    selection, taken from its producer's result) and, for ``needs``, ``path``.
    """

    kind: Literal["pretrain", "probe", "select", "embed", "cell"]
    model: str
    arch: str
    needs: str | None = None
    cell: Cell | None = None
    path: str | None = None
    name: str = ""  # pretrain / probe: the run name (encoder file stem, table key)
    selects_with: str | None = None
    selected_by: str | None = None
    chooses: Cell | None = None  # select: a cell of the key it selects for
    refs: dict[str, str] | None = field(default=None, compare=False)  # filled in on release

    @property
    def requires(self) -> tuple[str, ...]:
        """Every encoder (run name) or selection (key) that must exist before the job can start."""
        return tuple(dict.fromkeys(e for e in (self.needs, self.selects_with, self.selected_by) if e is not None))

    @property
    def label(self) -> str:
        """How progress lines and Tune trial folders name the job."""
        return self.cell.cell_id if self.cell is not None else f"{self.kind}-{self.name or self.model}"


def selection_job(cfg: StudyConfig, cell: Cell) -> Job:
    """The job that selects (and stores) the training images of ``cell.selection_key``."""
    return Job(
        "select",
        cell.selection,
        cell.arch or cfg.model.arch,
        name=cell.selection_key,
        selects_with=selection_encoder(cfg, cell),
        chooses=cell,
    )


def pretrain_jobs(cfg: StudyConfig) -> list[Job]:
    """Every pretraining run of the study: each method of ``pretrain.methods`` on each arch."""
    return [
        Job("pretrain", m, arch, name=run_name(m, arch, cfg.model.arch))
        for arch in cfg.grid.archs
        for m in cfg.pretrain.methods
    ]


@dataclass
class PlannedCell:
    cell: Cell
    split: Split | None  # None when skipped
    reason: str | None = None  # why skipped


def plan_grid(cfg: StudyConfig, set_labels: dict[str, np.ndarray]) -> list[PlannedCell]:
    """Plan every cell; ``set_labels[name]`` are the class indices of that set's labeled pool.

    Cells are ordered largest train size first so the sweep's tail is short. A cell's
    split depends on (set, size, fold) only, so cells are paired across models, archs and
    selection strategies; a strategy other than random replaces the split's training images
    inside the trial (the validation fold stays, see :mod:`raystudy.selection`).
    """
    planned: list[PlannedCell] = []
    for set_name, sizes in cfg.grid.sizes.items():
        labels = set_labels[set_name]
        n_categories = len(cfg.catalog.category_sets[set_name])
        for size in sorted(sizes, reverse=True):
            for fold in range(cfg.grid.folds):
                split = make_split(labels, size, fold, cfg.grid.folds, cfg.grid.protocol, cfg.seed, set_name)
                for strategy, arch, model in product(cfg.grid.strategies(set_name), cfg.grid.archs, cfg.grid.models):
                    cell = Cell(model, set_name, n_categories, size, fold, arch, cfg.model.arch, selection=strategy)
                    if isinstance(split, str):
                        planned.append(PlannedCell(cell, None, split))
                    else:
                        planned.append(PlannedCell(cell, split))
    if cfg.grid.ceiling_epochs > 0:
        planned = ceiling_cells(cfg, set_labels) + planned
    return planned


def ceiling_cells(cfg: StudyConfig, set_labels: dict[str, np.ndarray]) -> list[PlannedCell]:
    """The supervised ceiling of each category set: a baseline cell trained ``grid.ceiling_epochs``
    epochs on every labeled image outside fold 0 of ``grid.folds``, validated on fold 0.

    Under the ``paper`` protocol the cell is the grid's largest possible size (n = the whole
    pool, CV inside it); under ``holdout`` it trains on fold 0's whole training pool and is
    validated on the same held-out fold as every other fold-0 cell.
    """
    g, out = cfg.grid, []
    for set_name in g.sizes:
        labels = set_labels[set_name]
        n = len(labels)
        if g.protocol == "holdout":
            _, pool, _ = holdout_fold(labels, 0, g.folds, cfg.seed, set_name)
            n = len(pool) if len(pool) >= 2 else n  # fewer than 2: make_split below names why it is skipped
        cell = Cell(
            BASELINE,
            set_name,
            len(cfg.catalog.category_sets[set_name]),
            n,
            0,
            cfg.model.arch,
            cfg.model.arch,
            ceiling=True,
        )
        split = make_split(labels, n, 0, g.folds, g.protocol, cfg.seed, set_name)
        out.append(PlannedCell(cell, None, split) if isinstance(split, str) else PlannedCell(cell, split))
    return out


def needs_encoder(cell: Cell) -> str | None:
    """The pretrained encoder a cell starts from (None for the baseline)."""
    return None if cell.model == BASELINE else cell.name


def selection_encoder(cfg: StudyConfig, cell: Cell) -> str | None:
    """The encoder (run name) that embeds a cell's pool for its selection strategy: the
    ``selection.encoder`` method on the cell's arch, the same for every model type of the cell
    (so paired cells train on the same images); None for strategies that embed nothing."""
    if cell.selection not in embedding_strategy_names() or cfg.selection.encoder is None:
        return None
    return run_name(cfg.selection.encoder, cell.arch or cfg.model.arch, cfg.model.arch)


def grid_frame(planned: list[PlannedCell]) -> pd.DataFrame:
    return pd.DataFrame(
        [{**p.cell.keys(), "planned": "skipped" if p.split is None else "run", "reason": p.reason} for p in planned]
    )
