"""``raystudy plan``: the bill before renting a cluster.

For a study config (any preset, any ``--set``): the cells, the resources each job asks
for, the node types of ``cluster.yaml`` that hold them, the images each job processes
(pretraining: epochs x images; a cell: its epochs x its training images) and the
device-hours at a given throughput, or one measured with ``--calibrate`` (a few timed
training steps of the study's backbone here, on the GPU if there is one).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from raystudy.config import FinetuneConfig, StudyConfig
from raystudy.data.prepare import image_table, synthetic_root
from raystudy.grid import pretrain_jobs
from raystudy.resources import NodeType, holders, pretrain_uses_gpu, study_requests
from raystudy.training.budget import ceiling_budget, cell_budget, pretrain_epochs

PRETRAIN_COST = 3.0  # a pretraining image costs about 3 fine-tuning images (two views, a target pass)


def cell_epochs(f: FinetuneConfig, n_train: int, epochs: int | None = None) -> int:
    """The epochs a cell trains: the stopping rule of ``CellTrainer`` (:func:`cell_budget`).

    Example:
        cell_epochs(FinetuneConfig(epochs=50, min_steps=500, batch_size=64), 102)  # 250
    """
    return cell_budget(f, n_train, epochs).epochs


def train_images(train_size: int, fold: int, folds: int, protocol: str) -> int:
    """Training images of a cell: n less its validation fold (paper protocol), or n (holdout)."""
    if protocol != "paper":
        return train_size
    validation = train_size // folds + (1 if fold < train_size % folds else 0)
    return train_size - validation


@dataclass
class DataCounts:
    """Image counts the plan needs, from the data listing or, before the data exists, the config."""

    pretrain_images: int
    labeled: dict[str, int] | None  # labeled images per category set; None: not known yet
    source: str


def count_images(cfg: StudyConfig) -> DataCounts:
    """Count without decoding: list the data folder or manifest; synthetic: its listing or the config."""

    catalog = cfg.catalog.build()
    if not cfg.data.manifest and not cfg.data.root and not synthetic_root(cfg).is_dir():
        campaigns = cfg.data.synthetic.campaigns
        pretrain = sum(campaigns.get(c, 0) for c in cfg.data.pretrain_campaigns)
        return DataCounts(pretrain, None, "data.synthetic.campaigns (not generated yet: category set pools unknown)")
    table, source = image_table(cfg, catalog)  # the study's own listing (the synthetic set's marker is its own)
    labeled = table[table["campaign"] == cfg.data.labeled_campaign]
    pools = {s: int(labeled["category"].isin(catalog.category_set(s)).sum()) for s in cfg.grid.sizes}
    return DataCounts(int(table["campaign"].isin(cfg.data.pretrain_campaigns).sum()), pools, source)


@dataclass
class CellGroup:
    """The cells of one (category set, train size): every model and fold."""

    category_set: str
    train_size: int
    cells: int
    skipped: bool
    epochs: list[int]  # per fold
    images: int  # images trained by all of its cells
    ceiling: bool = False  # the supervised-ceiling cell of the set


def plan_cells(cfg: StudyConfig, counts: DataCounts) -> list[CellGroup]:
    g, f = cfg.grid, cfg.finetune
    groups = []
    for set_name, sizes in g.sizes.items():
        pool = counts.labeled.get(set_name) if counts.labeled else None
        for n in sorted(sizes, reverse=True):
            skipped = (pool is not None and n > pool) or n < g.folds
            trains = [train_images(n, k, g.folds, g.protocol) for k in range(g.folds)]
            epochs = [cell_epochs(f, t) for t in trains]
            models = (
                len(g.models) * len(g.archs) * len(g.strategies(set_name))
            )  # model types on each backbone, per strategy
            images = 0 if skipped else models * sum(e * t for e, t in zip(epochs, trains, strict=True))
            groups.append(CellGroup(set_name, n, models * g.folds, skipped, epochs, images))
        if g.ceiling_epochs > 0 and pool is not None:  # the supervised ceiling: one baseline cell
            train = train_images(pool, 0, g.folds, "paper")
            e = ceiling_budget(f, g, set_name, train).epochs  # its first cycle (it may train more)
            groups.append(CellGroup(set_name, pool, 1, False, [e], e * train, ceiling=True))
    return groups


@dataclass
class Throughput:
    """Images per second of one fine-tuning trial and of one pretraining worker."""

    finetune: float
    pretrain: float
    how: str


def calibrate(cfg: StudyConfig, steps: int = 3) -> Throughput:
    """Time ``steps`` training steps (after one warm-up step) of the study's backbone here.

    Fine-tuning: the classifier with its augmentation; pretraining: the first method with two
    augmented views. On the GPU at the configured batch sizes, on the CPU at batch 8.
    """
    # deferred: start-up cost (torch); only --calibrate trains
    import torch

    from raystudy.models import Classifier, build_encoder  # deferred: start-up cost (torch)
    from raystudy.training.augment import FinetuneAugment, PretrainAugment  # deferred: start-up cost (torch)
    from raystudy.training.common import augment_kwargs, autocast  # deferred: start-up cost (torch)
    from raystudy.training.pretrain import build_method  # deferred: start-up cost (torch, ray)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    m, f, p = cfg.model, cfg.finetune, cfg.pretrain
    size = cfg.data.image_size

    def images(batch: int) -> torch.Tensor:  # (B, 1, S, S) uint8, like the cached images
        return torch.randint(0, 256, (batch, 1, size, size), dtype=torch.uint8, device=device)

    def timed(step, batch: int) -> float:
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return batch * steps / (time.perf_counter() - t0)

    def finetune_rate() -> float:  # its model and optimizer are freed before pretraining is timed
        batch = f.batch_size if device.type == "cuda" else 8
        encoder, dim = build_encoder(m.arch, m.in_channels)
        model = Classifier(encoder, dim, 19, hidden_dim=m.classifier_hidden_dim).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        aug = f.augment
        tf = FinetuneAugment(
            resize=aug.resize,
            crop_size=aug.crop_size,
            crop_scale=(aug.crop_scale[0], aug.crop_scale[1]),
            flip_p=aug.flip_p,
            out_channels=m.in_channels,
        )
        labels = torch.randint(0, 19, (batch,), device=device)

        def finetune_step() -> None:
            with autocast(device):
                loss = torch.nn.functional.cross_entropy(model(tf(images(batch))).float(), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return timed(finetune_step, batch)

    finetune = finetune_rate()
    if not p.methods:  # no pretraining in this study
        return Throughput(finetune, finetune / PRETRAIN_COST, f"measured here ({device.type}; fine-tuning only)")
    batch = p.batch_size_per_worker if device.type == "cuda" else 8
    method = build_method(p.methods[0], cfg, 100_000, batch).to(device)
    opt = torch.optim.SGD(method.parameters(), lr=0.01, momentum=0.9)
    ptf = PretrainAugment(**augment_kwargs(p.augment, m.in_channels))

    def pretrain_step() -> None:
        x = images(batch)
        with autocast(device):
            loss = method(ptf(x), ptf(x))["loss"].float()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        method.update_momentum(0.99)

    pretrain = timed(pretrain_step, batch)
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    return Throughput(
        finetune,
        pretrain,
        f"measured here ({name}; {m.arch} at {f.augment.crop_size} px, "
        f"{steps} steps of batch {batch}, {p.methods[0]} for pretraining)",
    )


def _hours(images: float, per_s: float) -> float:
    return images / per_s / 3600.0


def format_plan(
    cfg: StudyConfig, node_types: list[NodeType], cluster: str, counts: DataCounts, throughput: Throughput | None
) -> str:
    """The plan as text: cells, requests and where they fit, images, device-hours."""
    use_gpu = pretrain_uses_gpu(cfg, node_types)
    requests = study_requests(cfg, use_gpu)
    groups = plan_cells(cfg, counts)
    run = [g for g in groups if not g.skipped]
    lines = [f"study '{cfg.name}': {cfg.model.arch} at {cfg.finetune.augment.crop_size} px; data: {counts.source}"]
    lines.append(
        f"cells: {sum(g.cells for g in groups)} planned, {sum(g.cells for g in run)} to run "
        f"({len(cfg.grid.models)} models x {len(cfg.grid.archs)} arch(s) x {cfg.grid.folds} folds per size"
        f"{' and selection strategy' if len(cfg.grid.all_strategies()) > 1 else ''}, "
        f"protocol {cfg.grid.protocol})"
    )
    for g in groups:
        state = (
            "skipped (exceeds the pool)"
            if g.skipped
            else f"epochs {'/'.join(map(str, sorted(set(g.epochs))))}, {g.images:,} images"
        )
        ceiling = "  (supervised ceiling: every labeled image)" if g.ceiling else ""
        lines.append(f"  {g.category_set:>6} n={g.train_size:<6} {g.cells:>3} cells  {state}{ceiling}")
    lines.append(f"resources (node types of {cluster}):")
    for r in requests:
        fit = holders(r, node_types)
        where = ", ".join(
            f"{t.name} ({t.holds(r.bundle)} per node, up to {t.holds(r.bundle) * t.max_count} at once)" for t in fit
        )
        lines.append(f"  {r.describe()}: {where or 'NO NODE TYPE HOLDS IT'}")
    runs = [j for j in pretrain_jobs(cfg) if j.model in cfg.grid.models]  # one per method and backbone
    n_pre = counts.pretrain_images
    epochs = {j.name: pretrain_epochs(cfg.pretrain, n_pre, cfg.pretrain.num_workers, j.model) for j in runs}
    pre_images = sum(epochs.values()) * n_pre  # epochs raised by the min_steps that apply
    cell_images = sum(g.images for g in run)
    each = (
        f"{len(runs)} x {next(iter(epochs.values()), 0)} epochs"
        if len(set(epochs.values())) <= 1
        else "(" + " + ".join(f"{name} {e}" for name, e in epochs.items()) + ") epochs"
    )
    lines.append(f"images: pretraining {each} x {n_pre:,} = {pre_images:,}; cells {cell_images:,}")
    if throughput is None:
        lines.append("device-hours: give --images-per-s N (one fine-tuning trial) or --calibrate")
        return "\n".join(lines)
    device = "GPU" if cfg.finetune.gpus_per_trial > 0 else "CPU-trial"
    cell_h = _hours(cell_images, throughput.finetune)
    pre_h = _hours(pre_images, throughput.pretrain)
    gpus = cfg.finetune.gpus_per_trial or 1.0
    lines.append(
        f"throughput: {throughput.finetune:.1f} img/s per fine-tuning trial, {throughput.pretrain:.1f} img/s "
        f"per pretraining worker ({throughput.how})"
    )
    lines.append(
        f"device-hours: pretraining {pre_h:,.1f} {'GPU' if use_gpu else 'CPU-worker'}-h "
        f"({pre_h / cfg.pretrain.num_workers:,.1f} h wall per method on {cfg.pretrain.num_workers} worker(s)); "
        f"cells {cell_h * gpus:,.1f} {device}-h ({cell_h:,.1f} trial-hours); total {pre_h + cell_h * gpus:,.1f}"
    )
    if "measured here (CPU" in throughput.how and (use_gpu or cfg.finetune.gpus_per_trial > 0):
        lines.append(
            "note: measured on a CPU, while the jobs run on GPUs: expect far more images/s there "
            "(run --calibrate on a GPU node, or give --images-per-s)"
        )
    cells = requests[-1]
    at_once = sum(t.holds(cells.bundle) * t.max_count for t in holders(cells, node_types))
    if at_once:
        lines.append(
            f"wall time at the cluster's full size: cells ~{cell_h / at_once:,.1f} h ({at_once} trials at once), "
            "after pretraining; evaluation and node start-up not counted"
        )
    return "\n".join(lines)


def throughput_from(images_per_s: float | None, pretrain_images_per_s: float | None) -> Throughput | None:
    if images_per_s is None:
        return None
    pretrain = pretrain_images_per_s or images_per_s / PRETRAIN_COST
    how = "given" if pretrain_images_per_s else f"given; pretraining taken as 1/{PRETRAIN_COST:g} of it"
    return Throughput(images_per_s, pretrain, how)
