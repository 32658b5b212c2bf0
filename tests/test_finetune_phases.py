"""The four phases of a fine-tuning trial, each called on its own (no Ray), and grid.archs."""

from __future__ import annotations

import numpy as np
import pytest

from raystudy.config import load_config
from raystudy.data.prepare import LabeledPool
from raystudy.data.splits import make_split
from raystudy.grid import Cell, plan_grid
from raystudy.results import read_table
from raystudy.training.finetune import FinetuneContext, evaluate_trial, setup_trial, train_trial, write_trial

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_context(tmp_path, *overrides: str) -> tuple[FinetuneContext, Cell]:
    cfg = load_config(
        preset="smoke",
        overrides=[
            "grid.models=[baseline]",
            "model.classifier_hidden_dim=16",
            "finetune.epochs=2",
            "finetune.batch_size=8",
            "finetune.augment={resize: 24, crop_size: 16}",
            "finetune.eval_batch_size=16",
            "embeddings.models=[baseline]",
            "embeddings.category_set=4cat",
            "embeddings.sizes=[16]",
            *overrides,
        ],
    )
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(40, 24, 24), dtype=np.uint8)  # (N, S, S)
    labels = np.arange(40) % 4
    pool = LabeledPool(indices=np.arange(40), labels=labels, categories=["a", "b", "c", "d"])
    split = make_split(labels, 16, 0, 2, "paper", 0, "4cat")
    context = FinetuneContext(
        cfg=cfg,
        config_hash=cfg.config_hash(),
        run_dir=str(tmp_path),
        images_ref=images,
        pools={"4cat": pool},
        generalization=None,
        splits={("4cat", 16, 0): split},
        image_ids=np.array([f"img{i}" for i in range(40)]),
        runnable_sizes={"4cat": [16]},
    )
    return context, Cell("baseline", "4cat", 4, 16, 0, "resnet18", "resnet18")


def test_each_phase_can_be_called_alone(tmp_path):
    context, cell = tiny_context(tmp_path)
    setup = setup_trial(cell, context)
    assert setup.start_epoch == 0 and [s for s, _ in setup.embeddings] == ["before_pretraining", "after_pretraining"]
    reports = []
    seconds = train_trial(setup, reports.append)
    assert [r["epoch"] for r in reports] == list(range(setup.trainer.epochs)) and seconds > 0
    ev = evaluate_trial(setup, context, seconds)
    assert 0.0 <= ev.validation.overall_accuracy <= 1.0
    assert ev.confusion["count"].sum() == len(setup.val_rows)
    assert set(ev.embeddings["stage"]) == {"before_pretraining", "after_pretraining", "after_finetuning"}
    row = write_trial(setup, ev, context)
    trials = read_table(tmp_path, "trials")
    assert trials["cell_id"].tolist() == [cell.cell_id] == ["baseline-4cat-n16-f0"]
    assert trials["arch"].tolist() == ["resnet18"] and row["status"] == "done"
    assert set(read_table(tmp_path, "per_class")["arch"]) == {"resnet18"}
    assert setup_trial(cell, context) is None  # idempotent: the result exists


def test_train_phase_injects_a_failure_once(tmp_path):
    from test_finetune_checkpoint import FolderReport

    context, cell = tiny_context(tmp_path, "finetune.checkpoint_every_s=0")
    setup = setup_trial(cell, context)
    with pytest.raises(RuntimeError, match="injected failure"):
        train_trial(setup, FolderReport(tmp_path, cell.cell_id), inject_failure=(cell.cell_id, 0))
    resumed = setup_trial(cell, context)
    assert resumed.start_epoch == 1  # continues after the checkpointed epoch
    train_trial(
        resumed, FolderReport(tmp_path, cell.cell_id, "study-20260102-000000"), inject_failure=(cell.cell_id, 0)
    )  # does not raise twice


def test_archs_axis_pairs_cells_and_pretrains_per_arch(tmp_path):
    from raystudy.sweep import plan_jobs

    cfg = load_config(
        preset="smoke",
        overrides=["grid.archs=[resnet18, resnet34]", "grid.models=[moco, baseline]", "grid.sizes={4cat: [40]}"],
    )
    planned = plan_grid(cfg, {"4cat": np.arange(120) % 4})
    ids = sorted(p.cell.cell_id for p in planned)
    assert ids == sorted(
        f"{m}-4cat-n40-f{f}" for m in ("moco", "baseline", "moco-resnet34", "baseline-resnet34") for f in (0, 1)
    )
    by_key = {}
    for p in planned:  # every (set, size, fold) has one split shared by all models and archs
        by_key.setdefault((p.cell.train_size, p.cell.fold), []).append(p.split.train.tolist())
    assert all(all(s == splits[0] for s in splits) for splits in by_key.values())
    jobs = plan_jobs(cfg, tmp_path, planned)
    assert [(j.model, j.arch, j.name) for j in jobs if j.kind == "pretrain"] == [
        ("moco", "resnet18", "moco"),
        ("moco", "resnet34", "moco-resnet34"),
    ]
    cells = {j.cell.cell_id: j.needs for j in jobs if j.kind == "cell"}
    assert cells["moco-resnet34-4cat-n40-f0"] == "moco-resnet34" and cells["baseline-resnet34-4cat-n40-f0"] is None
    assert load_config(preset="smoke").grid.archs == ["resnet18"]  # default: the model's one arch
