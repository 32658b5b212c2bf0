"""Pretraining's online kNN probe: a labeled slice outside every cell, measured each epoch."""

from __future__ import annotations

import numpy as np
import torch

from raystudy.config import load_config
from raystudy.data.prepare import prepare_data
from raystudy.data.splits import online_probe_slice
from raystudy.grid import plan_grid
from raystudy.scheduler import online_probe_rows
from raystudy.training.pretrain import epoch_line, run_pretrain_loop


def test_online_probe_slice_never_enters_a_cell(tmp_path):
    cfg = load_config(preset="smoke")
    data = prepare_data(cfg, tmp_path / "cache")
    probe = online_probe_rows(cfg, data)
    assert probe is not None
    probe_rows = np.concatenate([probe["bank_rows"], probe["query_rows"]])
    assert len(probe_rows) == min(cfg.pretrain.online_knn_images, len(probe_rows)) > 0
    assert not np.intersect1d(probe["bank_rows"], probe["query_rows"]).size
    cell_rows = [pool.indices for pool in data.pools.values()]  # every row a cell could train or validate on
    for planned in plan_grid(cfg, {s: pool.labels for s, pool in data.pools.items()}):
        if planned.split is not None:
            pool = data.pools[planned.cell.category_set]
            cell_rows += [pool.indices[planned.split.train], pool.indices[planned.split.validation]]
    if data.generalization is not None:
        cell_rows.append(data.generalization.indices)
    assert not np.intersect1d(probe_rows, np.concatenate(cell_rows)).size
    assert set(probe_rows) <= set(data.pretrain_indices)  # images pretraining sees, labels it never reads
    again = online_probe_rows(cfg, data)
    assert again is not None and np.array_equal(again["query_rows"], probe["query_rows"])  # seeded


def test_online_probe_slice_is_stratified_halves_or_says_why():
    labels = np.repeat(np.arange(4), 50)
    bank, query = online_probe_slice(labels, 40, seed=3)
    assert len(bank) == len(query) == 20
    assert np.bincount(labels[bank]).tolist() == [5, 5, 5, 5]
    assert "online kNN off" in online_probe_slice(labels[:1], 40, seed=3)


def test_pretrain_loop_measures_online_knn_every_epoch():
    cfg = load_config(
        preset="smoke",
        overrides=[
            "model.arch=resnet18_w16",
            "model.proj_hidden_dim=16",
            "model.proj_dim=8",
            "pretrain.epochs=2",
            "pretrain.warmup_epochs=0",
            "pretrain.batch_size_per_worker=16",
            "pretrain.moco={queue_size: 32}",
            "pretrain.augment={resize: 24, crop_size: 16}",
            "finetune.augment={resize: 24, crop_size: 16}",
        ],
    )
    images = np.random.default_rng(0).integers(0, 255, size=(64, 24, 24), dtype=np.uint8)
    labels = np.arange(64) % 2
    probe = {"bank_rows": np.arange(32), "bank_labels": labels[:32], "query_rows": np.arange(32, 64)}
    probe["query_labels"] = labels[32:]
    seen: list[dict] = []
    state = run_pretrain_loop(
        cfg, "moco", images, torch.device("cpu"), on_epoch=lambda m, s: seen.append(m), online_probe=probe
    )
    assert len(state["online_knn"]) == 2 and all(0.0 <= v <= 1.0 for v in state["online_knn"])
    assert [m["online_knn"] for m in seen] == state["online_knn"]
    assert 0.0 <= state["online_knn_random_init"] <= 1.0
    line = epoch_line("moco", seen[-1])
    assert f"| kNN {seen[-1]['online_knn']:.2f} (random init {state['online_knn_random_init']:.2f})" in line
    assert "kNN" not in epoch_line("moco", {**seen[-1], "online_knn": None})
