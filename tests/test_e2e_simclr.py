"""SimCLR end to end: a reduced smoke study with grid.models [simclr, baseline]."""

from __future__ import annotations

import pandas as pd
import pytest

from raystudy.config import load_config

pytestmark = pytest.mark.e2e


def test_simclr_runs_in_the_smoke_preset(ray_instance, tmp_path, capsys):
    from raystudy.study import run_study

    cfg = load_config(
        preset="smoke",
        overrides=[
            "grid.models=[simclr, baseline]",
            "grid.sizes={4cat: [40]}",
            "finetune.epochs=1",
            "pretrain.probe=false",
        ],
    )
    assert cfg.pretrain.methods == ["simclr"]
    report = run_study(cfg, tmp_path / "run")
    out = capsys.readouterr().out
    assert "pretrain simclr epoch 1/1 loss" in out and "img/s" in out  # one line per pretraining epoch
    trials = pd.read_parquet(tmp_path / "run" / "results" / "trials")
    assert sorted(trials["cell_id"]) == sorted(f"{m}-4cat-n40-f{f}" for m in ("simclr", "baseline") for f in (0, 1))
    assert (trials["status"] == "done").all() and (trials["arch"] == "resnet18").all()
    pretraining = pd.read_parquet(tmp_path / "run" / "results" / "pretraining")
    assert pretraining["model"].tolist() == ["simclr"] and pretraining["final_loss"].notna().all()
    assert (tmp_path / "run" / "encoders" / "simclr.pt").is_file()
    assert "Semisup-SimCLR" in report.read_text()
