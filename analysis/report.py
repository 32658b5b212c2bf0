"""One self-contained, offline HTML report of a run (plotly.js inlined once)."""

from __future__ import annotations

import html
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from analysis import figures
from analysis.figures._common import is_no_data, no_data_figure, no_data_note
from analysis.labeling import doa_table
from analysis.results import Results, load_results
from analysis.select import category_sets, done_trials, n_categories_of, set_label
from analysis.stats import fit_learning_curves, learning_curve_answers, paired_difference_table
from analysis.summary import (
    advantage_sentences, answer_sentences, cell_states, generalization_sentences, grid_progress,
    knee_sentences,
)

PLOT_CONFIG = {"displaylogo": False, "responsive": True}
MAX_CELL_ROWS = 500

CSS = """
body{font-family:Helvetica,Arial,sans-serif;margin:0 auto;max-width:1320px;padding:16px 28px;color:#222}
h1{margin-bottom:4px} h2{border-bottom:2px solid #dde6f0;padding-bottom:4px;margin-top:36px}
.meta{color:#666;font-size:13px} .figure{margin:18px 0 30px 0}
.caption{font-size:14px;color:#333;margin:4px 0 6px 0;max-width:1100px}
.nodata{background:#f6f6f6;border:1px dashed #bbb;padding:14px;color:#666;font-style:italic}
.progress span{display:inline-block;margin-right:14px;padding:3px 9px;border-radius:4px;font-weight:bold}
.done{background:#d8f0d8}.skipped{background:#f0ecd0}.failed{background:#f6d5d5}.missing{background:#e4e4e4}
table.cells{border-collapse:collapse;font-size:12px} table.cells td,table.cells th{border:1px solid #ddd;padding:2px 6px}
ul.summary li{margin:4px 0}
"""


@dataclass
class Entry:
    """One report figure: section, paper reference, caption and the figure itself."""

    section: str
    paper: str
    caption: str
    figure: go.Figure


def _safe(build: Callable[[], go.Figure], title: str) -> go.Figure:
    try:
        return build()
    except Exception as err:  # a broken figure must not take the report down
        return no_data_figure(title, f"could not be drawn: {type(err).__name__}: {err}")


def report_entries(res: Results) -> tuple[list[Entry], dict[str, object]]:
    """All report figures in order, plus the computed tables the summary uses."""
    cfg = res.config
    doa = doa_table(res.trials, res.per_class, cfg, res.catalog)
    paired = paired_difference_table(res.trials, str(cfg["cssl_model"]), str(cfg["reference_model"]),
                                     n_boot=int(cfg["n_bootstrap"]), seed=int(cfg["seed"]))
    fits = fit_learning_curves(res.trials, n_boot=int(cfg["curve_bootstrap"]), seed=int(cfg["seed"]))
    answers = learning_curve_answers(fits, cfg["targets"])
    sets = category_sets(res.trials, res.grid, res.confusion) or [None]
    gen_sets = category_sets(done_trials(res.trials, "generalization_accuracy"))
    entries = [Entry("Data", "Fig. 1", "Images per category in every campaign; categories sorted by the "
                     "labeled campaign's counts.", _safe(lambda: figures.class_distribution(res), "Class distribution"))]
    for i, cset in enumerate(sets):
        label = set_label(cset, n_categories_of(cset, res.trials, res.grid)) if cset else "all category sets"
        f_acc, f_doa, f_cm = ("Fig. 4", "Fig. 5", "Figs. 6 and 7") if i == 0 else ("Fig. 9", "Fig. 10", "Fig. 11")
        sec = f"Results: {label}"
        entries += [
            Entry(sec, f_acc, "Overall accuracy over the cross-validation folds: boxes span the quartiles, the line "
                  "is the median, whiskers reach the minimum and maximum; the right panel zooms on the two "
                  "largest sizes.", _safe(lambda c=cset: figures.accuracy_vs_size(res, category_set=c), "Overall accuracy")),
            Entry(sec, f_doa, "Decreased overall accuracy (reference OA minus the CSSL model's mean OA) against the "
                  "labeling time saved; the knee is found automatically (largest distance to the chord).",
                  _safe(lambda c=cset: figures.doa_vs_time_saved(res, category_set=c, table=doa), "DOA vs time saved")),
            Entry(sec, f_cm, "Validation confusion matrices averaged over folds, the two compared models side by "
                  "side; for many categories split into basic habits and complex shapes merged by process.",
                  _safe(lambda c=cset: figures.confusion_matrices(res, category_set=c), "Confusion matrices")),
        ]
    for cset in gen_sets or [None]:
        entries.append(Entry("Generalization", "Fig. 12", "Accuracy of every fold's model on the campaign never "
                             "used in training, without further fine-tuning.",
                             _safe(lambda c=cset: figures.generalization(res, category_set=c), "Generalization")))
    entries += [
        Entry("Representations", "Fig. 8", "t-SNE maps of encoder embeddings before pre-training, after "
              "pre-training and after fine-tuning (columns: training-set sizes).",
              _safe(lambda: figures.tsne_grid(res), "t-SNE")),
        Entry("Training", "Fig. A1", "Contrastive pre-training loss.", _safe(lambda: figures.pretraining_loss(res), "Pre-training loss")),
        Entry("Training", "Fig. A2", "Fine-tuning loss of the CSSL model for every training-set size.",
              _safe(lambda: figures.finetuning_loss(res), "Fine-tuning loss")),
        Entry("Training", "Table B1", "Training time per model and size.", _safe(lambda: figures.training_time_table(res), "Training time")),
        Entry("Beyond the paper", "new", "Fold-paired difference of the CSSL model minus the reference model: mean, "
              "seeded bootstrap 95 % interval and paired-test p-value (hover).",
              _safe(lambda: figures.paired_differences(res, table=paired), "Paired differences")),
    ]
    for cset in category_sets(done_trials(res.trials)) or [None]:
        entries.append(Entry("Beyond the paper", "new", "Learning-curve fit OA(n) = a \u2212 b\u00b7n^(\u2212c) per model on "
                             "fold-level points, with a bootstrap-over-folds 95 % band; crosses mark where a target is reached.",
                             _safe(lambda c=cset: figures.learning_curves(res, category_set=c, fits=fits), "Learning curves")))
    entries.append(Entry("Beyond the paper", "new", "Per-category F1 against the category's share of the training "
                         "subset (mean over folds, every size).", _safe(lambda: figures.f1_vs_share(res), "F1 vs share")))
    extra = {"doa": doa, "paired": paired, "fits": fits, "answers": answers}
    return entries, extra


def _cells_html(states: pd.DataFrame) -> str:
    todo = states[states["state"] != "done"]
    if todo.empty:
        return "<p>Every planned cell has a finished trial.</p>" if len(states) else "<p>No grid yet.</p>"
    parts = []
    for state in ("missing", "failed", "skipped"):
        sub = todo[todo["state"] == state]
        if sub.empty:
            continue
        rows = "".join(
            "<tr>" + "".join(f"<td>{html.escape('' if v is None or v != v else str(v))}</td>"
                             for v in r[["cell_id", "model", "category_set", "train_size", "fold", "reason"]]) + "</tr>"
            for _, r in sub.head(MAX_CELL_ROWS).iterrows())
        more = f"<p>... and {len(sub) - MAX_CELL_ROWS} more.</p>" if len(sub) > MAX_CELL_ROWS else ""
        what = {"missing": "cells without a trials row yet", "failed": "failed cells", "skipped": "skipped cells"}[state]
        parts.append(
            f"<details{' open' if state == 'missing' and len(sub) <= 40 else ''}><summary><b>{len(sub)} {what}</b></summary>"
            f"<table class='cells' id='{state}-cells'><tr><th>cell</th><th>model</th><th>category set</th>"
            f"<th>n</th><th>fold</th><th>reason / message</th></tr>{rows}</table>{more}</details>")
    return "".join(parts)


def render_html(res: Results) -> str:
    """The whole report as one HTML string."""
    entries, extra = report_entries(res)
    cfg = res.config
    progress = grid_progress(res.grid, res.trials)
    states = cell_states(res.grid, res.trials)
    sentences = (knee_sentences(extra["doa"], cfg) + advantage_sentences(res.trials, cfg)
                 + generalization_sentences(res.trials, cfg))
    answers = answer_sentences(extra["answers"])
    esc = html.escape
    body = [f"<h1>{esc(res.study_name)} \u2014 label-efficiency report</h1>",
            f"<p class='meta'>run folder {esc(str(res.run_dir or ''))} \u00b7 built "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')} \u00b7 CSSL model {esc(str(cfg['cssl_model']))}, reference "
            f"{esc(str(cfg['reference_model']))}, labeling time model {esc(str(cfg['labeling_time_model']))}</p>",
            "<h2>Summary</h2><div class='progress'>"
            + "".join(f"<span class='{s}'>{s}: {progress[s]}</span>" for s in ("done", "skipped", "failed", "missing"))
            + f"<span>of {progress['total']} planned cells</span></div>",
            "<ul class='summary'>" + "".join(f"<li>{esc(s)}</li>" for s in sentences)
            + ("" if sentences else "<li>No finished trials of both compared models yet.</li>") + "</ul>",
            "<h3>How many labeled images to reach a target OA? (learning-curve fits)</h3><ul class='summary'>"
            + "".join(f"<li>{esc(s)}</li>" for s in answers)
            + ("" if answers else "<li>Not enough training-set sizes yet to fit learning curves.</li>") + "</ul>",
            "<h3>Grid cells still open</h3>" + _cells_html(states)]
    toc, sections, n_fig, section = [], [], 0, None
    for i, e in enumerate(entries):
        if e.section != section:
            section = e.section
            sections.append(f"<h2 id='sec-{i}'>{esc(section)}</h2>")
            toc.append(f"<a href='#sec-{i}'>{esc(section)}</a>")
        ref = "new figure" if e.paper == "new" else f"reproduces {e.paper}"
        title = e.figure.layout.title.text if e.figure.layout.title and e.figure.layout.title.text else ""
        cap = f"<p class='caption'><b>{esc(ref)}.</b> {esc(e.caption)}</p>"
        if is_no_data(e.figure):
            sections.append(f"<div class='figure'>{cap}<div class='nodata'>{esc(title.split('<br>')[0])}: "
                            f"{esc(no_data_note(e.figure))}</div></div>")
            continue
        n_fig += 1
        div = e.figure.to_html(full_html=False, include_plotlyjs=False, include_mathjax=False,
                               div_id=f"figure-{n_fig}", config=PLOT_CONFIG, default_width="100%")
        sections.append(f"<div class='figure'>{cap}{div}</div>")
    nav = "<p class='meta'>Sections: " + " \u00b7 ".join(toc) + "</p>"
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='raystudy-figures' content='{n_fig}'>"
            f"<title>{esc(res.study_name)} report</title><style>{CSS}</style>"
            f"<script type='text/javascript'>{get_plotlyjs()}</script></head>"
            f"<body data-figure-count='{n_fig}'>" + "".join(body[:2]) + nav
            + "".join(body[2:]) + "".join(sections) + "</body></html>\n")


def build_report(run_dir: str | Path, out_path: str | Path | None = None) -> Path:
    """Write ``RUN_DIR/report.html`` (or ``out_path``) atomically and return its path."""
    run_dir = Path(run_dir)
    out = Path(out_path) if out_path is not None else run_dir / "report.html"
    text = render_html(load_results(run_dir))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out
