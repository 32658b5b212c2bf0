"""The command line: clear errors before any training, nothing left behind."""

import subprocess
import sys
from pathlib import Path

import pytest

from raystudy.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_unknown_preset(capsys, tmp_path):
    assert main(["run", "--preset", "nope", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "unknown preset 'nope'" in err and "smoke" in err
    assert not (tmp_path / "r").exists()


def test_unknown_key_via_set(capsys, tmp_path):
    assert main(["run", "--preset", "smoke", "--set", "grid.foldz=3", "--out", str(tmp_path / "r")]) == 2
    assert "grid.foldz" in capsys.readouterr().err


def test_missing_data_folder_leaves_nothing(capsys, tmp_path):
    out = tmp_path / "run"
    assert main(["run", "--preset", "smoke", "--data", str(tmp_path / "nodata"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "nodata does not exist" in err
    assert not out.exists()


def test_unreadable_image_named_before_training(capsys, tmp_path):
    for camp in ("NASCENT19", "NASCENT20", "CLOUDLAB"):
        d = tmp_path / "data" / camp / "column"
        d.mkdir(parents=True)
        (d / "broken.png").write_bytes(b"\x89PNG broken")
    out = tmp_path / "run"
    code = main(
        [
            "run",
            "--preset",
            "smoke",
            "--data",
            str(tmp_path / "data"),
            "--out",
            str(out),
            "--set",
            "grid.sizes={4cat: [8]}",
            "--set",
            "data.generalization_category_set=4cat",
            "--set",
            "catalog.category_sets={4cat: [column]}",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "3 unreadable image(s)" in err and "broken.png" in err
    assert not out.exists()


def test_scaling_script_help():
    res = subprocess.run(
        [sys.executable, str(ROOT / "studies" / "scaling.py"), "--help"], capture_output=True, text=True
    )
    assert res.returncode == 0 and "--preset" in res.stdout and "--data" in res.stdout


@pytest.mark.e2e
def test_status_and_report_commands(smoke_run, capsys):
    assert main(["status", str(smoke_run)]) == 0
    out = capsys.readouterr().out
    assert "12 done, 0 running, 0 pending, 6 skipped, 0 failed" in out
    assert main(["report", str(smoke_run)]) == 0
    assert (smoke_run / "report.html").is_file()


def test_missing_init_checkpoint_is_named(capsys, tmp_path):
    out = tmp_path / "run"
    code = main(
        ["run", "--preset", "smoke", "--set", "model.baseline_init=/nowhere/moco_v2.pth.tar", "--out", str(out)]
    )
    assert code == 2
    assert "model.baseline_init: /nowhere/moco_v2.pth.tar" in capsys.readouterr().err
    assert not out.exists()
