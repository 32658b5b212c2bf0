"""The study searcher releases jobs in dependency order."""

import time

from ray.tune.search import Searcher

from raystudy.grid import Cell, Job
from raystudy.scheduler import StudySearcher, encoder_path
from raystudy.training.pretrain import started_marker


def cell(cid, needs=None):
    model, cset = cid.split("-")
    return Job("cell", model, "resnet18", needs=needs, cell=Cell(model, cset, 4, 8, 0, "resnet18", "resnet18"))


def pretrain(method):
    return Job("pretrain", method, "resnet18", name=method)


def test_cells_wait_for_their_encoder_and_pretraining_goes_first(tmp_path):
    (tmp_path / "encoders").mkdir()
    jobs = [pretrain("moco"), cell("moco-a", "moco"), cell("base-a")]
    s = StudySearcher(tmp_path, jobs)
    assert s.suggest("t1")["kind"] == "pretrain"
    assert s.suggest("t2") is None  # pretraining workers not placed yet: hold the baseline cell
    started_marker(tmp_path, "moco").touch()
    assert s.suggest("t2")["job"].cell.cell_id == "base-a-n8-f0"  # workers placed: cells flow
    assert s.suggest("t3") is None  # the MoCo cell waits for its encoder
    encoder_path(tmp_path, "moco").touch()
    assert s.suggest("t3")["job"].cell.cell_id == "moco-a-n8-f0"
    assert s.suggest("t4") == Searcher.FINISHED


def test_hold_expires_and_failed_pretraining_blocks_its_cells(tmp_path):
    (tmp_path / "encoders").mkdir()
    jobs = [pretrain("byol"), cell("byol-a", "byol"), cell("base-a")]
    s = StudySearcher(tmp_path, jobs, hold_s=0.05)
    s.suggest("t1")
    time.sleep(0.1)
    assert s.suggest("t2")["job"].cell.cell_id == "base-a-n8-f0"  # the hold is bounded
    s.on_trial_complete("t1", error=True)
    assert s.suggest("t3") == Searcher.FINISHED
    assert [j.cell.cell_id for j in s.blocked] == ["byol-a-n8-f0"]


def test_progress_line_estimates_from_cell_work_only(capsys, monkeypatch):
    from types import SimpleNamespace

    from raystudy import scheduler
    from raystudy.scheduler import ProgressLine

    clock = [1000.0]
    monkeypatch.setattr(scheduler.time, "time", lambda: clock[0])
    line = ProgressLine(total=3, already=0, weights={"a": 100.0, "b": 100.0, "c": 200.0})

    def trial(cid, acc=None):
        return SimpleNamespace(config={"kind": "cell", "job": SimpleNamespace(label=cid)}, last_result={"overall_accuracy": acc})

    clock[0] += 300  # pretraining: not counted in the rate
    line.on_trial_start(0, [], trial("a"))
    clock[0] += 10
    line.on_trial_complete(0, [], trial("a", 0.5))
    out = capsys.readouterr().out
    assert out.startswith("[1/3] a done OA=0.500 | 310s, ~30s left")  # 10 s per 100 units, 300 left
