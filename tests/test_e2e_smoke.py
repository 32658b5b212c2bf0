"""The smoke preset on a real local Ray instance: assertions on the Parquet contents."""

from __future__ import annotations

import pandas as pd
import pytest

from raystudy.config import load_config
from raystudy.results import TABLES

pytestmark = pytest.mark.e2e


def test_every_table_reads_with_pandas(smoke_run):
    for table in TABLES:
        if table in ("selections", "selection_map"):  # stored for strategies other than random; smoke runs random only
            assert not (smoke_run / "results" / table).exists()
            continue
        df = pd.read_parquet(smoke_run / "results" / table)
        assert len(df) > 0, table


def test_every_expected_cell_once(smoke_run):
    cfg = load_config(preset="smoke")
    trials = pd.read_parquet(smoke_run / "results" / "trials")
    expected = {
        f"{m}-{s}-n{n}-f{f}"
        for s, sizes in cfg.grid.sizes.items()
        for n in sizes
        for f in range(cfg.grid.folds)
        for m in cfg.grid.models
    }
    assert trials["cell_id"].is_unique
    assert set(trials["cell_id"]) == expected
    grid = pd.read_parquet(smoke_run / "results" / "grid")
    assert set(grid["cell_id"]) == expected


def test_training_length_and_initialisation_recorded(smoke_run):
    cfg = load_config(preset="smoke")
    trials = pd.read_parquet(smoke_run / "results" / "trials")
    done = trials[trials["status"] == "done"]
    assert done["stop_reason"].isin(["epochs", "min_steps", "max_steps"]).all()
    assert (done["steps"] > 0).all() and (done["batch_size"] <= cfg.finetune.batch_size).all()
    assert done[["train_accuracy"]].stack().between(0, 1).all() and done["train_loss"].notna().all()
    assert (done.loc[done["model"] == "baseline", "init"] == "random").all()
    moco = done.loc[done["model"] == "moco", "init"]
    assert moco.str.match(r".*encoders/moco\.pt sha256:[0-9a-f]{64}$").all()
    paired = done.groupby(["category_set", "train_size", "fold"])["steps"].nunique()
    assert (paired == 1).all()  # one stopping rule for every model type


def test_skipped_cells_are_named(smoke_run):
    trials = pd.read_parquet(smoke_run / "results" / "trials")
    skipped = trials[trials["status"] == "skipped"]
    # 19cat n=1000 exceeds the 480 labeled images: 3 models x 2 folds
    assert sorted(skipped["train_size"].unique()) == [1000]
    assert len(skipped) == 6
    assert skipped["message"].str.contains("exceeds the 480 labeled images").all()
    assert skipped["overall_accuracy"].isna().all()
    done = trials[trials["status"] == "done"]
    assert len(done) == 12
    assert set(done["status"]) == {"done"}


def test_accuracies_in_range_and_generalization_where_defined(smoke_run):
    trials = pd.read_parquet(smoke_run / "results" / "trials")
    done = trials[trials["status"] == "done"]
    assert done["overall_accuracy"].between(0, 1).all()
    assert done["macro_f1"].between(0, 1).all()
    four = done[done["category_set"] == "4cat"]
    other = done[done["category_set"] != "4cat"]
    assert four["generalization_accuracy"].between(0, 1).all()
    assert (four["generalization_campaign"] == "CLOUDLAB").all()
    assert other["generalization_accuracy"].isna().all()
    assert (done["n_categories"] == done["category_set"].map({"19cat": 19, "4cat": 4})).all()
    assert (done["n_train"] + done["n_validation"] == done["train_size"]).all()


def test_long_tables_are_consistent(smoke_run):
    trials = pd.read_parquet(smoke_run / "results" / "trials")
    done = trials[trials["status"] == "done"].set_index("cell_id")
    per_class = pd.read_parquet(smoke_run / "results" / "per_class")
    confusion = pd.read_parquet(smoke_run / "results" / "confusion")
    val = confusion[confusion["split"] == "validation"]
    totals = val.groupby("cell_id")["count"].sum()
    assert (totals == done.loc[totals.index, "n_validation"]).all()
    correct = val[val["true_category"] == val["predicted_category"]].groupby("cell_id")["count"].sum()
    oa = correct / totals
    assert (oa - done.loc[oa.index, "overall_accuracy"]).abs().max() < 1e-9
    assert per_class[["precision", "recall", "f1"]].stack().between(0, 1).all()
    gen_cells = set(confusion.loc[confusion["split"] == "generalization", "cell_id"])
    assert gen_cells == set(done.index[done["category_set"] == "4cat"])


def test_losses_and_pretraining_recorded(smoke_run):
    losses = pd.read_parquet(smoke_run / "results" / "losses")
    assert set(losses.loc[losses["stage"] == "pretrain", "run"]) == {"pretrain-moco", "pretrain-byol"}
    assert losses["loss"].notna().all()
    pre = pd.read_parquet(smoke_run / "results" / "pretraining")
    assert set(pre["model"]) == {"moco", "byol"}
    assert (smoke_run / "encoders" / "moco.pt").is_file()
    assert (smoke_run / "encoders" / "byol.pt").is_file()


def test_report_is_written_and_self_contained(smoke_run):
    html = (smoke_run / "report.html").read_text()
    assert "plotly" in html.lower()
    assert 'src="http' not in html  # plotly.js is inline, nothing is fetched
    assert html.count("Plotly.newPlot") >= 2


def test_rerun_resumes_without_training_again(smoke_run):
    from raystudy.study import run_study

    trial_files = sorted((smoke_run / "results" / "trials").glob("*.parquet"))
    before = {p.name: p.stat().st_mtime_ns for p in trial_files}
    encoder_mtime = (smoke_run / "encoders" / "moco.pt").stat().st_mtime_ns
    run_study(load_config(preset="smoke"), smoke_run)
    after = {p.name: p.stat().st_mtime_ns for p in (smoke_run / "results" / "trials").glob("*.parquet")}
    assert after == before
    assert (smoke_run / "encoders" / "moco.pt").stat().st_mtime_ns == encoder_mtime


def test_rerun_with_other_config_is_refused(smoke_run):
    from raystudy.config import ConfigError
    from raystudy.study import run_study

    with pytest.raises(ConfigError, match="different study config"):
        run_study(load_config(preset="smoke", overrides=["finetune.epochs=3"]), smoke_run)


def test_encoder_probes_recorded(smoke_run):
    probes = pd.read_parquet(smoke_run / "results" / "probes")
    assert set(probes["model"]) == {"random_init", "moco", "byol"}
    assert probes[["knn_accuracy", "linear_probe_accuracy"]].stack().between(0, 1).all()
    pre = pd.read_parquet(smoke_run / "results" / "pretraining")
    assert pre["knn_accuracy"].notna().all()


def test_embeddings_for_fig8(smoke_run):
    emb = pd.read_parquet(smoke_run / "results" / "embeddings")
    # fold 0 of moco at the runnable 19cat size, three stages of the same validation images
    assert set(emb["cell_id"]) == {"moco-19cat-n64-f0"}
    assert set(emb["stage"]) == {"before_pretraining", "after_pretraining", "after_finetuning"}
    per_stage = emb.groupby("stage")["image_id"].apply(lambda s: tuple(sorted(s)))
    assert per_stage.nunique() == 1
    trials = pd.read_parquet(smoke_run / "results" / "trials").set_index("cell_id")
    assert len(emb) == 3 * trials.loc["moco-19cat-n64-f0", "n_validation"]
    assert emb[["x", "y"]].notna().all().all()


def test_no_secret_in_run_folder(smoke_run):
    from pathlib import Path

    token_file = Path.home() / ".ray" / "auth_token"
    if not token_file.is_file():
        pytest.skip("this Ray instance wrote no auth token file")
    token = token_file.read_text().strip()
    assert len(token) >= 16
    for path in smoke_run.rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert token.encode() not in path.read_bytes(), f"{path} holds the Ray auth token"
