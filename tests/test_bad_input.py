"""Every bad input a user can bring is one clear message (file or key named, what to do), exit 2, nothing left."""

from __future__ import annotations

import os

import pandas as pd
import pytest
from own_data import make_folder, write_image
from PIL import Image

from raystudy.catalog import Catalog
from raystudy.cli import main
from raystudy.data.loading import read_manifest, scan_folder
from raystudy.data.problems import DataError, Problems


def run(capsys, data, out, *extra) -> str:
    """``raystudy run --preset smoke --data DATA --out OUT``: must exit 2 leaving OUT absent; returns stderr."""
    code = main(["run", "--preset", "smoke", "--data", str(data), "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and err.count("raystudy: error:") == 1
    return err


def image_dir(tmp_path):
    return make_folder(tmp_path / "img", {"": {"column": 2}}) / "column"


def write_csv(tmp_path, text: str):
    path = tmp_path / "m.csv"
    path.write_text(text)
    return path


MANIFESTS = {
    "empty": (lambda t: write_csv(t, ""), ["m.csv is empty", "header line path,label,campaign"]),
    "header only": (lambda t: write_csv(t, "path,label,campaign\n"), ["m.csv has no rows"]),
    "unclosed quote": (
        lambda t: write_csv(t, 'path,label,campaign\n"img/column/000.png,column,C\n'),
        ["m.csv is not valid CSV", "check its quotes"],
    ),
    "missing column": (
        lambda t: write_csv(t, "path,label\nimg/column/000.png,column\n"),
        ["lacks column(s) ['campaign']"],
    ),
    "blank label": (
        lambda t: write_csv(t, "path,label,campaign\nimg/column/000.png,,C\nimg/column/001.png,column,C\n"),
        ["m.csv line 2: label blank", "fill in every cell"],
    ),
    "text saved as parquet": (
        lambda t: (t / "m.parquet").write_text("path,label,campaign\n") and t / "m.parquet",
        ["m.parquet is not a Parquet file", "to_parquet"],
    ),
    "duplicate rows": (
        lambda t: write_csv(t, "path,label,campaign\nimg/column/000.png,column,C\nimg/column/000.png,column,C\n"),
        ["1 duplicate manifest row(s)", "000.png (lines 2, 3)", "train and validation"],
    ),
    "one file two labels": (
        lambda t: write_csv(t, "path,label,campaign\nimg/column/000.png,column,C\nimg/column/000.png,plate,C\n"),
        ["listed under two or more labels", "['column', 'plate'] (lines 2, 3)"],
    ),
    "missing file": (
        lambda t: write_csv(t, "path,label,campaign\nimg/column/000.png,column,C\nimg/nope.png,column,C\n"),
        ["image file(s) listed but missing", "nope.png (", "line 3"],
    ),
}


@pytest.mark.parametrize("case", list(MANIFESTS))
def test_bad_manifest(case, tmp_path, capsys):
    image_dir(tmp_path)
    make, expected = MANIFESTS[case]
    manifest = make(tmp_path)
    err = run(capsys, manifest, tmp_path / "run")
    for text in expected:
        assert text in err
    assert not (tmp_path / "run").exists()


def test_manifest_problems_of_every_row_at_once(tmp_path):
    image_dir(tmp_path)
    path = write_csv(
        tmp_path,
        "path,label,campaign\nimg/column/000.png,column,C\nimg/column/000.png,plate,C\n,column,C\nimg/x.png,colum,C\n",
    )
    with pytest.raises(DataError) as err:
        read_manifest(path, Catalog())
    msg = str(err.value)
    assert "4 problem(s) of 4 kind(s)" in msg
    assert "'colum' (did you mean 'column'?)" in msg and "path blank" in msg and "x.png" in msg


def test_decompression_bomb_is_named(tmp_path, capsys, monkeypatch):
    data = make_folder(tmp_path / "d", {"": {"column": 3}})
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # a 32x32 image counts as a bomb (> 2x the limit)
    err = run(capsys, data, tmp_path / "run")
    assert "3 unreadable image(s)" in err and "000.png (too large to decode safely: Image size (1024 pixels)" in err


LAYOUTS = {
    "broken symlink": (
        lambda d: os.symlink(d / "gone.png", d / "C1" / "column" / "link.png"),
        "error",
        "broken symbolic link(s)",
        "link.png ->",
    ),
    "nested folder": (
        lambda d: write_image(d / "C1" / "column" / "more" / "x.png", 3),
        "warning",
        "sub-folder(s) inside category folders, not used",
        "more (1 image(s))",
    ),
    "hidden file": (
        lambda d: (d / "C1" / "column" / ".DS_Store").write_bytes(b"x"),
        "warning",
        "hidden file(s) or folder(s), ignored",
        ".DS_Store",
    ),
    "image outside a category": (
        lambda d: write_image(d / "C1" / "loose.png", 3),
        "error",
        "image(s) outside a category folder",
        "loose.png",
    ),
    "campaign folder without categories": (
        lambda d: write_image(d / "notes" / "x.png", 3) and None,
        "error",
        "at the campaign level without category folders",
        "notes",
    ),
    "text file among images": (
        lambda d: (d / "C1" / "column" / "readme.txt").write_text("x"),
        "error",
        "not PNG, JPEG or TIFF",
        "readme.txt",
    ),
    "empty category folder": (
        lambda d: (d / "C1" / "plate").mkdir(),
        "error",
        "category folder(s) without images",
        "plate",
    ),
}


@pytest.mark.parametrize("case", list(LAYOUTS))
def test_folder_layout(case, tmp_path):
    data = make_folder(tmp_path / "d", {"C1": {"column": 2}})
    make, level, kind, item = LAYOUTS[case]
    make(data)
    problems = Problems()
    table = scan_folder(data, Catalog(), problems)
    found = problems.errors if level == "error" else problems.warnings
    assert kind in next(k for k in found if kind in k)
    assert any(item in i for k, v in found.items() if kind in k for i in v.items)
    if level == "warning":
        assert not problems and len(table) == 2


def test_extra_campaign_folder_is_a_warning(tmp_path):
    four = {"column": 3, "column_aged": 3, "column_aggregate": 3, "column_aged_aggregate": 3}
    data = make_folder(tmp_path / "d", {c: four for c in ("NASCENT19", "NASCENT20", "CLOUDLAB", "old")})
    from raystudy.config import load_config
    from raystudy.data.fit import fit_to_data

    _, fit = fit_to_data(load_config(preset="smoke", overrides=[f"data.root={data}"]))
    assert any("not used by any role: ['old']" in n for n in fit.notes)


def test_problems_capped_per_kind_with_a_count(tmp_path):
    data = make_folder(tmp_path / "d", {"C1": {"column": 1}})
    for i in range(23):
        (data / "C1" / "column" / f"n{i:02d}.txt").write_text("x")
        write_image(data / "C1" / f"w{i:02d}" / "a.png", i)
    with pytest.raises(DataError) as err:
        scan_folder(data, Catalog())
    msg = str(err.value)
    assert "46 problem(s) of 2 kind(s)" in msg
    assert msg.count("... and 3 more") == 2


def test_out_is_a_file(tmp_path, capsys):
    data = make_folder(tmp_path / "d", {"": {"column": 3}})
    (tmp_path / "taken").write_text("x")
    err = run(capsys, data, tmp_path / "taken")
    assert "--out" in err and "taken is a file, not a folder" in err
    err = run(capsys, data, tmp_path / "taken" / "run")
    assert "taken is a file, not a folder" in err
    assert (tmp_path / "taken").read_text() == "x"


def test_out_not_writable(tmp_path, capsys, monkeypatch):
    data = make_folder(tmp_path / "d", {"": {"column": 3}})
    import raystudy.runfolder

    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(raystudy.runfolder.os, "access", lambda p, m: False if str(p) == str(ro) else real(p, m))
    err = run(capsys, data, ro / "run")
    assert f"{ro} is not writable" in err and "choose another --out" in err


def test_existing_empty_out_stays_empty(tmp_path, capsys):
    data = make_folder(tmp_path / "d", {"C1": {"column": 2}})
    (data / "C1" / "column" / "000.png").write_bytes(b"")
    out = tmp_path / "run"
    out.mkdir()
    run(capsys, data, out)
    assert list(out.iterdir()) == []


def test_status_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["status", str(tmp_path)]) == 2
    assert "is not a raystudy run folder" in capsys.readouterr().err
    assert main(["status", str(tmp_path / "nowhere")]) == 2


def test_every_kind_at_once_before_anything_is_written(tmp_path, capsys):
    """A missing init checkpoint, a user set the data lack and a broken file: one message."""
    data = make_folder(tmp_path / "d", {"C1": {"column": 3}})
    (data / "C1" / "column" / "001.png").write_bytes(b"\x89PNG nope")
    err = run(
        capsys, data, tmp_path / "run", "--set", "model.baseline_init=/nowhere.pth", "--set", "grid.sizes={19cat: [8]}"
    )
    assert "3 problem(s) of 3 kind(s)" in err
    assert "model.baseline_init: /nowhere.pth" in err and "category set '19cat' names" in err and "001.png" in err
    assert not pd.io.common.file_exists(str(tmp_path / "run"))


def test_one_category_is_not_a_study(tmp_path, capsys):
    data = make_folder(tmp_path / "d", {"": {"column": 6}})
    err = run(capsys, data, tmp_path / "run")
    assert "category set '1cat' has 1 category" in err and "at least 2" in err
