"""The study searcher releases jobs in dependency order, by reference, and never waits without a bound."""

import time

from ray.tune.search import Searcher

from raystudy.grid import Cell, Job
from raystudy.scheduler import StudySearcher
from raystudy.training.pretrain import WORKERS_STARTED


def cell(cid, needs=None):
    model, cset = cid.split("-")
    return Job("cell", model, "resnet18", needs=needs, cell=Cell(model, cset, 4, 8, 0, "resnet18", "resnet18"))


def pretrain(method):
    return Job("pretrain", method, "resnet18", name=method)


def test_cells_wait_for_their_encoder_and_pretraining_goes_first():
    jobs = [pretrain("moco"), cell("moco-a", "moco"), cell("base-a")]
    s = StudySearcher(jobs)
    assert s.suggest("t1")["kind"] == "pretrain"
    assert s.suggest("t2") is None  # pretraining workers not placed yet: hold the baseline cell
    s.on_trial_result("t1", {WORKERS_STARTED: 1})
    assert s.suggest("t2")["job"].cell.cell_id == "base-a-n8-f0"  # workers placed: cells flow
    assert s.suggest("t3") is None  # the MoCo cell waits for its pretraining's result
    s.on_trial_complete("t1", result={"done": True, "encoder": "s3://b/run/encoders/moco.pt"})
    released = s.suggest("t3")["job"]
    assert released.cell.cell_id == "moco-a-n8-f0"
    assert released.path == "s3://b/run/encoders/moco.pt"  # the encoder travels with the job
    assert s.suggest("t4") == Searcher.FINISHED


def test_existing_encoder_releases_at_once():
    s = StudySearcher([cell("moco-a", "moco")], encoders={"moco": "/run/encoders/moco.pt"})
    assert s.suggest("t1")["job"].path == "/run/encoders/moco.pt"


def test_hold_expires_and_failed_pretraining_blocks_its_cells():
    jobs = [pretrain("byol"), cell("byol-a", "byol"), cell("base-a")]
    s = StudySearcher(jobs, hold_s=0.05)
    s.suggest("t1")
    time.sleep(0.1)
    assert s.suggest("t2")["job"].cell.cell_id == "base-a-n8-f0"  # the hold is bounded
    s.on_trial_complete("t1", error=True)
    assert s.suggest("t3") == Searcher.FINISHED
    assert [(j.cell.cell_id, why) for j, why in s.blocked] == [("byol-a-n8-f0", "pretraining of byol failed")]


def test_job_whose_encoder_nobody_writes_fails_at_once():
    """A probe or cell needing an encoder that neither exists nor is being pretrained: no wait."""
    probe = Job("probe", "moco", "resnet18", needs="moco", name="moco")
    s = StudySearcher([probe, cell("moco-a", "moco")])
    assert s.suggest("t1") == Searcher.FINISHED  # not None: nothing to wait for
    assert [j.kind for j, _ in s.blocked] == ["probe", "cell"]
    assert all("no pretraining of it is queued or running" in why for _, why in s.blocked)


def test_pretraining_stopped_without_an_encoder_releases_nobody():
    s = StudySearcher([pretrain("moco"), cell("moco-a", "moco")], hold_s=0.0)
    s.suggest("t1")
    s.on_trial_complete("t1", result={"epoch": 0})  # stopped: no encoder in its last result
    assert s.suggest("t2") == Searcher.FINISHED and len(s.blocked) == 1


def test_interrupted_searcher_hands_out_nothing():
    stopped = [False]
    s = StudySearcher([cell("base-a")], stop=lambda: stopped[0])
    stopped[0] = True
    assert s.suggest("t1") == Searcher.FINISHED and not s.blocked


def test_progress_line_estimates_from_cell_work_only(capsys, monkeypatch):
    from types import SimpleNamespace

    from raystudy import scheduler
    from raystudy.scheduler import ProgressLine

    clock = [1000.0]
    monkeypatch.setattr(scheduler.time, "time", lambda: clock[0])
    line = ProgressLine(total=3, already=0, weights={"a": 100.0, "b": 100.0, "c": 200.0})

    def trial(cid, acc=None):
        return SimpleNamespace(
            config={"kind": "cell", "job": SimpleNamespace(label=cid)}, last_result={"overall_accuracy": acc}
        )

    clock[0] += 300  # pretraining: not counted in the rate
    line.on_trial_start(0, [], trial("a"))
    clock[0] += 10
    line.on_trial_complete(0, [], trial("a", 0.5))
    out = capsys.readouterr().out
    assert out.startswith("[1/3] a done OA=0.500 | 310s, ~30s left")  # 10 s per 100 units, 300 left


def test_selection_encoder_is_required_and_handed_over():
    """A baseline cell of an embedding strategy waits for the selection encoder and gets its URI."""
    job = Job(
        "cell",
        "baseline",
        "resnet18",
        cell=Cell("baseline", "a", 4, 8, 0, "resnet18", "resnet18", selection="coreset"),
        selects_with="moco",
    )
    s = StudySearcher([pretrain("moco"), job], hold_s=0.0)
    assert s.suggest("t1")["kind"] == "pretrain"
    assert s.suggest("t2") is None
    s.on_trial_complete("t1", result={"encoder": "/run/encoders/moco.pt"})
    released = s.suggest("t2")["job"]
    assert released.refs == {"moco": "/run/encoders/moco.pt"} and released.path is None


def test_handing_out_a_large_grid_checks_each_job_a_bounded_number_of_times(monkeypatch):
    """Looking for jobs that can never start was a pass over the queue at every suggestion
    (quadratic in the cells: 4,000 cells took 9 s of the driver); now one pass per producer end."""
    jobs = [pretrain("moco")] + [
        cell(f"{'moco' if i % 2 else 'base'}-s{i}", "moco" if i % 2 else None) for i in range(2000)
    ]
    s = StudySearcher(jobs, hold_s=0.0)
    checks = [0]
    why_never = StudySearcher._why_never

    def counted(self, job, pending):
        checks[0] += 1
        return why_never(self, job, pending)

    monkeypatch.setattr(StudySearcher, "_why_never", counted)
    s.suggest("p")
    s.on_trial_complete("p", result={"encoder": "/run/encoders/moco.pt"})
    handed = 0
    while isinstance(s.suggest(f"t{handed}"), dict):
        s.on_trial_complete(f"t{handed}", result={"done": 1})
        handed += 1
    assert handed == 2000 and not s.blocked
    assert checks[0] <= 2 * len(jobs)  # the queue is checked at the start and once after pretraining
