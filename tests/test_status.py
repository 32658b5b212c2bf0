import fcntl
import json

import pandas as pd

from raystudy.results import write_table
from raystudy.status import format_status


def make_run(tmp_path):
    cells = [f"baseline-4cat-n8-f{i}" for i in range(4)]
    grid = pd.DataFrame(
        {
            "cell_id": cells,
            "model": "baseline",
            "category_set": "4cat",
            "n_categories": 4,
            "train_size": 8,
            "fold": range(4),
            "planned": "run",
        }
    )
    write_table(tmp_path, "grid", "grid", grid)
    write_table(tmp_path, "trials", cells[0], pd.DataFrame([{"cell_id": cells[0], "status": "done"}]))
    write_table(
        tmp_path,
        "trials",
        cells[1],
        pd.DataFrame([{"cell_id": cells[1], "status": "failed", "message": "RuntimeError: boom\ntraceback"}]),
    )
    (tmp_path / "logs").mkdir()
    events = [
        {"cell_id": cells[0], "event": "start"},
        {"cell_id": cells[0], "event": "finish"},
        {"cell_id": cells[2], "event": "start"},
    ]
    (tmp_path / "logs" / "trials.jsonl").write_text("\n".join(json.dumps(e) for e in events) + "\n{cut")
    return cells


def test_status_counts_and_failures(tmp_path):
    make_run(tmp_path)
    text = format_status(tmp_path)
    assert "1 done, 0 running, 2 pending, 0 skipped, 1 failed" in text
    assert "failed baseline-4cat-n8-f1: RuntimeError: boom" in text and "traceback" not in text
    assert "no driver running" in text


def test_status_shows_running_while_driver_holds_lock(tmp_path):
    make_run(tmp_path)
    with open(tmp_path / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        text = format_status(tmp_path)
    assert "1 done, 1 running, 1 pending, 0 skipped, 1 failed" in text
    assert "a driver is running" in text


def test_status_reports_half_written_files(tmp_path):
    make_run(tmp_path)
    (tmp_path / "results" / "trials" / ".x.parquet.1.tmp").write_bytes(b"PAR1")
    assert "half-written" in format_status(tmp_path)
