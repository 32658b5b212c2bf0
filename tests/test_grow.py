"""A run folder is one study that may grow: a cell's identity is what trains it (issue 23, items 6-7).

Adding sizes, models, archs or selection strategies to a finished study runs only the new
cells; anything else that changes training, dropping an axis value, or other images under the
same config is refused with a message naming it; skipped cells are planned again when the grid
allows them; ``pretrain.num_workers`` (the global pretraining batch) is part of the hash.
"""

from __future__ import annotations

import shutil
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from raystudy.config import ConfigError, changed_keys, dump_config, grid_growth, load_config, training_differences
from raystudy.data.loading import ImageSet
from raystudy.data.prepare import StudyData
from raystudy.data.problems import DataError
from raystudy.events import read_events
from raystudy.grid import plan_grid
from raystudy.sweep import DATA_FINGERPRINT, check_resumable, check_same_data, plan_jobs, write_status_row


def smoke(*overrides: str):
    return load_config(preset="smoke", overrides=list(overrides))


def test_grid_axes_change_no_common_cell_and_everything_else_does():
    base = smoke()
    grown = smoke("grid.sizes={19cat: [64, 1000], 4cat: [40, 24]}", "grid.models=[moco, byol, baseline, simclr]")
    assert grown.config_hash() != base.config_hash() and training_differences(base, grown) == []
    assert grid_growth(base, grown) == (["model simclr", "4cat size 24"], [])
    assert grid_growth(grown, base) == ([], ["model simclr", "4cat size 24"])
    for other in (
        "finetune.epochs=3",
        "grid.folds=3",
        "pretrain.batch_size_per_worker=32",
        "pretrain.moco.temperature=0.5",
    ):
        key = other.split("=")[0]
        assert training_differences(base, smoke(other)) == [key], other
    assert changed_keys(base, smoke("finetune.epochs=3")) == ["finetune.epochs"]


def test_the_global_pretraining_batch_is_part_of_the_hash():
    one, two = smoke(), smoke("pretrain.num_workers=2")
    assert one.config_hash() == "0f71b5acc534"  # one worker (the default) keeps the hash it had
    assert two.config_hash() != one.config_hash() and changed_keys(one, two) == ["pretrain.num_workers"]


def test_a_run_folder_accepts_a_grown_grid_and_refuses_the_rest(tmp_path, capsys):
    dump_config(smoke(), tmp_path / "config.yaml")
    check_resumable(smoke(), tmp_path)  # the same study
    check_resumable(smoke("grid.sizes={19cat: [64, 1000], 4cat: [40, 24]}"), tmp_path)
    assert "grown study: adds 4cat size 24; only the new cells run" in capsys.readouterr().out
    with pytest.raises(ConfigError, match=r"holds a grid with model byol, which this config drops"):
        check_resumable(smoke("grid.models=[moco, baseline]"), tmp_path)
    with pytest.raises(ConfigError, match=r"different study config .*: finetune.epochs differ"):
        check_resumable(smoke("finetune.epochs=3", "grid.sizes={19cat: [64, 1000], 4cat: [40, 24]}"), tmp_path)


def _data(names: list[str]) -> StudyData:
    index = pd.DataFrame(
        {
            "image_id": [f"C1/{n}" for n in names],
            "path": [f"/nowhere/{n}" for n in names],
            "campaign": "C1",
            "category": "column",
        }
    )
    images = ImageSet(images=np.zeros((len(names), 4, 4), np.uint8), index=index)
    return StudyData(images=images, catalog=None, pools={}, generalization=None, pretrain_indices=np.arange(len(names)))  # type: ignore[arg-type]


def test_other_images_under_the_same_config_are_refused(tmp_path):
    import json

    first = _data(["a.png", "b.png"])
    (tmp_path / DATA_FINGERPRINT).write_text(json.dumps(first.fingerprint()))
    check_same_data(tmp_path, _data(["a.png", "b.png"]))  # the same images
    with pytest.raises(DataError, match=r"images of this study changed .* \(2 images then: C1 2; 3 now: C1 3"):
        check_same_data(tmp_path, _data(["a.png", "b.png", "c.png"]))
    check_same_data(tmp_path / "elsewhere", _data(["x.png"]))  # a folder without a fingerprint: accepted


def test_a_cell_recorded_skipped_is_planned_again_when_the_grid_allows_it(tmp_path):
    cfg = smoke("grid.models=[baseline]", "grid.sizes={4cat: [40]}", "pretrain.probe=false")
    planned = plan_grid(cfg, {"4cat": np.repeat(np.arange(4), 30)})
    cell = planned[0].cell
    write_status_row(cfg, tmp_path, cell, "skipped", "train size 40 exceeds the 30 labeled images", "old")
    pending = {j.cell.cell_id for j in plan_jobs(cfg, tmp_path, planned) if j.cell is not None}
    assert cell.cell_id in pending  # a skipped row is no result


@pytest.mark.e2e
def test_a_size_added_to_a_finished_smoke_study_runs_only_the_new_cells(smoke_run, tmp_path, capsys):
    from raystudy.study import run_study

    run = tmp_path / "run"
    shutil.copytree(smoke_run, run, ignore=shutil.ignore_patterns(".lock"))
    before = pd.read_parquet(run / "results" / "trials").set_index("cell_id").sort_index()
    starts_before = Counter(e["cell_id"] for e in read_events(run) if e["event"] == "start")
    run_study(smoke("grid.sizes={19cat: [64, 1000], 4cat: [40, 24]}"), run)
    assert "grown study: adds 4cat size 24; only the new cells run" in capsys.readouterr().out
    after = pd.read_parquet(run / "results" / "trials").set_index("cell_id").sort_index()
    new = sorted(set(after.index) - set(before.index))
    assert new == sorted(f"{m}-4cat-n24-f{f}" for m in ("moco", "byol", "baseline") for f in (0, 1))
    assert (after.loc[new, "status"] == "done").all()
    pd.testing.assert_frame_equal(after.loc[before.index], before)  # old rows untouched
    starts = Counter(e["cell_id"] for e in read_events(run) if e["event"] == "start")
    assert starts - starts_before == Counter(new)  # each new cell started once, no old cell again
