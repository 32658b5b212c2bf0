"""HTML sections of the report besides the figures: did pretraining learn, the numbers table,
provenance (run facts, config, Parquet paths) and the CSV download link of a figure's numbers."""

from __future__ import annotations

import base64
import html
import re
import time
from typing import Any

import numpy as np
import pandas as pd
import yaml

from analysis.config import display_name, order_models, pretrain_name
from analysis.figures.training import no_learning_levels
from analysis.results import TABLES, Results
from analysis.select import category_sets, done_trials, n_categories_of, set_label
from analysis.stats import ALPHA, holm, paired_accuracy_test
from raystudy.registry import method_names

esc = html.escape
NOT_RECORDED = "not recorded"
SYNTHETIC_BANNER = "synthetic demonstration data, not scientific results"


def csv_link(data: pd.DataFrame, name: str) -> str:
    """An offline download link holding ``data`` as CSV in a ``data:text/csv;base64`` URL.

    Example:
        >>> csv_link(pd.DataFrame({"n": [64]}), "fig 4").startswith("<a class='csv' download='fig-4.csv'")
        True
    """
    frame = data.copy()
    for col in frame.columns:  # list cells (paired fold differences) as 'a;b;c'
        if frame[col].map(lambda v: isinstance(v, (list, tuple, np.ndarray))).any():
            frame[col] = frame[col].map(
                lambda v: ";".join(map(str, v)) if isinstance(v, (list, tuple, np.ndarray)) else v
            )
    payload = base64.b64encode(frame.to_csv(index=False).encode("utf-8")).decode("ascii")
    file = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") + ".csv"
    return (
        f"<a class='csv' download='{file}' href='data:text/csv;base64,{payload}'>"
        f"download the numbers (CSV, {len(frame):,} rows)</a>"
    )


def _table(header: list[str], rows: list[list[Any]], cls: str = "numbers", table_id: str | None = None) -> str:
    ident = f" id='{table_id}'" if table_id else ""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(str(v))}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table class='{cls}'{ident}><tr>{head}</tr>{body}</table>"


def _pct(x: Any) -> str:
    return "n/a" if x is None or x != x else f"{100 * float(x):.1f} %"


# ------------------------------------------------------------------ did pretraining learn?


PROBE_KINDS = {"knn_accuracy": "knn", "linear_probe_accuracy": "linear"}  # probes column -> predictions' probe
STARTING_WEIGHTS = ("random_init", "pretrain_init", "random")  # probe names of the weights pretraining starts from


def _is_start(name: Any) -> bool:
    return str(name).split("-")[0] in STARTING_WEIGHTS


def _starting_probe(probes: pd.DataFrame, arch: Any) -> pd.Series | None:
    """The probe of the weights pretraining started from on ``arch`` (any arch for runs from
    before the probes recorded it)."""
    start = probes[probes["model"].map(_is_start).astype(bool)]
    if "arch" in start.columns and start["arch"].notna().any() and arch is not None:
        start = start[start["arch"].isna() | (start["arch"] == arch)]
    return start.iloc[-1] if len(start) else None


def _paired(res: Results, name: str, reference: str, kind: str) -> dict[str, float] | None:
    """McNemar and the 95 % interval of encoder ``name`` against ``reference`` on one probe's
    per-image predictions (:func:`analysis.stats.paired_accuracy_test`); None without them."""
    preds = res.probe_predictions
    if preds.empty:
        return None
    mine = preds[(preds["model"] == name) & (preds["probe"] == kind)]
    ref = preds[(preds["model"] == reference) & (preds["probe"] == kind)]
    both = mine.merge(ref, on="image_id", suffixes=("", "_ref"))
    if both.empty:
        return None
    return paired_accuracy_test(both["predicted"] == both["label"], both["predicted_ref"] == both["label_ref"])


def pretraining_verdicts(res: Results) -> list[dict[str, Any]]:
    """Per pretrained encoder: probe accuracies against its own starting weights (random init or
    ``pretrain_init``) on the same backbone, and the final loss against the no-learning level.

    With per-image probe predictions (``probe_predictions``) each difference gets McNemar's test
    and a 95 % interval, Holm-adjusted over the family of every encoder x probe of the run; the
    verdict claims only what survives the adjustment. Runs from before those predictions fall
    back to the binomial standard error of the two accuracies (2 SE, no adjustment), and say so.
    """
    methods = list(method_names())
    probes = res.probes[res.probes["model"].notna()]
    levels = no_learning_levels(res) if len(res.pretraining) else {}
    encoders = probes[~probes["model"].map(_is_start).astype(bool)]
    names = list(dict.fromkeys(list(encoders["model"].astype(str))))
    pre_models = [m for m in res.pretraining["model"].dropna().astype(str) if m in methods]
    names += [m for m in order_models(pre_models) if m not in names]
    rows: list[dict[str, Any]] = []
    tests: list[dict[str, float]] = []  # every paired result of the run: the Holm family
    for name in names:
        p = encoders[encoders["model"] == name]
        method = name.split("-")[0]
        pre = res.pretraining[res.pretraining["model"] == method]
        arch = p["arch"].iloc[-1] if len(p) and "arch" in p.columns else None
        base = _starting_probe(probes, arch if arch == arch else None)
        row: dict[str, Any] = {"model": method, "name": name, "arch": arch, "reference": None}
        if base is not None:
            row["reference"] = "pretrain_init" if str(base["model"]).startswith("pretrain_init") else "random init"
        for metric, kind in PROBE_KINDS.items():
            mine = float(p[metric].iloc[-1]) if len(p) and p[metric].iloc[-1] == p[metric].iloc[-1] else None
            if mine is None and len(pre) and pre[metric].iloc[-1] == pre[metric].iloc[-1]:
                mine = float(pre[metric].iloc[-1])
            ref = float(base[metric]) if base is not None and base[metric] == base[metric] else None
            row[metric], row[f"random_{metric}"] = mine, ref
            if mine is None or ref is None or base is None:
                continue
            paired = _paired(res, name, str(base["model"]), kind)
            if paired is not None:
                row[f"{metric}_test"] = paired
                tests.append(paired)
                continue
            n_test = float(base["n_test"]) if base["n_test"] == base["n_test"] else np.nan
            se = np.sqrt((mine * (1 - mine) + ref * (1 - ref)) / n_test) if n_test == n_test and n_test > 0 else np.nan
            row[f"{metric}_se"] = se
        rows.append(row)
    adjusted: list[float] = list(holm(np.array([t["p_value"] for t in tests]))) if tests else []
    for paired, p_adj in zip(tests, adjusted, strict=True):
        paired["p_adjusted"], paired["family"] = float(p_adj), len(tests)
    out = []
    for row in rows:
        better: list[str] = []
        worse: list[str] = []
        for metric in PROBE_KINDS:
            paired, se = row.get(f"{metric}_test"), row.get(f"{metric}_se")
            mine, ref = row.get(metric), row.get(f"random_{metric}")
            if paired is not None:
                if paired["p_adjusted"] <= ALPHA:
                    (better if paired["diff"] > 0 else worse).append(metric)
            elif se is not None and se == se and mine is not None and ref is not None:
                if mine - ref > 2 * se:
                    better.append(metric)
                elif ref - mine > 2 * se:
                    worse.append(metric)
        m = row["model"]
        pre = res.pretraining[res.pretraining["model"] == m]
        row["final_loss"] = (
            float(pre["final_loss"].iloc[-1])
            if len(pre) and pre["final_loss"].iloc[-1] == pre["final_loss"].iloc[-1]
            else None
        )
        row["level_name"], row["level"] = levels.get(m, (None, None))
        at_level = (
            row["level"] is not None and row["final_loss"] is not None and row["final_loss"] >= 0.95 * row["level"]
        )
        tested = any(row.get(f"{metric}_test") is not None for metric in PROBE_KINDS)
        rule = (
            f"McNemar on the same test images, Holm over {len(tests)} tests (every encoder x probe)"
            if tested
            else "more than 2 binomial standard errors"
        )
        start = f"its starting weights ({row['reference']})" if row["reference"] else "its starting weights"
        if row.get("knn_accuracy") is None or row.get("random_knn_accuracy") is None:
            verdict = f"cannot tell: no probe of this encoder and of {start} on the same backbone recorded"
        elif len(better) == 2 and not at_level:
            verdict = f"yes: both probes beat {start} ({rule})"
        elif worse:
            verdict = f"no: a probe is worse than {start} ({rule})"
        else:
            verdict = (
                f"no evidence: neither probe differs from {start} ({rule})"
                if not better
                else f"partly: only one probe beats {start} ({rule})"
            )
        if at_level:
            verdict += f"; the final loss is at the no-learning level {row['level_name']}"
        row["verdict"] = verdict
        out.append(row)
    return out


def _vs_random(r: dict[str, Any], metric: str) -> str:
    """One probe accuracy of a pretraining verdict row against its starting weights, in percentage
    points: with McNemar's interval and Holm-adjusted p where per-image predictions exist."""
    if r.get(metric) is None:
        return "n/a"
    ref = r.get(f"random_{metric}")
    if ref is None:
        return _pct(r[metric])
    paired = r.get(f"{metric}_test")
    if paired is not None:
        return (
            f"{_pct(r[metric])} vs {_pct(ref)} ({100 * paired['diff']:+.1f} pp, 95 % CI "
            f"{100 * paired['low']:+.1f} to {100 * paired['high']:+.1f}; McNemar Holm-adjusted "
            f"p = {paired['p_adjusted']:.2g})"
        )
    se = r.get(f"{metric}_se")
    se_txt = f" \u00b1 {100 * se:.1f}" if se is not None and se == se else ""
    return f"{_pct(r[metric])} vs {_pct(ref)} ({100 * (r[metric] - ref):+.1f}{se_txt} pp)"


def pretraining_html(res: Results) -> str:
    rows = pretraining_verdicts(res)
    if not rows:
        return "<p class='nodata'>No pretraining recorded in this run.</p>"
    probes = res.probes
    n_info = ""
    if len(probes) and probes["n_test"].notna().any():
        r = probes[probes["n_test"].notna()].iloc[-1]
        n_info = (
            f" Probes: frozen encoder, {int(r['n_train']):,} training and {int(r['n_test']):,} test images of "
            f"{r['category_set']}, each encoder against the weights its pretraining started from on the same "
            "backbone: McNemar's test on the per-image predictions and the Wald interval of a paired difference, "
            "Holm-adjusted over every encoder and probe of the run (runs without per-image predictions: the "
            "binomial standard error of both accuracies)."
        )
    body = []
    for r in rows:
        loss = "n/a" if r["final_loss"] is None else f"{r['final_loss']:.3f}"
        level = (
            f"{r['level_name']} = {r['level']:.3f}"
            if r["level"] is not None
            else f"none fixed ({pretrain_name(r['model'])})"
        )
        body.append(
            [
                pretrain_name(r["model"]),
                _vs_random(r, "knn_accuracy"),
                _vs_random(r, "linear_probe_accuracy"),
                loss,
                level,
                r["verdict"],
            ]
        )
    table = _table(
        [
            "Encoder",
            "kNN accuracy vs starting weights",
            "linear probe vs starting weights",
            "final loss",
            "no-learning level",
            "did it learn?",
        ],
        body,
        table_id="pretraining-verdict",
    )
    k_note = (
        " The no-learning level is the loss of an encoder that tells no image apart, as the pretraining run "
        "recorded it: ln(K+1) for MoCo with K queue keys (pretrain.moco.queue_size, cut to the number of "
        "pretraining images when larger), ln(2B-1) for SimCLR with global batch B."
    )
    return (
        f"{table}<p class='caption'>Accuracy differences in percentage points (pp).{n_info}"
        f"{k_note if any(r['level'] is not None for r in rows) else ''}</p>"
    )


# ------------------------------------------------------------------ backtest table


def backtest_html(table: pd.DataFrame) -> str:
    """The learning curves' backtest (:func:`analysis.stats.backtest_table`) as a table."""
    if table.empty:
        return "<p class='nodata'>No backtest: no learning curve has enough sizes.</p>"
    several = "arch" in table.columns and table["arch"].nunique() > 1
    rows = [
        [
            r["category_set"] + (f", {r['arch']}" if several else ""),
            display_name(r["model"]),
            r["family"],
            f"{int(r['from_size']):,}",
            f"{int(r['size']):,}",
            f"{_pct(r['predicted'])} ({_pct(r['low'])} \u2013 {_pct(r['high'])})",
            _pct(r["measured"]),
            f"{r['error_pp']:+.1f} pp",
            "yes" if r["covered"] else "no",
            "passed" if r["passed"] else "failed",
        ]
        for _, r in table.iterrows()
    ]
    header = [
        "category set",
        "model",
        "family",
        "fitted up to n",
        "predicted at n",
        "predicted OA (95 % prediction interval)",
        "measured OA",
        "error",
        "in interval",
        f"backtest (tolerance {table['tolerance_pp'].iloc[0]:g} pp)",
    ]
    return _table(header, rows, table_id="backtest-table") + "<p>" + csv_link(table, "backtest") + "</p>"


# ------------------------------------------------------------------ numbers table


def numbers_frame(res: Results) -> pd.DataFrame:
    """OA mean, std, min, max per category set, model, size and backbone (never pooled), with n_train / n_validation
    (and training accuracy and steps when the trials table has them); ceiling rows last."""
    frames = []
    for ceiling in (False, True):
        done = done_trials(res.trials, ceiling=ceiling)
        if done.empty:
            continue
        agg = {
            "folds": ("overall_accuracy", "count"),
            "oa_mean": ("overall_accuracy", "mean"),
            "oa_std": ("overall_accuracy", "std"),
            "oa_min": ("overall_accuracy", "min"),
            "oa_max": ("overall_accuracy", "max"),
            "n_train": ("n_train", "mean"),
            "n_validation": ("n_validation", "mean"),
        }
        for extra in ("train_accuracy", "steps"):
            if extra in done.columns and pd.to_numeric(done[extra], errors="coerce").notna().any():
                done[extra] = pd.to_numeric(done[extra], errors="coerce")
                agg[f"{extra}_mean"] = (extra, "mean")
        done["arch"] = done["arch"].astype("object").fillna("") if "arch" in done.columns else ""
        g = done.groupby(["category_set", "model", "train_size", "arch"], as_index=False).agg(**agg)
        g.insert(1, "protocol", "ceiling" if ceiling else "curve")
        frames.append(g)
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    rank = {c: i for i, c in enumerate(category_sets(res.trials))}
    order = {m: i for i, m in enumerate(order_models(out["model"]))}
    out["_k"] = [
        (rank.get(c, 99), a, p == "ceiling", order.get(m, 99), n)
        for c, p, m, n, a in zip(
            out["category_set"], out["protocol"], out["model"], out["train_size"], out["arch"], strict=True
        )
    ]
    return out.sort_values("_k").drop(columns="_k").reset_index(drop=True)


def numbers_html(res: Results, frame: pd.DataFrame) -> str:
    if frame.empty:
        return "<p class='nodata'>No finished trials yet.</p>"
    extra = [c for c in ("train_accuracy_mean", "steps_mean") if c in frame.columns]
    header = ["category set", "model", "n", "folds", "OA mean \u00b1 std", "OA min / max", "n_train", "n_validation"]
    header += [{"train_accuracy_mean": "training accuracy (mean)", "steps_mean": "steps (mean)"}[c] for c in extra]
    rows = []
    several = "arch" in frame.columns and frame["arch"].nunique() > 1
    for _, r in frame.iterrows():
        std = f" \u00b1 {100 * r['oa_std']:.1f} pp" if r["oa_std"] == r["oa_std"] else ""
        model = (
            display_name(r["model"])
            + (f" ({r['arch']})" if several and r["arch"] else "")
            + (" \u2014 supervised ceiling" if r["protocol"] == "ceiling" else "")
        )
        cells = [
            set_label(r["category_set"], n_categories_of(r["category_set"], res.trials)),
            model,
            f"{int(r['train_size']):,}",
            int(r["folds"]),
            f"{100 * r['oa_mean']:.1f} %{std}",
            f"{100 * r['oa_min']:.1f} % / {100 * r['oa_max']:.1f} %",
            "" if r["n_train"] != r["n_train"] else f"{r['n_train']:,.0f}",
            "" if r["n_validation"] != r["n_validation"] else f"{r['n_validation']:,.0f}",
        ]
        for c in extra:
            v = r[c]
            cells.append("" if v != v else (_pct(v) if c == "train_accuracy_mean" else f"{v:,.0f}"))
        rows.append(cells)
    return _table(header, rows, table_id="numbers-table") + "<p>" + csv_link(frame, "numbers") + "</p>"


# ------------------------------------------------------------------ provenance


def _fmt_seconds(s: Any) -> str:
    if s is None or s != s:
        return "not finished (or not recorded)"
    s = float(s)
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.2f} h"


def run_html(res: Results) -> str:
    """Software, hardware, wall time, seeds, config hash, initialisation, Parquet paths, the resolved config."""
    info = res.run_info
    rows: list[list[str]] = []
    if info is None:
        rows.append(["run facts (run_info.json)", NOT_RECORDED])
    else:
        sw = info.get("software") or {}
        hw = info.get("hardware") or {}
        rows += [
            ["software", ", ".join(f"{k} {v or NOT_RECORDED}" for k, v in sw.items()) or NOT_RECORDED],
            [
                "hardware",
                f"CPU {hw.get('cpu_model') or NOT_RECORDED}, {hw.get('cpu_cores') or '?'} cores; GPU "
                + (", ".join(hw.get("gpu_models") or []) or "none"),
            ],
            ["host", str(hw.get("hostname") or NOT_RECORDED) + (f" ({hw['platform']})" if hw.get("platform") else "")],
            ["wall time of the study", _fmt_seconds(info.get("wall_seconds"))],
            [
                "started",
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info["started_at"])))
                if info.get("started_at")
                else NOT_RECORDED,
            ],
            ["seeds", ", ".join(f"{k} {v}" for k, v in (info.get("seeds") or {}).items()) or NOT_RECORDED],
            ["config hash", str(info.get("config_hash") or NOT_RECORDED)],
        ]
    hashes = sorted(res.trials["config_hash"].dropna().astype(str).unique())
    rows.append(["config hash of the trials", ", ".join(hashes) or NOT_RECORDED])
    data = res.raw_config.get("data") or {}
    rows.append(
        [
            "data",
            (SYNTHETIC_BANNER + " (data.root and data.manifest unset)")
            if res.synthetic
            else (f"root {data.get('root')}" if data.get("root") else f"manifest {data.get('manifest')}")
            if res.raw_config
            else "no config.yaml: " + NOT_RECORDED,
        ]
    )
    if "init" in res.trials.columns and res.trials["init"].notna().any():
        inits = res.trials[res.trials["init"].notna()].groupby("model")["init"].agg(lambda s: sorted(set(map(str, s))))
        rows.append(["initialisation", "; ".join(f"{display_name(m)}: {', '.join(v)}" for m, v in inits.items())])
    else:
        rows.append(["initialisation", NOT_RECORDED])
    if "arch" in res.trials.columns and res.trials["arch"].notna().any():
        rows.append(["architecture", ", ".join(sorted(res.trials["arch"].dropna().astype(str).unique()))])
    table = _table(["", ""], rows, cls="run", table_id="run-facts")
    base = res.run_dir
    paths = "".join(
        f"<tr><td>{esc(t)}</td><td><code>{esc(str(base / 'results' / t) if base else 'results/' + t)}</code></td>"
        f"<td>{len(getattr(res, t)):,} rows</td></tr>"
        for t in TABLES
    )
    parquet = (
        f"<h3>Parquet tables</h3><table class='run' id='parquet-paths'><tr><th>table</th><th>path</th>"
        f"<th>rows</th></tr>{paths}</table><p class='caption'>Read one with "
        "<code>pandas.read_parquet(PATH)</code>.</p>"
    )
    cfg = (
        f"<details><summary><b>Resolved config (config.yaml)</b></summary><pre id='resolved-config'>"
        f"{esc(yaml.safe_dump(res.raw_config, sort_keys=False))}</pre></details>"
        if res.raw_config
        else f"<p>Resolved config: {NOT_RECORDED} (no config.yaml).</p>"
    )
    return table + parquet + cfg
