"""``raystudy status RUN_DIR``: done / running / pending / failed / skipped cells per model and category set."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from raystudy.events import read_events
from raystudy.results import read_table, results_dir
from raystudy.runfolder import driver_active
from raystudy.storage import Location, as_location

STATES = ("done", "running", "pending", "skipped", "failed")


def started_cells(run_dir: str | Path | Location) -> set[str]:
    """Cells whose trial started (audit log) but has not written its result."""
    started: set[str] = set()
    finished: set[str] = set()
    for event in read_events(run_dir):
        (finished if event["event"] == "finish" else started).add(event["cell_id"])
    return started - finished


def status_table(run_dir: str | Path | Location) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Counts per (model, category set) and the failed cells with their first error line."""
    grid = read_table(run_dir, "grid")
    trials = read_table(run_dir, "trials")
    merged = grid.merge(trials[["cell_id", "status", "message"]], on="cell_id", how="left")
    merged["state"] = merged["status"].fillna("pending")
    if driver_active(run_dir):
        running = merged["cell_id"].isin(started_cells(run_dir)) & (merged["state"] == "pending")
        merged.loc[running, "state"] = "running"
    counts = merged.groupby(["model", "category_set", "state"]).size().unstack(fill_value=0).reset_index()
    for col in STATES:
        if col not in counts:
            counts[col] = 0
    failed = merged.loc[merged["state"] == "failed", ["cell_id", "message"]]
    return counts[["model", "category_set", *STATES]], failed


def is_run_folder(run_dir: str | Path | Location) -> bool:
    """True for a location a study wrote results to."""
    return results_dir(run_dir).is_dir()


def format_status(run_dir: str | Path | Location) -> str:
    run_dir = as_location(run_dir)
    if not is_run_folder(run_dir):
        return f"{run_dir}: not a raystudy run folder (no results/ inside)"
    counts, failed = status_table(run_dir)
    active = "a driver is running" if driver_active(run_dir) else "no driver running; rerun the command to resume"
    lines = [f"run folder {run_dir} ({active})", counts.to_string(index=False)]
    total = counts[list(STATES)].sum()
    lines.append("total: " + ", ".join(f"{total[s]} {s}" for s in STATES))
    temps = [f for table in results_dir(run_dir).iterdir() for f in table.glob(".*.tmp")]
    if temps:
        lines.append(f"{len(temps)} half-written result file(s) from an interrupted write (ignored), e.g. {temps[0]}")
    for row in failed.itertuples():
        first = (row.message or "").splitlines()[0] if row.message else "no message"
        lines.append(f"failed {row.cell_id}: {first}")
    return "\n".join(lines)
