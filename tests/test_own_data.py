"""``--data`` on a user's own folder of images: no config needed, every problem reported at once."""

from __future__ import annotations

import json
import logging

import pandas as pd
import pytest
import yaml
from own_data import TEN, make_folder, ten_categories, write_image

from raystudy.cli import main
from raystudy.config import load_config
from raystudy.data.fit import fit_to_data, read_fit

FAST = ["--set", "grid.models=[baseline]", "--set", "finetune.epochs=1"]


@pytest.mark.e2e
def test_ten_categories_three_campaigns_run_the_smoke_preset_with_no_config(ray_instance, tmp_path, capsys):
    data = ten_categories(tmp_path / "mine")
    out = tmp_path / "run"
    # the smoke pretraining (2 epochs) learns nothing on these few generated images (online kNN 0.03
    # vs 0.10 at the start): the learned-encoder gate would stop the study (tests/test_pretrain_gate.py)
    unlearned = ["--set", "pretrain.allow_unlearned=true"]
    assert main(["run", "--preset", "smoke", "--data", str(data), "--out", str(out), *unlearned]) == 0
    fit = read_fit(out)
    assert fit.labeled_campaign == "alps_2021"  # the largest; no campaign is called NASCENT19
    assert fit.generalization_campaign == "lab_2023" and fit.pretrain_campaigns == ["alps_2021", "arctic_2022"]
    assert list(fit.category_sets) == ["10cat", "4cat"] and sorted(fit.category_sets["10cat"]) == sorted(TEN)
    assert "all 10 categories found in the labeled campaign 'alps_2021'" in fit.derived_sets["10cat"]
    assert any("'19cat' left out" in n for n in fit.notes)
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["grid"]["sizes"] == {"10cat": [64, 1000], "4cat": [40]}
    trials = pd.read_parquet(out / "results" / "trials")
    done = trials[trials["status"] == "done"]
    assert len(done) == 12 and set(done["category_set"]) == {"10cat", "4cat"}
    assert (done.loc[done["category_set"] == "10cat", "n_categories"] == 10).all()
    assert done.loc[done["category_set"] == "4cat", "generalization_accuracy"].between(0, 1).all()
    skipped = trials[trials["status"] == "skipped"]
    assert set(skipped["train_size"]) == {1000} and skipped["message"].str.contains("exceeds the 120").all()
    assert (out / "report.html").is_file()


@pytest.mark.e2e
def test_a_flat_folder_is_one_campaign(ray_instance, tmp_path):
    data = make_folder(tmp_path / "crystals", {"": {"column": 14, "plate": 14, "droplet": 14}})
    out = tmp_path / "run"
    assert main(["run", "--preset", "smoke", "--data", str(data), "--out", str(out), *FAST]) == 0
    fit = read_fit(out)
    assert fit.campaigns == {"crystals": 42} and fit.labeled_campaign == "crystals"
    assert fit.pretrain_campaigns == ["crystals"] and fit.generalization_campaign is None
    assert any("one campaign" in n and "no generalization figure" in n for n in fit.notes)
    assert fit.category_sets == {"3cat": ["column", "plate", "droplet"]}
    trials = pd.read_parquet(out / "results" / "trials")
    assert set(trials.loc[trials["status"] == "done", "cell_id"]) == {"baseline-3cat-n42-f0", "baseline-3cat-n42-f1"}


def smoke(data, *overrides):
    return load_config(preset="smoke", overrides=[f"data.root={data}", *overrides])


def test_typo_folder_is_a_new_category_with_the_close_match(tmp_path, caplog):
    data = make_folder(tmp_path / "d", {"C1": {"colum": 3, "plate": 3, "dendrite": 3}})
    with caplog.at_level(logging.WARNING, logger="raystudy"):
        cfg, fit = fit_to_data(smoke(data))
    assert fit.new_categories == ["colum", "dendrite"]
    assert "colum (did you mean 'column'?), dendrite;" in caplog.text and "catalog.strict: true" in caplog.text
    assert cfg.catalog.groups == {"colum": "unknown", "dendrite": "unknown"}
    assert cfg.catalog.build().group("dendrite") == "unknown" and not cfg.catalog.build().is_basic("colum")
    assert fit.category_sets == {"3cat": ["plate", "colum", "dendrite"]}


def test_strict_catalog_refuses_the_typo(tmp_path, capsys):
    data = make_folder(tmp_path / "d", {"C1": {"colum": 3, "plate": 3}})
    out = tmp_path / "run"
    assert (
        main(["run", "--preset", "smoke", "--data", str(data), "--out", str(out), "--set", "catalog.strict=true"]) == 2
    )
    err = capsys.readouterr().err
    assert "1 category folder(s) not in the catalog" in err and "colum (did you mean 'column'?)" in err
    assert not out.exists()


def test_three_problems_in_one_message(tmp_path, capsys):
    data = make_folder(tmp_path / "d", {"C1": {"column": 4, "plate": 4}})
    truncated = data / "C1" / "column" / "000.png"
    truncated.write_bytes(truncated.read_bytes()[:60])
    empty = data / "C1" / "plate" / "000.png"
    empty.write_bytes(b"")
    write_image(data / "C1" / "snowflake" / "a.png", 1)
    out = tmp_path / "run"
    code = main(["run", "--preset", "smoke", "--data", str(data), "--out", str(out), "--set", "catalog.strict=true"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("raystudy: error:") == 1
    assert "3 problem(s) of 2 kind(s)" in err
    assert str(data / "C1" / "snowflake") in err
    assert f"{truncated} (" in err and f"{empty} (empty file, 0 bytes)" in err
    assert not out.exists() and not list(tmp_path.rglob("*.parquet")) and not list(tmp_path.rglob(".lock"))


def test_user_sets_are_kept_and_checked(tmp_path, capsys):
    """Category sets the user declares are not replaced: the data must hold them."""
    data = make_folder(tmp_path / "d", {"C1": {"column": 3, "plate": 3}})
    out = tmp_path / "run"
    code = main(
        [
            "run",
            "--preset",
            "smoke",
            "--data",
            str(data),
            "--out",
            str(out),
            "--set",
            "grid.sizes={4cat: [8]}",
            "--set",
            "data.labeled_campaign=C1",
        ]
    )
    assert code == 2
    assert (
        "category set '4cat' names ['column_aged', 'column_aggregate', 'column_aged_aggregate']"
        in capsys.readouterr().err
    )


def test_two_campaigns_named_by_the_user_and_an_extra_one(tmp_path, caplog):
    data = make_folder(tmp_path / "d", {c: {"column": 3, "plate": 3} for c in ("NASCENT19", "NASCENT20", "spare")})
    with caplog.at_level(logging.INFO, logger="raystudy"):
        cfg, fit = fit_to_data(smoke(data, "data.generalization_campaign=null"), given={"data.generalization_campaign"})
    assert cfg.data.labeled_campaign == "NASCENT19" and cfg.data.pretrain_campaigns == ["NASCENT19", "NASCENT20"]
    assert "campaign folder(s) not used by any role: ['spare']" in caplog.text
    assert fit.generalization_campaign is None


def test_data_fit_is_json_for_the_report(tmp_path):
    data = ten_categories(tmp_path / "mine")
    _, fit = fit_to_data(smoke(data))
    fit.save(tmp_path)
    saved = json.loads((tmp_path / "data_fit.json").read_text())
    assert saved["derived_sets"].keys() == {"10cat", "4cat"} and saved["labeled_campaign"] == "alps_2021"


def test_new_category_names_in_three_campaigns_get_a_derived_generalization_set(tmp_path, caplog):
    """Ten new names (none in the catalog): the preset's '4cat' cannot be held, so the set the
    third campaign shares with the labeled one is the generalization set, and that campaign
    stays out of pretraining (issue 23, item 10)."""
    names = [f"habit_{i}" for i in range(10)]
    data = make_folder(
        tmp_path / "new",
        {
            "site_a": {c: 8 for c in names},  # labeled (largest)
            "site_b": {c: 5 for c in names},  # unlabeled
            "lab": {c: 3 for c in names[:4]},  # imaged differently, four of the categories
        },
    )
    with caplog.at_level(logging.INFO, logger="raystudy"):
        cfg, fit = fit_to_data(smoke(data))
    assert fit.labeled_campaign == "site_a" and fit.generalization_campaign == "lab"
    assert fit.pretrain_campaigns == ["site_a", "site_b"]  # the generalization campaign is not pretrained on
    gset = cfg.data.generalization_category_set
    assert gset == "4cat-shared" and fit.category_sets[gset] == names[:4]
    assert cfg.grid.sizes[gset] == [32, 40]  # the preset's 4cat sizes, cut at the 32 labeled images
    assert "shares with the labeled campaign 'site_a'" in fit.derived_sets[gset]
    assert "generalization: campaign 'lab' tests category set '4cat-shared'" in caplog.text
    assert "no generalization figure" not in caplog.text

    from raystudy.data.prepare import prepare_data

    prepared = prepare_data(cfg, tmp_path / "cache")
    assert prepared.generalization is not None and len(prepared.generalization.indices) == 12
    assert prepared.generalization.categories == names[:4] and set(prepared.pools) == set(cfg.grid.sizes)


def test_a_generalization_campaign_sharing_one_category_gives_no_set(tmp_path, caplog):
    data = make_folder(
        tmp_path / "one",
        {"site_a": {"alpha": 6, "beta": 6, "gamma": 6}, "site_b": {"alpha": 4, "beta": 4}, "lab": {"alpha": 3}},
    )
    with caplog.at_level(logging.INFO, logger="raystudy"):
        cfg, fit = fit_to_data(smoke(data))
    assert cfg.data.generalization_category_set is None and fit.generalization_campaign is None
    assert "no generalization set: campaign 'lab' shares 1 category(ies) with the labeled campaign" in caplog.text
    assert list(fit.category_sets) == ["3cat"]


def test_new_categories_keep_their_orientation_unless_the_user_sets_it(tmp_path, caplog):
    """Categories outside the catalog may be upright content (a 6 turned is a 9): the fit turns the
    paper's rotations and flips off in both augmentations, says so, and keeps what the user set."""
    data = make_folder(tmp_path / "new", {"site_a": {f"habit_{i}": 6 for i in range(3)}})
    with caplog.at_level(logging.INFO, logger="raystudy"):
        cfg, _ = fit_to_data(smoke(data))
    for aug in (cfg.pretrain.augment, cfg.finetune.augment):
        assert list(aug.rotation_degrees) == [0.0, 0.0] and aug.flip_p == 0.0
    assert "keep its orientation (no rotation, no flips)" in caplog.text
    given = {"pretrain.augment.rotation_degrees"}
    cfg, _ = fit_to_data(smoke(data, "pretrain.augment.rotation_degrees=[0,180]"), given)
    assert list(cfg.pretrain.augment.rotation_degrees) == [0.0, 180.0] and cfg.pretrain.augment.flip_p == 0.5
    assert list(cfg.finetune.augment.rotation_degrees) == [0.0, 0.0]  # the section the user left alone
    # the catalog's own categories (ice crystals lie any way up) keep the paper's augmentations
    catalog = make_folder(tmp_path / "ice", {"site_a": {"column": 6, "plate": 6, "droplet": 6}})
    cfg, _ = fit_to_data(smoke(catalog))
    assert list(cfg.pretrain.augment.rotation_degrees) == [0.0, 180.0] and cfg.pretrain.augment.flip_p == 0.5
