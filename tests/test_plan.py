"""``raystudy plan``: cells, requests and node types, images and device-hours, before renting."""

from __future__ import annotations

import pandas as pd

from raystudy.cli import main
from raystudy.config import load_config
from raystudy.plan import calibrate, cell_epochs, train_images


def test_plan_prints_cells_requests_node_types_and_hours(capsys):
    assert main(["plan", "--preset", "smoke", "--set", "finetune.gpus_per_trial=0.5", "--images-per-s", "100"]) == 0
    out = capsys.readouterr().out
    assert "cells: 18 planned" in out
    assert (
        "a cell (finetune.cpus_per_trial=1, finetune.gpus_per_trial=0.5) asks {CPU: 1, GPU: 0.5} x18: "
        "gpu_worker (8 per node" in out
    )
    assert "pretraining moco" in out and "pretraining byol" in out
    assert "throughput: 100.0 img/s per fine-tuning trial, 33.3 img/s per pretraining worker" in out
    assert "device-hours: pretraining" in out and "GPU-h" in out


def test_plan_counts_the_supervised_ceiling(capsys):
    assert main(["plan", "--preset", "smoke", "--set", "grid.ceiling_epochs=5", "--images-per-s", "100"]) == 0
    out = capsys.readouterr().out
    assert "cells: 20 planned" in out  # 18 of the grid and one supervised-ceiling cell per set
    assert out.count("(supervised ceiling: every labeled image)") == 2 and " x20: " in out


def test_plan_names_a_request_no_node_type_holds(capsys):
    assert main(["plan", "--preset", "paper", "--set", "finetune.gpus_per_trial=8"]) == 0
    out = capsys.readouterr().out
    assert "asks {CPU: 4, GPU: 8} x240: NO NODE TYPE HOLDS IT" in out
    assert "give --images-per-s N" in out


def test_plan_refuses_an_unknown_cluster_file(tmp_path, capsys):
    assert main(["plan", "--preset", "smoke", "--cluster", str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml does not exist" in capsys.readouterr().err


def test_cell_length_matches_what_the_trials_trained(smoke_run):
    cfg = load_config(preset="smoke")
    trials = pd.read_parquet(smoke_run / "results" / "trials")
    done = trials[trials["status"] == "done"]
    for row in done.itertuples():
        assert row.protocol != "ceiling", "the smoke preset has no supervised ceiling"
        assert cell_epochs(cfg.finetune, row.n_train) == row.epochs, row.cell_id
        assert abs(train_images(row.train_size, row.fold, cfg.grid.folds, cfg.grid.protocol) - row.n_train) <= 1


def test_calibrate_times_the_backbone(one_thread):
    rate = calibrate(load_config(preset="smoke"), steps=1)
    assert rate.finetune > 0 and rate.pretrain > 0
    assert "resnet18 at 32 px" in rate.how


def test_plan_counts_the_epochs_that_pretrain_min_steps_adds(capsys):
    # smoke: 720 pretraining images at batch 64 are 11 steps per epoch; 1,000 steps take 91 epochs
    assert main(["plan", "--preset", "smoke", "--set", "pretrain.min_steps=1000", "--images-per-s", "100"]) == 0
    out = capsys.readouterr().out
    assert "images: pretraining 2 x 91 epochs x 720 = 131,040;" in out


def test_plan_counts_a_methods_own_minimum_steps(capsys):
    args = ["plan", "--preset", "smoke", "--set", "pretrain.min_steps=1000", "--set", "pretrain.byol.min_steps=2000"]
    assert main([*args, "--images-per-s", "100"]) == 0
    assert "images: pretraining (moco 91 + byol 182) epochs x 720 = 196,560;" in capsys.readouterr().out
