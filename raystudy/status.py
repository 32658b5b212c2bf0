"""``raystudy status RUN_DIR``: done / pending / skipped / failed cells per model and category set."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from raystudy.results import read_table, results_dir


def status_table(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Counts per (model, category_set) and the failed cells with their first error line."""
    grid = read_table(run_dir, "grid")
    trials = read_table(run_dir, "trials")
    merged = grid.merge(trials[["cell_id", "status", "message"]], on="cell_id", how="left")
    merged["state"] = merged["status"].fillna("pending")
    counts = (
        merged.groupby(["model", "category_set", "state"]).size().unstack(fill_value=0).reset_index()
    )
    for col in ("done", "pending", "skipped", "failed"):
        if col not in counts:
            counts[col] = 0
    failed = merged.loc[merged["state"] == "failed", ["cell_id", "message"]]
    return counts[["model", "category_set", "done", "pending", "skipped", "failed"]], failed


def format_status(run_dir: Path) -> str:
    run_dir = Path(run_dir)
    if not results_dir(run_dir).is_dir():
        return f"{run_dir}: not a raystudy run folder (no results/ inside)"
    counts, failed = status_table(run_dir)
    lines = [f"run folder {run_dir}", counts.to_string(index=False)]
    total = counts[["done", "pending", "skipped", "failed"]].sum()
    lines.append(
        f"total: {total['done']} done, {total['pending']} pending, {total['skipped']} skipped, {total['failed']} failed"
    )
    temps = list(results_dir(run_dir).glob("*/.*.tmp"))
    if temps:
        lines.append(f"{len(temps)} half-written result file(s) from an interrupted write (ignored): {temps[0]}")
    for row in failed.itertuples():
        lines.append(f"failed {row.cell_id}: {row.message}")
    return "\n".join(lines)
