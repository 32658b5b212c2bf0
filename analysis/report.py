"""One self-contained, offline HTML report of a run (plotly.js inlined once)."""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from analysis import figures
from analysis.figures._common import is_no_data, no_data_figure, no_data_note
from analysis.figures.selection import map_and_picks
from analysis.labeling import doa_table
from analysis.results import Results, load_results
from analysis.sections import (
    SYNTHETIC_BANNER,
    backtest_html,
    csv_link,
    numbers_frame,
    numbers_html,
    pretraining_html,
    run_html,
)
from analysis.select import archs_of, category_sets, done_trials, n_categories_of, set_label
from analysis.stats import (
    BACKTEST_TOLERANCE_PP,
    MAX_BAND_WIDTH,
    MIN_BACKTEST_SIZES,
    MIN_FIT_SIZES,
    QUOTE_LIMIT,
    CurveFit,
    backtest_table,
    fit_learning_curves,
    learning_curve_answers,
    paired_difference_table,
)
from analysis.strategies import compared_sets, labels_saved_table, selection_sentences, strategy_curves
from analysis.summary import (
    advantage_sentences,
    answer_sentences,
    cell_states,
    fit_sentences,
    generalization_sentences,
    grid_progress,
    knee_sentences,
)
from raystudy.storage import Location, as_location

PLOT_CONFIG = {"displaylogo": False, "responsive": True}
MAX_CELL_ROWS = 500

CSS = """
body{font-family:Helvetica,Arial,sans-serif;margin:0 auto;max-width:1320px;padding:0 28px 16px 28px;color:#222}
nav.toc{position:sticky;top:0;z-index:100;background:#fff;border-bottom:1px solid #dde6f0;padding:6px 0;font-size:13px}
nav.toc a{margin-right:12px;color:#1f4e8c;text-decoration:none;white-space:nowrap} h2{scroll-margin-top:48px}
.banner{background:#fff1c2;border:2px solid #e0a800;padding:10px 14px;font-weight:bold;font-size:16px;margin:10px 0}
table.numbers,table.run{border-collapse:collapse;font-size:12px;margin:6px 0}
table.numbers td,table.numbers th,table.run td,table.run th{border:1px solid #ddd;padding:2px 7px;text-align:left}
a.csv{font-size:12px} pre{background:#f6f8fa;padding:8px;font-size:12px;max-height:420px;overflow:auto}
h1{margin-bottom:4px} h2{border-bottom:2px solid #dde6f0;padding-bottom:4px;margin-top:36px}
.meta{color:#666;font-size:13px} .figure{margin:18px 0 30px 0}
.caption{font-size:14px;color:#333;margin:4px 0 6px 0;max-width:1100px}
.nodata{background:#f6f6f6;border:1px dashed #bbb;padding:14px;color:#666;font-style:italic}
.progress span{display:inline-block;margin-right:14px;padding:3px 9px;border-radius:4px;font-weight:bold}
.done{background:#d8f0d8}.skipped{background:#f0ecd0}.failed{background:#f6d5d5}.missing{background:#e4e4e4}
table.cells{border-collapse:collapse;font-size:12px}
table.cells td,table.cells th{border:1px solid #ddd;padding:2px 6px}
ul.summary li{margin:4px 0}
"""


@dataclass
class Entry:
    """One report figure: section, paper reference, caption, the figure and the numbers behind it."""

    section: str
    paper: str
    caption: str
    figure: go.Figure
    data: Callable[[], pd.DataFrame] | None = None  # the figure's numbers, offered as CSV


def _safe(build: Callable[[], go.Figure], title: str) -> go.Figure:
    try:
        return build()
    except Exception as err:  # a broken figure must not take the report down
        return no_data_figure(title, f"could not be drawn: {type(err).__name__}: {err}")


def _rows(frame: pd.DataFrame, **match: object) -> pd.DataFrame:
    """Rows of ``frame`` whose columns equal ``match`` (None matches everything)."""
    for col, value in match.items():
        if value is not None and col in frame.columns:
            frame = frame[frame[col] == value]
    return frame.reset_index(drop=True)


def _fold_values(res: Results, metric: str, cset: str | None, ceiling: bool = False) -> pd.DataFrame:
    cols = ["category_set", "model", "train_size", "fold", metric, "n_train", "n_validation", "protocol"]
    return _rows(done_trials(res.trials, metric, ceiling=ceiling), category_set=cset)[cols]


def _results_entries(res: Results, i: int, cset: str | None, doa: pd.DataFrame) -> list[Entry]:
    """Figs. 4 to 7 (the first category set) or 9 to 11 (every other one) of one category set."""
    label = set_label(cset, n_categories_of(cset, res.trials, res.grid)) if cset else "all category sets"
    f_acc, f_doa, f_cm = ("Fig. 4", "Fig. 5", "Figs. 6 and 7") if i == 0 else ("Fig. 9", "Fig. 10", "Fig. 11")
    sec = f"Results: {label}"
    return [
        Entry(
            sec,
            f_acc,
            "Overall accuracy over the cross-validation folds: boxes span the quartiles, the line "
            "is the median, whiskers reach the minimum and maximum, dots are single folds; dotted line: the "
            "majority-class share of the validation sets (a model predicting one category scores it); dashed "
            "line: the supervised ceiling where it was run; the right panel zooms on the two largest sizes.",
            _safe(lambda: figures.accuracy_vs_size(res, category_set=cset), "Overall accuracy"),
            lambda: pd.concat(
                [_fold_values(res, "overall_accuracy", cset), _fold_values(res, "overall_accuracy", cset, ceiling=True)]
            ),
        ),
        Entry(
            sec,
            f_doa,
            "Decreased overall accuracy (reference OA minus the CSSL model's mean OA, in "
            "percentage points, fold std as bars) against the labeling time saved; a knee (largest distance "
            "to the chord) is marked only where the curve is monotone within the fold spread and the steps "
            "below it exceed the fold spread.",
            _safe(lambda: figures.doa_vs_time_saved(res, category_set=cset, table=doa), "DOA vs time saved"),
            lambda: _rows(doa, category_set=cset),
        ),
        Entry(
            sec,
            f_cm,
            "Validation confusion matrices averaged over folds, the two compared models side by "
            "side; for many categories split into basic habits and complex shapes merged by process.",
            _safe(lambda: figures.confusion_matrices(res, category_set=cset), "Confusion matrices"),
            lambda: _rows(res.confusion, category_set=cset, split="validation"),
        ),
    ]


def _generalization_entry(res: Results, cset: str | None) -> Entry:
    """Fig. 12 of one category set."""
    return Entry(
        "Generalization",
        "Fig. 12",
        "Accuracy of every fold's model on the campaign never "
        "used in training, without further fine-tuning; dotted line: the majority-class share "
        "of that campaign.",
        _safe(lambda: figures.generalization(res, category_set=cset), "Generalization"),
        lambda: _fold_values(res, "generalization_accuracy", cset).assign(
            campaign=lambda d: _rows(done_trials(res.trials, "generalization_accuracy"), category_set=cset)[
                "generalization_campaign"
            ].map(res.campaign)
        ),
    )


def _learning_curve_entry(
    res: Results, cset: str | None, fits: dict[tuple[str, str], CurveFit], answers: pd.DataFrame
) -> Entry:
    """The learning-curve fit of one category set."""
    return Entry(
        "Beyond the paper",
        "new",
        "Learning-curve fit per model: the fold means at each size weighted by their standard errors "
        "(a log-linear model of the fold variance over log n, widened for the folds' overlap), the "
        "family a \u2212 b\u00b7n^(\u2212c) or a \u2212 b\u00b7(n+d)^(\u2212c) chosen by AICc (the "
        "4-parameter one from 6 sizes), with its 95 % delta-method band; crosses mark a target's "
        f"labels-needed number where the report quotes one (up to {QUOTE_LIMIT:g}x the largest size, "
        "backtest passed). A fit with b or c on its bound, a band wider than the limit, fewer than "
        f"{MIN_FIT_SIZES} sizes, no backtest (fewer than {MIN_BACKTEST_SIZES} sizes) or a failed "
        "backtest is drawn dotted and marked unreliable.",
        _safe(lambda: figures.learning_curves(res, category_set=cset, fits=fits), "Learning curves"),
        lambda: pd.concat(
            [_fold_values(res, "overall_accuracy", cset), _rows(answers, category_set=cset)], ignore_index=True
        ),
    )


def _selection_entries(res: Results, cset: str, saved: pd.DataFrame) -> list[Entry]:
    """The selection-strategy figures of one category set."""
    sec = f"Selection strategies: {set_label(cset, n_categories_of(cset, res.trials, res.grid))}"
    return [
        Entry(
            sec,
            "new",
            "Overall accuracy per selection strategy (fold mean ± fold std) for every model "
            "type; every strategy is validated on the same held-out folds, and all model types of a strategy "
            "train on the same selected images (coreset and uncertainty embed with one pretrained encoder).",
            _safe(lambda: figures.selection_curves(res, category_set=cset), "Selection strategies"),
            lambda: _rows(strategy_curves(res.trials), category_set=cset),
        ),
        Entry(
            sec,
            "new",
            "Labels saved at equal OA against random: random's n minus the n at which the "
            "strategy's mean curve reaches random's mean OA (interpolated in log n between measured sizes, "
            "never beyond them). Bars: the 95 % interval, the corrected t interval of the fold-paired "
            "difference at that n mapped through the strategy's measured curve; an end beyond the measured sizes is "
            "open: its bar stops at the measured limit (n minus the largest or the smallest measured n) and the "
            "table says 'less than' or 'more than'. Filled markers: a verdict (fold-paired "
            "difference at the same n with a "
            "Holm-adjusted p \u2264 0.05 of the corrected resampled t test, family: the sizes of one model and "
            "strategy); open markers: no verdict.",
            _safe(lambda: figures.labels_saved(res, category_set=cset, table=saved), "Labels saved"),
            lambda: _rows(saved, category_set=cset),
        ),
    ] + (
        [
            Entry(
                sec,
                "new",
                "The images each strategy picked at the smallest size (fold 0), on a t-SNE map of the "
                "embeddings the strategies picked on (the selection encoder's, fp32; grey: the labeled pool, "
                "at most embeddings.max_points images). Random's draw is stratified by category and not stored.",
                _safe(lambda: figures.selection_picks(res, category_set=cset), "Selection picks"),
                lambda: map_and_picks(res.selection_map, res.selections, cset)[1].reset_index(drop=True),
            )
        ]
        if (res.selection_map["category_set"] == cset).any()
        else []
    )


def report_entries(res: Results) -> tuple[list[Entry], dict[str, object]]:
    """All report figures in order (each with its numbers), plus the computed tables the summary uses."""
    cfg = res.config
    doa = doa_table(res.trials, res.per_class, cfg, res.catalog)
    paired = paired_difference_table(
        res.trials,
        str(cfg["cssl_model"]),
        str(cfg["reference_model"]),
        n_boot=int(cfg["n_bootstrap"]),
        seed=int(cfg["seed"]),
    )
    tolerance = float(cfg.get("backtest_tolerance_pp") or BACKTEST_TOLERANCE_PP)
    # one set of curves per backbone (never pooled); the figures draw the first
    per_arch = {a: fit_learning_curves(res.trials, arch=a) for a in archs_of(res.trials)}
    fits = next(iter(per_arch.values()))
    band = float(cfg.get("max_band_width") or MAX_BAND_WIDTH)
    answers = pd.concat(
        [learning_curve_answers(f, cfg["targets"], band, tolerance).assign(arch=a) for a, f in per_arch.items()],
        ignore_index=True,
    )
    backtests = pd.concat([backtest_table(f, tolerance).assign(arch=a) for a, f in per_arch.items()], ignore_index=True)
    sets: list[str | None] = list(category_sets(res.trials, res.grid, res.confusion)) or [None]
    gen_sets: list[str | None] = list(category_sets(done_trials(res.trials, "generalization_accuracy"))) or [None]
    dataset = lambda: res.dataset.assign(campaign=res.dataset["campaign"].map(res.campaign))  # noqa: E731 - an Entry's numbers are a thunk
    entries = [
        Entry(
            "Data",
            "Fig. 1",
            "Images per category in every campaign; categories sorted by the labeled campaign's counts.",
            _safe(lambda: figures.class_distribution(res), "Class distribution"),
            dataset,
        )
    ]
    for i, cset in enumerate(sets):
        entries += _results_entries(res, i, cset, doa)
    for cset in gen_sets:
        entries.append(_generalization_entry(res, cset))
    entries += [
        Entry(
            "Representations",
            "Fig. 8",
            "t-SNE maps of encoder embeddings before pre-training, after "
            "pre-training and after fine-tuning (columns: training-set sizes).",
            _safe(lambda: figures.tsne_grid(res), "t-SNE"),
            lambda: res.embeddings,
        ),
        Entry(
            "Training",
            "Fig. A1",
            "Contrastive pre-training loss; dotted line: the no-learning level ln(K+1) of "
            "MoCo's InfoNCE with K queue negatives (an encoder that tells no key apart).",
            _safe(lambda: figures.pretraining_loss(res), "Pre-training loss"),
            lambda: _rows(res.losses, stage="pretrain"),
        ),
        Entry(
            "Training",
            "new",
            "Online kNN accuracy of each encoder after every pre-training epoch, on a fixed labeled probe "
            "slice that no cell trains or validates on (bars: Wilson 95 % interval of the share of correct "
            "queries); dotted: the same encoder at its starting weights. A curve that does not rise above its "
            "dotted line is an encoder that did not learn (pretrain.learn_margin_pp stops such a study).",
            _safe(lambda: figures.online_knn(res), "Online kNN"),
            lambda: figures.online_knn_table(res.pretraining),
        ),
        Entry(
            "Training",
            "Fig. A2",
            "Fine-tuning loss of the CSSL model for every training-set size.",
            _safe(lambda: figures.finetuning_loss(res), "Fine-tuning loss"),
            lambda: _rows(res.losses, stage="finetune", model=str(cfg["cssl_model"])),
        ),
        Entry(
            "Training",
            "Table B1",
            "Training time per model and size.",
            _safe(lambda: figures.training_time_table(res), "Training time"),
            lambda: pd.concat(
                [
                    res.pretraining.assign(stage="pretrain"),
                    done_trials(res.trials, "train_seconds")[
                        ["model", "category_set", "train_size", "fold", "train_seconds"]
                    ].assign(stage="finetune"),
                ]
            ),
        ),
        Entry(
            "Beyond the paper",
            "new",
            "Fold-paired difference of the CSSL model minus the reference model "
            "(percentage points): mean, 95 % interval (Student t below 10 folds, bootstrap from 10, both widened "
            "for the overlap of the folds' images) and the Holm-adjusted p of the corrected resampled t test under "
            "each mean (family: every size of one category set; * and no n.s.: adjusted p \u2264 0.05).",
            _safe(lambda: figures.paired_differences(res, table=paired), "Paired differences"),
            lambda: paired,
        ),
    ]
    fit_sets: list[str | None] = list(category_sets(done_trials(res.trials))) or [None]
    for cset in fit_sets:
        entries.append(_learning_curve_entry(res, cset, fits, answers))
    entries.append(
        Entry(
            "Beyond the paper",
            "new",
            "Backtest of every learning curve: fitted without its largest size, the curve predicts that "
            "size's mean OA (bar: 95 % prediction interval, the band plus the measured mean's own "
            f"uncertainty); filled circle: measured within {tolerance:g} pp of the prediction "
            "(analysis.backtest_tolerance_pp), the condition for quoting a labels-needed number. Curves "
            f"with fewer than {MIN_BACKTEST_SIZES} sizes get no backtest and no number.",
            _safe(lambda: figures.backtest(res, table=backtests), "Backtest"),
            lambda: backtests,
        )
    )
    saved = labels_saved_table(res.trials)
    for cset in compared_sets(res.trials):  # only where more than one selection strategy ran
        entries += _selection_entries(res, cset, saved)
    entries.append(
        Entry(
            "Beyond the paper",
            "new",
            "Per-category F1 against the category's share of the training subset (mean over folds, every size).",
            _safe(lambda: figures.f1_vs_share(res), "F1 vs share"),
            lambda: _rows(res.per_class, split="validation"),
        )
    )
    extra = {
        "doa": doa,
        "paired": paired,
        "fits": fits,
        "answers": answers,
        "backtests": backtests,
        "selection": saved,
    }
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
            "<tr>"
            + "".join(
                f"<td>{html.escape('' if v is None or v != v else str(v))}</td>"
                for v in r[["cell_id", "model", "category_set", "train_size", "fold", "reason"]]
            )
            + "</tr>"
            for _, r in sub.head(MAX_CELL_ROWS).iterrows()
        )
        more = f"<p>... and {len(sub) - MAX_CELL_ROWS} more.</p>" if len(sub) > MAX_CELL_ROWS else ""
        what = {"missing": "cells without a trials row yet", "failed": "failed cells", "skipped": "skipped cells"}[
            state
        ]
        parts.append(
            f"<details{' open' if state == 'missing' and len(sub) <= 40 else ''}>"
            f"<summary><b>{len(sub)} {what}</b></summary>"
            f"<table class='cells' id='{state}-cells'><tr><th>cell</th><th>model</th><th>category set</th>"
            f"<th>n</th><th>fold</th><th>reason / message</th></tr>{rows}</table>{more}</details>"
        )
    return "".join(parts)


def _entry_csv(e: Entry, name: str) -> str:
    if e.data is None:
        return ""
    try:
        data = e.data()
    except Exception as err:  # the figure stays; only its download is missing
        return f"<p class='caption'>numbers not available: {html.escape(type(err).__name__)}</p>"
    return f"<p>{csv_link(data, name)}</p>" if data is not None and len(data.columns) else ""


def render_html(res: Results) -> str:
    """The whole report as one HTML string."""
    entries, extra = report_entries(res)
    cfg = res.config
    progress = grid_progress(res.grid, res.trials)
    states = cell_states(res.grid, res.trials)
    sentences = (
        knee_sentences(extra["doa"], cfg)
        + advantage_sentences(res.trials, cfg, extra["paired"])
        + generalization_sentences(res.trials, cfg, res.campaign, res.confusion)
        + selection_sentences(extra["selection"])
        + fit_sentences(res.trials)
    )
    answers = answer_sentences(extra["answers"])
    tolerance = float(cfg.get("backtest_tolerance_pp") or BACKTEST_TOLERANCE_PP)
    esc = html.escape
    head = [f"<h1>{esc(res.study_name)} \u2014 label-efficiency report</h1>"]
    if res.synthetic:
        head.append(
            f"<div class='banner' id='synthetic-banner'>{esc(SYNTHETIC_BANNER.capitalize())}: the images are "
            "the embedded procedural set, the campaign names are placeholders.</div>"
        )
    head.append(
        f"<p class='meta'>run folder {esc(str(res.run_dir or ''))} \u00b7 built "
        f"{time.strftime('%Y-%m-%d %H:%M:%S')} \u00b7 CSSL model {esc(str(cfg['cssl_model']))}, reference "
        f"{esc(str(cfg['reference_model']))}, labeling time model {esc(str(cfg['labeling_time_model']))}</p>"
    )
    numbers = numbers_frame(res)
    body = [
        (
            "summary",
            "Summary",
            "<div class='progress'>"
            + "".join(f"<span class='{s}'>{s}: {progress[s]}</span>" for s in ("done", "skipped", "failed", "missing"))
            + f"<span>of {progress['total']} planned cells</span></div>"
            "<ul class='summary' id='summary-sentences'>"
            + "".join(f"<li>{esc(s)}</li>" for s in sentences)
            + ("" if sentences else "<li>No finished trials of both compared models yet.</li>")
            + "</ul>"
            "<h3>How many labeled images to reach a target OA? (learning-curve fits)</h3>"
            f"<p class='caption'>A number is given only for a curve whose backtest passed (fitted without "
            f"the largest size, it predicts that size within {esc(f'{tolerance:g}')} pp) and only up to "
            f"{QUOTE_LIMIT:g}x the largest measured size; curves with fewer than {MIN_BACKTEST_SIZES} sizes "
            "get no backtest and no number.</p>"
            + backtest_html(extra["backtests"])
            + "<ul class='summary' id='answer-sentences'>"
            + "".join(f"<li>{esc(s)}</li>" for s in answers)
            + ("" if answers else "<li>Not enough training-set sizes yet to fit learning curves.</li>")
            + "</ul>"
            "<h3>Grid cells still open</h3>" + _cells_html(states),
        ),
        ("pretraining", "Did pretraining learn?", pretraining_html(res)),
        (
            "numbers",
            "Numbers behind the figures",
            "<p class='caption'>Overall accuracy per category set, model and size over the finished folds "
            "(std and differences in percentage points, pp); n_train and n_validation are images per fold.</p>"
            + numbers_html(res, numbers),
        ),
    ]
    toc = [f"<a href='#{i}'>{esc(t)}</a>" for i, t, _ in body]
    parts = [f"<h2 id='{i}'>{esc(t)}</h2>{h}" for i, t, h in body]
    n_fig, section = 0, None
    for i, e in enumerate(entries):
        if e.section != section:
            section = e.section
            parts.append(f"<h2 id='sec-{i}'>{esc(section)}</h2>")
            toc.append(f"<a href='#sec-{i}'>{esc(section)}</a>")
        ref = "new figure" if e.paper == "new" else f"reproduces {e.paper}"
        title = e.figure.layout.title.text if e.figure.layout.title and e.figure.layout.title.text else ""
        cap = f"<p class='caption'><b>{esc(ref)}.</b> {esc(e.caption)}</p>"
        if is_no_data(e.figure):
            parts.append(
                f"<div class='figure'>{cap}<div class='nodata'>{esc(title.split('<br>')[0])}: "
                f"{esc(no_data_note(e.figure))}</div></div>"
            )
            continue
        n_fig += 1
        div = e.figure.to_html(
            full_html=False,
            include_plotlyjs=False,
            include_mathjax=False,
            div_id=f"figure-{n_fig}",
            config=PLOT_CONFIG,
            default_width="100%",
        )
        name = f"figure-{n_fig}-{e.paper if e.paper != 'new' else 'new'}-{title.split('<br>')[0][:60]}"
        parts.append(f"<div class='figure'>{cap}{div}{_entry_csv(e, name)}</div>")
    parts.append(f"<h2 id='run'>Run: provenance</h2>{run_html(res)}")
    toc.append("<a href='#run'>Run</a>")
    nav = "<nav class='toc' id='toc'>" + "".join(toc) + "</nav>"
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='raystudy-figures' content='{n_fig}'>"
        f"<title>{esc(res.study_name)} report</title><style>{CSS}</style>"
        f"<script type='text/javascript'>{get_plotlyjs()}</script></head>"
        f"<body data-figure-count='{n_fig}'>" + nav + "".join(head) + "".join(parts) + "</body></html>\n"
    )


def build_report(run_dir: str | Path | Location, out_path: str | Path | Location | None = None) -> Path | Location:
    """Write ``RUN_DIR/report.html`` (or ``out_path``; paths or URIs) atomically, and the
    fold-averaged numbers (the report's "Numbers behind the figures") as ``numbers.csv`` beside it;
    return where the report is: a :class:`~pathlib.Path` on a local disk, else the :class:`Location`."""
    run_dir = as_location(run_dir)
    out = as_location(out_path) if out_path is not None else run_dir / "report.html"
    results = load_results(run_dir)
    out.write_text(render_html(results))
    (out.parent / "numbers.csv").write_text(numbers_frame(results).to_csv(index=False))
    return out.local_path() if out.is_local else out
