"""Pretraining's online kNN probe: a labeled slice outside every cell, measured each epoch."""

from __future__ import annotations

import numpy as np
import torch

from raystudy.config import load_config
from raystudy.data.prepare import prepare_data
from raystudy.data.splits import online_probe_slice
from raystudy.grid import plan_grid
from raystudy.scheduler import online_probe_rows
from raystudy.training import pretrain
from raystudy.training.pretrain import epoch_line, run_pretrain_loop, stop_early


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


def tiny_pretraining(*overrides: str):
    """A two-class MoCo run on 64 random 24 px images with a 32 + 32 image online probe."""
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
            *overrides,
        ],
    )
    images = np.random.default_rng(0).integers(0, 255, size=(64, 24, 24), dtype=np.uint8)
    labels = np.arange(64) % 2
    probe = {"bank_rows": np.arange(32), "bank_labels": labels[:32], "query_rows": np.arange(32, 64)}
    probe["query_labels"] = labels[32:]
    return cfg, images, probe


def test_pretrain_loop_measures_online_knn_every_epoch():
    cfg, images, probe = tiny_pretraining()
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


def test_stopping_rule_waits_min_epochs_then_patience():
    cfg = load_config(preset="smoke", overrides=["pretrain.patience=2", "pretrain.min_epochs=4"])
    assert not stop_early(cfg, [0.40, 0.45, 0.44, 0.45][:3])  # before min_epochs
    assert stop_early(cfg, [0.40, 0.45, 0.44, 0.45])  # best at epoch 2, two epochs without a gain (ties too)
    assert not stop_early(cfg, [0.40, 0.45, 0.44, 0.46])
    assert not stop_early(load_config(preset="smoke"), [0.5, 0.4, 0.3, 0.2])  # patience 0: off
    assert load_config(preset="smoke", overrides=["pretrain.patience=0", "pretrain.min_epochs=3"]).config_hash() == (
        load_config(preset="smoke").config_hash()
    )  # off, it trains what it trained before


def test_pretraining_stops_when_the_online_knn_stalls_and_says_why(monkeypatch):
    cfg, images, probe = tiny_pretraining("pretrain.epochs=6", "pretrain.patience=2", "pretrain.min_epochs=1")
    values = iter([0.50, 0.60, 0.55, 0.60, 0.70, 0.80, 0.90])  # the start, then one per epoch
    monkeypatch.setattr(pretrain, "online_knn", lambda *a: next(values))
    seen: list[dict] = []
    state = run_pretrain_loop(
        cfg, "moco", images, torch.device("cpu"), on_epoch=lambda m, s: seen.append(m), online_probe=probe
    )
    assert state["online_knn"] == [0.60, 0.55, 0.60] and state["epoch"] == 2  # 3 of 6 epochs
    assert [m["stop_reason"] for m in seen] == ["epochs", "epochs", "patience"]
    # a run resumed from the checkpoint of the epoch that stopped it trains no further
    again = run_pretrain_loop(cfg, "moco", images, torch.device("cpu"), resume=state, online_probe=probe)
    assert again == {}


def test_a_small_data_set_gets_more_epochs_up_to_the_minimum_steps(caplog):
    """pretrain.min_steps (the demo's 744): 3,000 images keep the 8 epochs (93 steps each); the
    1,500 of scikit-learn's digits get 17 (46 steps each, 782 in all), and the log says so."""
    import logging

    from raystudy.training.pretrain import with_min_steps

    cfg = load_config(preset="demo")
    assert with_min_steps(cfg, 3000, 1) is cfg and cfg.pretrain.epochs == 8
    with caplog.at_level(logging.INFO, logger="raystudy"):
        small = with_min_steps(cfg, 1500, 1, log_it=True)
    assert small.pretrain.epochs == 17 and cfg.pretrain.epochs == 8  # a copy: the study's config is untouched
    assert "17 epochs instead of 8: 1500 images make 46 steps per epoch" in caplog.text
    assert with_min_steps(cfg, 1500, 2).pretrain.epochs == 33  # two workers: a global batch of 64
    assert with_min_steps(load_config(preset="smoke"), 10, 1).pretrain.epochs == 1  # min_steps 0: as given


def test_byol_takes_its_own_minimum_steps_where_its_section_sets_them(caplog):
    """pretrain.byol.min_steps (the demo's 3,000) replaces pretrain.min_steps for BYOL only."""
    import logging

    from raystudy.training.pretrain import with_min_steps

    cfg = load_config(preset="demo", overrides=["grid.models=[moco, byol, baseline]"])
    assert cfg.pretrain.section("byol").min_steps == 3000
    assert with_min_steps(cfg, 1500, 1, method="moco").pretrain.epochs == 17  # 744 steps of 46
    with caplog.at_level(logging.INFO, logger="raystudy"):
        assert with_min_steps(cfg, 1500, 1, log_it=True, method="byol").pretrain.epochs == 66  # 3,000 of 46
    assert "pretrain byol: 66 epochs instead of 8" in caplog.text and "pretrain.byol.min_steps = 3000" in caplog.text
    assert with_min_steps(cfg, 3000, 1, method="byol").pretrain.epochs == 33  # the demo's 3,000 images: 93 a step
    plain = load_config(preset="smoke", overrides=["pretrain.min_steps=100"])
    assert with_min_steps(plain, 720, 1, method="byol").pretrain.epochs == 10  # unset: pretrain.min_steps
