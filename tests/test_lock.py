import pytest

from raystudy.config import load_config
from raystudy.errors import StudyLockedError
from raystudy.runfolder import run_lock
from raystudy.study import run_study


def test_second_driver_refuses_a_locked_run_folder(tmp_path):
    run_dir = tmp_path / "run"
    with run_lock(run_dir):
        with pytest.raises(StudyLockedError, match="in use by another raystudy driver"):
            run_study(load_config(preset="smoke"), run_dir)
    # the first driver's folder is untouched by the refused one
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock"]


def test_cli_reports_the_lock(tmp_path, capsys):
    from raystudy.cli import main

    run_dir = tmp_path / "run"
    with run_lock(run_dir):
        assert main(["run", "--preset", "smoke", "--out", str(run_dir)]) == 2
    assert "in use by another raystudy driver" in capsys.readouterr().err
