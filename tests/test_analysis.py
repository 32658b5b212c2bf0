"""Tests of the analysis package on small hand-made result tables."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from fixtures_analysis import ROOT, make_tables, partial_tables, write_run  # also puts the checkout on sys.path
from scipy import stats

import analysis
from analysis import Results, build_report, figures, load_results
from analysis.confusion import confusion_views, confusion_with_margins, fold_confusion, merge_groups, restrict
from analysis.figures import is_no_data
from analysis.figures.accuracy import accuracy_vs_size
from analysis.labeling import (
    doa_table,
    find_knee,
    labeling_hours,
    labeling_hours_per_group,
    time_saved_hours,
    time_saved_hours_per_group,
)
from analysis.sections import _vs_random, pretraining_verdicts
from analysis.stats import (
    box_stats,
    fit_learning_curve,
    learning_curve_answers,
    paired_difference_table,
    power_law,
    samples_to_reach,
)
from analysis.summary import cell_states, fit_sentences, grid_progress, knee_sentences

PAPER_SIZES = [128, 256, 512, 1024, 2048, 4096, 8192, 16384, 18864]


def trial(model, size, fold, oa, cset="19cat", ncat=19, gen=None, seconds=60.0, status="done", finished=0.0):
    return {
        "cell_id": f"{model}-{cset}-n{size}-f{fold}",
        "model": model,
        "category_set": cset,
        "n_categories": ncat,
        "train_size": size,
        "fold": fold,
        "status": status,
        "overall_accuracy": oa,
        "generalization_accuracy": gen,
        "generalization_campaign": "CLOUDLAB" if gen is not None else None,
        "train_seconds": seconds,
        "finished_at": finished,
        "study": "unit",
    }


# ------------------------------------------------------------------ labeling


def test_paper_labeling_numbers():
    # 18864 - 2048 = 16816 images * 33 s = 154.147 h (the paper writes "154 hours");
    # 8192 - 2048 = 6144 images * 33 s = 56.32 h (the paper: "56 hours").
    assert round(time_saved_hours(2048, 18864), 1) == 154.1
    assert round(time_saved_hours(2048, 18864)) == 154
    assert round(time_saved_hours(2048, 8192, seconds_per_image=33.0), 1) == 56.3
    assert labeling_hours(3600) == pytest.approx(33.0)
    assert np.allclose(labeling_hours(np.array([0, 3600]), 1.0), [0.0, 1.0])


def test_per_group_hours():
    counts = {"column": 600, "column_aged": 60, "plate_aged_aggregate": 0}
    assert labeling_hours_per_group(counts) == pytest.approx((600 * 6 + 60 * 60) / 3600)
    ref = {"column": 1200, "column_aged": 120}
    assert time_saved_hours_per_group(counts, ref) == pytest.approx((600 * 6 + 60 * 60) / 3600)


def test_find_knee_known_curves():
    x = np.arange(11, dtype=float)
    y = np.where(x <= 7, 0.1 * x, 0.7 + 3.0 * (x - 7))  # flat, then steep after x = 7
    assert find_knee(x, y) == 7
    # Unsorted input: the index refers to the given order.
    perm = np.array([3, 10, 0, 7, 1, 9, 2, 8, 4, 6, 5])
    assert find_knee(x[perm], y[perm]) == int(np.flatnonzero(perm == 7)[0])
    # Concave curve: knee where it flattens.
    assert find_knee(x, -((x - 10.0) ** 2) * (x < 10)) is not None
    # The paper's Fig. 5 shape (TS in hours, DOA in %): knee at n = 2048.
    sizes = [18864, 16384, 8192, 4096, 2048, 1024, 512, 256, 128]
    ts = time_saved_hours(np.array(sizes), 18864)
    doa = [0.0, 0.5, 1.5, 2.5, 3.8, 7.0, 12.0, 18.0, 25.0]
    assert sizes[find_knee(ts, doa)] == 2048
    assert find_knee([0, 1], [0, 1]) is None
    assert find_knee([0, 1, 2, 3], [0, 1, 2, 3]) is None


def _doa_trials():
    rows = [trial("baseline", 18864, f, oa) for f, oa in enumerate([0.78, 0.79])]
    rows += [trial("baseline", 2048, 0, 0.70)]
    means = {128: 0.55, 512: 0.65, 2048: 0.745, 8192: 0.77, 18864: 0.78}
    for n, m in means.items():
        rows += [trial("moco", n, 0, m - 0.01), trial("moco", n, 1, m + 0.01)]
    return pd.DataFrame(rows), means


def test_doa_table_constant():
    trials, means = _doa_trials()
    t = doa_table(trials, None, {})
    assert list(t["train_size"]) == sorted(means)
    assert (t["reference_size"] == 18864).all() and t["reference_oa"].iloc[0] == pytest.approx(0.785)
    for _, r in t.iterrows():
        assert r["doa"] == pytest.approx(0.785 - means[r["train_size"]])
        assert r["time_saved_hours"] == pytest.approx((18864 - r["train_size"]) * 33 / 3600)
    assert t.loc[t["is_knee"], "train_size"].tolist() == [2048]
    assert (t["time_model"] == "constant").all()


def test_doa_table_per_group_uses_train_counts():
    trials, _ = _doa_trials()
    pc = []
    for _, r in trials.iterrows():
        n = int(r["train_size"])
        for cat, share in (("column", 0.75), ("column_aged", 0.25)):
            for split in ("validation", "generalization"):
                pc.append(
                    {
                        "cell_id": r["cell_id"],
                        "model": r["model"],
                        "category_set": "19cat",
                        "train_size": n,
                        "fold": r["fold"],
                        "split": split,
                        "category": cat,
                        "train_count": int(n * share),
                    }
                )
    pc = pd.DataFrame(pc)
    t = doa_table(trials, pc, {"labeling_time_model": "per_group"})
    assert (t["time_model"] == "per_group").all()
    hours = lambda n: (int(n * 0.75) * 6 + int(n * 0.25) * 60) / 3600  # noqa: E731 - a one-line labeling-time model
    row = t[t["train_size"] == 2048].iloc[0]
    assert row["time_saved_hours"] == pytest.approx(hours(18864) - hours(2048))
    # Missing counts for a size: that size falls back to the constant model.
    t2 = doa_table(trials, pc[pc["train_size"] != 512], {"labeling_time_model": "per_group"})
    assert t2.set_index("train_size").loc[512, "time_model"] == "constant"


# ------------------------------------------------------------------ confusion


def test_confusion_with_margins_by_hand():
    m = np.array([[5, 1, 0], [2, 3, 1], [0, 0, 4]])
    mat, precision, recall, oa = confusion_with_margins(m)
    assert np.allclose(precision, [5 / 7, 3 / 4, 4 / 5])
    assert np.allclose(recall, [5 / 6, 3 / 6, 4 / 4])
    assert oa == pytest.approx(12 / 16)
    df = pd.DataFrame(m, index=list("abc"), columns=list("abc"))
    _, p, r, _ = confusion_with_margins(df)
    assert p["b"] == pytest.approx(0.75) and r["b"] == pytest.approx(0.5)
    _, p, r, oa = confusion_with_margins(np.array([[1, 0], [0, 0]]))
    assert np.isnan(p[1]) and np.isnan(r[1]) and oa == 1.0
    with pytest.raises(ValueError):
        confusion_with_margins(np.ones((2, 3)))


def _confusion_rows(model, cset, size, fold, matrix, cats):
    return [
        {
            "cell_id": f"{model}-{cset}-n{size}-f{fold}",
            "model": model,
            "category_set": cset,
            "n_categories": len(cats),
            "train_size": size,
            "fold": fold,
            "split": "validation",
            "true_category": t,
            "predicted_category": p,
            "count": int(matrix[i][j]),
        }
        for i, t in enumerate(cats)
        for j, p in enumerate(cats)
        if matrix[i][j]
    ]


CATS5 = ["column", "plate", "column_aged", "plate_aged", "column_aggregate"]
M5_F0 = [[10, 2, 1, 0, 0], [1, 8, 0, 1, 0], [2, 0, 6, 1, 1], [0, 1, 2, 5, 0], [0, 0, 1, 0, 4]]
M5_F1 = [[12, 0, 1, 0, 1], [0, 9, 0, 1, 0], [1, 0, 7, 0, 0], [0, 2, 1, 6, 0], [0, 1, 1, 0, 5]]


def test_fold_confusion_views():
    rows = _confusion_rows("moco", "5cat", 100, 0, M5_F0, CATS5) + _confusion_rows("moco", "5cat", 100, 1, M5_F1, CATS5)
    cm = pd.DataFrame(rows)
    mean = fold_confusion(cm, "moco", "5cat", 100, order=CATS5)
    assert np.allclose(mean.to_numpy(), (np.array(M5_F0) + np.array(M5_F1)) / 2)
    total = fold_confusion(cm, "moco", "5cat", 100, how="sum", order=CATS5)
    assert total.to_numpy().sum() == np.sum(M5_F0) + np.sum(M5_F1)
    basic = restrict(total, ["column", "plate"])
    assert basic.shape == (2, 2) and basic.loc["column", "plate"] == 2
    merged = merge_groups(total, {"column_aged": "aged", "plate_aged": "aged", "column_aggregate": "aggregate"})
    assert list(merged.index) == ["aged", "aggregate"]
    s = np.array(M5_F0) + np.array(M5_F1)
    assert merged.loc["aged", "aged"] == s[2:4, 2:4].sum()
    assert merged.loc["aged", "aggregate"] == s[2:4, 4].sum()
    views = confusion_views(total)
    assert [v[0] for v in views] == ["basic habits", "complex shapes merged by process"]
    assert confusion_views(total.loc[CATS5[2:], CATS5[2:]])[0][0] == "all categories"


def test_confusion_matrices_figure_margins():
    rows = []
    for model in ("moco", "baseline"):
        rows += _confusion_rows(model, "5cat", 100, 0, M5_F0, CATS5) + _confusion_rows(
            model, "5cat", 100, 1, M5_F1, CATS5
        )
    rows += _confusion_rows("moco", "5cat", 200, 0, M5_F0, CATS5)  # only one model at 200
    fig = figures.confusion_matrices(confusion=pd.DataFrame(rows))
    heat = [t for t in fig.data if isinstance(t, go.Heatmap)]
    assert len(heat) == 4  # 2 models x (basic, complex)
    assert "n = 100" in fig.layout.title.text  # largest size both models have
    basic = heat[0]
    z = np.array(basic.z, dtype=float)
    assert z.shape == (3, 3)  # 2 basic habits + margins
    s = (np.array(M5_F0) + np.array(M5_F1))[:2, :2] / 2
    assert z[2, 0] == pytest.approx(s[0, 0] / s[:, 0].sum())  # precision of 'column'
    assert z[1, 2] == pytest.approx(s[1, 1] / s[1, :].sum())  # recall of 'plate'
    assert z[2, 2] == pytest.approx(np.trace(s) / s.sum())  # OA in the corner
    assert z[0, 1] == pytest.approx(s[0, 1] / s[:, 1].sum())  # column share
    assert list(basic.x) == ["column", "plate", "recall"] and list(basic.y)[-1] == "precision"
    complex_ = np.array(heat[1].z, dtype=float)
    assert complex_.shape == (3, 3)  # aged, aggregate + margins
    assert "OA" in heat[0].text[2][2]


def test_confusion_matrices_four_categories_full():
    cats = ["column", "column_aged", "column_aggregate", "column_aged_aggregate"]
    m = [[9, 1, 0, 0], [1, 7, 1, 1], [0, 2, 5, 1], [0, 0, 1, 6]]
    rows = _confusion_rows("moco", "4cat", 64, 0, m, cats) + _confusion_rows("baseline", "4cat", 64, 0, m, cats)
    fig = figures.confusion_matrices(confusion=pd.DataFrame(rows), config={"compare_models": ["moco", "baseline"]})
    heat = [t for t in fig.data if isinstance(t, go.Heatmap)]
    assert len(heat) == 2 and np.array(heat[0].z).shape == (5, 5)
    assert is_no_data(figures.confusion_matrices(confusion=pd.DataFrame(rows), category_set="19cat"))


# ------------------------------------------------------------------ accuracy figures


def _box_trials():
    rows = []
    values = {
        ("moco", 128): [0.5, 0.6, 0.7],
        ("moco", 1024): [0.7, 0.72, 0.74],
        ("moco", 18864): [0.78, 0.79, 0.8],
        ("baseline", 128): [0.4, 0.45, 0.6],
        ("baseline", 1024): [0.68, 0.7, 0.71],
        ("baseline", 18864): [0.77, 0.78, 0.8],
    }
    for (model, n), vals in values.items():
        rows += [trial(model, n, f, v, gen=v - 0.1) for f, v in enumerate(vals)]
    rows.append(trial("moco", 128, 9, None, status="failed"))
    return pd.DataFrame(rows), values


def test_accuracy_vs_size_boxes_inset_and_reference():
    trials, values = _box_trials()
    ref = {
        "reference_points": [
            {"label": "IceDetectNet", "n_categories": 19, "train_size": 18864, "accuracy": 0.782, "spread": 0.009},
            {"label": "other set", "n_categories": 4, "train_size": 128, "accuracy": 0.5, "spread": 0},
        ]
    }
    fig = figures.accuracy_vs_size(trials=trials, config=ref)
    boxes = [t for t in fig.data if isinstance(t, go.Box)]
    assert len(boxes) == 4  # 2 models, main + zoom
    main = [b for b in boxes if b.xaxis in (None, "x")]
    zoom = [b for b in boxes if b.xaxis == "x2"]
    assert sum(len(b.x) for b in main) == 6 and sum(len(b.x) for b in zoom) == 4
    moco = next(b for b in main if b.name == "Semisup-MoCo")
    q1, med, q3 = np.percentile(values[("moco", 128)], [25, 50, 75])
    assert moco.q1[0] == pytest.approx(q1) and moco.median[0] == pytest.approx(med) and moco.q3[0] == pytest.approx(q3)
    assert moco.lowerfence[0] == 0.5 and moco.upperfence[0] == 0.7
    refs = [t for t in fig.data if isinstance(t, go.Scatter) and t.name.endswith("(reference)")]
    assert len(refs) == 2 and refs[0].y[0] == 0.782  # main + zoom, only the 19-category point
    points = [t for t in fig.data if isinstance(t, go.Scatter) and t.name.endswith(" folds")]
    assert len(points) == 4  # fold points over every box trace (main + zoom)
    moco_points = next(t for t in points if t.name == "Semisup-MoCo folds" and t.xaxis in (None, "x"))
    assert sorted(moco_points.y[: len(values[("moco", 128)])]) == sorted(values[("moco", 128)])
    assert list(fig.layout.xaxis.ticktext) == ["128", "1\u2009024", "18\u2009864"]
    assert len(fig.data) == 10
    no_inset = figures.accuracy_vs_size(trials=trials, inset=False, reference_points=False)
    assert len(no_inset.data) == 4
    assert is_no_data(figures.accuracy_vs_size(trials=trials.iloc[:0]))


def test_generalization_boxes():
    trials, _ = _box_trials()
    fig = figures.generalization(trials=trials)
    assert len(fig.data) == 4 and sum(isinstance(t, go.Box) for t in fig.data) == 2
    assert "CLOUDLAB" in fig.layout.title.text
    assert fig.data[0].median[0] == pytest.approx(0.5)
    assert is_no_data(figures.generalization(trials=trials.assign(generalization_accuracy=None)))


def test_box_stats():
    st = box_stats([1, 2, 3, 4, float("nan")])
    assert (st["q1"], st["median"], st["q3"], st["min"], st["max"], st["n"]) == (1.75, 2.5, 3.25, 1, 4, 4)


# ------------------------------------------------------------------ statistics


def test_paired_differences_known_numbers():
    rows = []
    for f, (a, b) in enumerate([(0.6, 0.5), (0.7, 0.65), (0.8, 0.7)]):
        rows += [trial("moco", 256, f, a), trial("baseline", 256, f, b)]
    rows += [trial("moco", 512, 0, 0.8), trial("baseline", 512, 0, 0.75), trial("moco", 512, 1, 0.81)]
    t = paired_difference_table(pd.DataFrame(rows), n_boot=500, seed=1)
    r = t.set_index("train_size").loc[256]
    d = np.array([0.1, 0.05, 0.1])
    assert r["n_pairs"] == 3 and r["mean_diff"] == pytest.approx(d.mean())
    t_stat = d.mean() / (d.std(ddof=1) / np.sqrt(3))
    assert r["p_uncorrected"] == pytest.approx(2 * stats.t.sf(t_stat, df=2))  # scipy's ttest_rel
    assert r["p_uncorrected"] == pytest.approx(stats.ttest_rel([0.6, 0.7, 0.8], [0.5, 0.65, 0.7]).pvalue)
    # Corrected resampled t (paper protocol, k = 3: Nadeau-Bengio factor 1/3 + 1/2 = 5/6). Hand-computed:
    # mean 0.08333, s = 0.028868, sqrt(5/6) s = 0.026352, t = 3.162278, t(0.975, 2) = 4.302653;
    # half width 0.113385; p = 2 * P(T_2 > 3.162278) = 0.087129 (uncorrected: 0.037750).
    assert (r["protocol"], r["k"], r["rho"]) == ("paper", 3, pytest.approx(1 / 3))
    assert r["ci_method"] == "t"
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((0.083333 - 0.113385, 0.083333 + 0.113385), abs=1e-6)
    assert r["p_value"] == pytest.approx(0.087129, abs=1e-6)
    assert r["p_uncorrected"] == pytest.approx(0.037750, abs=1e-6)
    # the family is every size of the set with a test: here one (n = 512 has a single pair)
    assert r["p_adjusted"] == pytest.approx(r["p_value"]) and r["family_size"] == 1 and not r["significant"]
    assert r["family"] == "1 size of 19cat, moco vs baseline, OA"
    # Ten or more pairs: the seeded percentile bootstrap, inside the range of the differences.
    many = [
        trial(m, 128, f, 0.5 + 0.01 * f + (0.02 if m == "moco" else 0) * (f % 3))
        for f in range(10)
        for m in ("moco", "baseline")
    ]
    b = paired_difference_table(pd.DataFrame(many), n_boot=500, seed=1).iloc[0]
    again = paired_difference_table(pd.DataFrame(many), n_boot=500, seed=1).iloc[0]
    assert b["ci_method"] == "bootstrap" and again["ci_low"] == b["ci_low"]  # seeded
    assert min(b["diffs"]) - 1e-12 <= b["ci_low"] <= b["mean_diff"] <= b["ci_high"] <= max(b["diffs"]) + 1e-12
    single = t.set_index("train_size").loc[512]
    assert single["n_pairs"] == 1 and single["mean_diff"] == pytest.approx(0.05)
    assert np.isnan(single["p_value"]) and np.isnan(single["ci_low"])
    w = paired_difference_table(pd.DataFrame(rows), test="wilcoxon").set_index("train_size").loc[256]
    assert 0 < w["p_value"] <= 1
    fig = figures.paired_differences(trials=pd.DataFrame(rows))
    means = next(tr for tr in fig.data if tr.name.endswith("95 % CI (Student t)"))
    assert np.allclose(means.y, [100 * d.mean(), 5.0])
    assert is_no_data(figures.paired_differences(trials=pd.DataFrame(rows[:1])))


def test_learning_curve_fit_recovers_parameters():
    n = np.repeat(PAPER_SIZES, 5)
    folds = np.tile(np.arange(5), len(PAPER_SIZES))
    y = power_law(n, 0.85, 2.0, 0.5)
    fit = fit_learning_curve(n, y)
    assert (fit.a, fit.b, fit.c) == pytest.approx((0.85, 2.0, 0.5), rel=1e-4)
    noisy = y + np.random.default_rng(3).normal(0, 0.005, len(y))
    fit = fit_learning_curve(n, noisy, groups=folds, n_boot=40, seed=0)
    assert fit.a == pytest.approx(0.85, abs=0.02) and fit.c == pytest.approx(0.5, abs=0.15)
    lo, hi = fit.band(np.array([128.0, 1024.0]))
    assert np.all(lo < fit.predict([128.0, 1024.0])) and np.all(fit.predict([128.0, 1024.0]) < hi)
    assert fit.family == "power law" and fit.backtest is not None and fit.backtest["size"] == PAPER_SIZES[-1]
    ans = fit.samples_to_reach(0.8)
    assert ans["n"] == pytest.approx((fit.b / (fit.a - 0.8)) ** (1 / fit.c))
    assert ans["low"] <= ans["n"] <= ans["high"]
    assert fit.samples_to_reach(0.95)["n"] is None  # a <= target: not reached
    assert samples_to_reach(0.8, 0.85, 2.0, 0.5) == pytest.approx((2.0 / 0.05) ** 2)
    assert samples_to_reach(0.9, 0.85, 2.0, 0.5) is None
    assert fit_learning_curve([128, 256], [0.5, 0.6]) is None
    table = learning_curve_answers({("19cat", "moco"): fit}, [0.8, 0.95])
    assert table["reached"].tolist() == [True, False]


def test_learning_curves_figure():
    rows = []
    rng = np.random.default_rng(0)
    for model, (a, b, c) in {"moco": (0.85, 2.0, 0.5), "baseline": (0.84, 3.0, 0.5)}.items():
        for n in PAPER_SIZES[:6]:
            rows += [trial(model, n, f, float(power_law(n, a, b, c) + rng.normal(0, 0.003))) for f in range(3)]
    fig = figures.learning_curves(trials=pd.DataFrame(rows), config={"curve_bootstrap": 20, "targets": [80]})
    names = [t.name for t in fig.data]
    assert sum(isinstance(t, go.Box) for t in fig.data) == 2
    assert sum(1 for nm in names if nm and " fit: a=" in nm) == 2
    assert any(getattr(t, "fill", None) == "toself" for t in fig.data)  # bootstrap bands


# ------------------------------------------------------------------ other figures


def test_class_distribution_sorted_by_labeled_campaign():
    ds = pd.DataFrame(
        [
            {"campaign": "N20", "category": "small", "count": 900, "role": "pretrain"},
            {"campaign": "N19", "category": "plate", "count": 10, "role": "labeled"},
            {"campaign": "N19", "category": "column", "count": 50, "role": "labeled"},
            {"campaign": "N19", "category": "column", "count": 50, "role": "pretrain"},
            {"campaign": "N19", "category": "small", "count": 30, "role": "labeled"},
            {"campaign": "CL", "category": "column", "count": 5, "role": "generalization"},
        ]
    )
    fig = figures.class_distribution(dataset=ds)
    assert len(fig.data) == 3 and all(isinstance(t, go.Bar) and t.orientation == "h" for t in fig.data)
    assert [t.name.split()[0] for t in fig.data] == ["N19", "N20", "CL"]  # labeled, pretrain, unseen
    assert list(fig.layout.yaxis.categoryarray) == ["plate", "small", "column"]  # largest at the top
    n19 = next(t for t in fig.data if t.name.startswith("N19"))
    assert list(n19.y) == ["column", "small", "plate"] and list(n19.x) == [50, 30, 10]


def test_tsne_grid_panels():
    rows = []
    for stage in ("before_pretraining", "after_pretraining", "after_finetuning"):
        for n in (2048, 512):
            for k, cat in enumerate(["column", "plate", "column", "small"]):
                rows.append(
                    {
                        "model": "moco",
                        "stage": stage,
                        "train_size": n,
                        "image_id": f"i{k}",
                        "category": cat,
                        "x": float(k),
                        "y": float(-k),
                    }
                )
    fig = figures.tsne_grid(embeddings=pd.DataFrame(rows))
    assert len(fig.data) == 6 * 3  # 3 stages x 2 sizes panels x 3 categories
    assert sum(bool(t.showlegend) for t in fig.data) == 3
    assert "n = 2,048" in fig.layout.annotations[0].text
    assert is_no_data(figures.tsne_grid(embeddings=None))


def test_loss_figures_and_time_table():
    rows = [
        {"run": f"pretrain-{m}", "stage": "pretrain", "model": m, "epoch": 0, "step": s, "loss": 5 - s / 10}
        for m in ("moco", "byol")
        for s in range(10)
    ]
    for n in (128, 256, 512):
        for fold in (0, 1):
            rows += [
                {
                    "run": f"moco-19cat-n{n}-f{fold}",
                    "stage": "finetune",
                    "model": "moco",
                    "category_set": "19cat",
                    "train_size": n,
                    "fold": fold,
                    "epoch": e,
                    "step": e * 2,
                    "loss": 2.0 / (e + 1) + fold,
                }
                for e in range(5)
            ]
    losses = pd.DataFrame(rows)
    assert len(figures.pretraining_loss(losses=losses).data) == 2
    ft = figures.finetuning_loss(losses=losses)
    assert len(ft.data) == 3 and list(ft.data[0].y) == pytest.approx([2.0 / (e + 1) for e in range(5)])
    mean = figures.finetuning_loss(losses=losses, fold="mean")
    assert list(mean.data[0].y) == pytest.approx([2.0 / (e + 1) + 0.5 for e in range(5)])
    trials = pd.DataFrame(
        [
            trial("moco", 128, 0, 0.5, seconds=60),
            trial("moco", 128, 1, 0.5, seconds=180),
            trial("baseline", 128, 0, 0.4, seconds=120),
        ]
    )
    pre = pd.DataFrame([{"model": "moco", "arch": "resnet50", "n_images": 33354, "seconds": 3960}])
    table = figures.training_time_table(trials=trials, pretraining=pre)
    cells = table.data[0].cells.values
    assert cells[0][0].startswith("Unsupervised") and cells[4][0] == "66.0"  # MoCo column
    assert cells[2][1] == "128" and cells[4][1] == "2.0" and cells[5][1] == "2.0"
    assert is_no_data(figures.pretraining_loss(losses=losses.iloc[:0]))


def test_f1_vs_share():
    pc = pd.DataFrame(
        [
            {
                "cell_id": "c0",
                "model": "moco",
                "category_set": "19cat",
                "n_categories": 19,
                "train_size": 100,
                "fold": 0,
                "split": "validation",
                "category": "column",
                "f1": 0.9,
                "train_count": 75,
            },
            {
                "cell_id": "c0",
                "model": "moco",
                "category_set": "19cat",
                "n_categories": 19,
                "train_size": 100,
                "fold": 0,
                "split": "validation",
                "category": "plate",
                "f1": 0.5,
                "train_count": 25,
            },
            {
                "cell_id": "c0",
                "model": "moco",
                "category_set": "19cat",
                "n_categories": 19,
                "train_size": 100,
                "fold": 0,
                "split": "generalization",
                "category": "plate",
                "f1": 0.1,
                "train_count": 25,
            },
        ]
    )
    fig = figures.f1_vs_share(per_class=pc)
    assert len(fig.data) == 1
    assert sorted(fig.data[0].x) == pytest.approx([25.0, 75.0]) and sorted(fig.data[0].y) == [0.5, 0.9]


def test_every_builder_on_empty_results():
    empty = Results()
    for name in (
        "accuracy_vs_size",
        "doa_vs_time_saved",
        "generalization",
        "confusion_matrices",
        "tsne_grid",
        "class_distribution",
        "pretraining_loss",
        "finetuning_loss",
        "training_time_table",
        "paired_differences",
        "learning_curves",
        "f1_vs_share",
    ):
        fig = getattr(figures, name)(empty)
        assert isinstance(fig, go.Figure) and is_no_data(fig), name


def test_doa_figure_knee_annotation():
    trials, _ = _doa_trials()
    fig = figures.doa_vs_time_saved(trials=trials)
    assert len(fig.data) == 2 and list(fig.data[0].text)[2] == "2,048"
    assert "n = 2,048" in fig.layout.annotations[0].text
    one_size = trials[trials["train_size"].isin([18864])]
    assert is_no_data(figures.doa_vs_time_saved(trials=one_size))


# ------------------------------------------------------------------ loading, summary, report


def test_load_results_missing_and_temp_files(tmp_path):
    (tmp_path / "config.yaml").write_text("name: x\nanalysis:\n  cssl_model: byol\n  targets: [85]\n")
    (tmp_path / "results" / "trials").mkdir(parents=True)
    (tmp_path / "results" / "trials" / ".tmp-part.parquet").write_bytes(b"garbage")
    (tmp_path / "results" / "grid").mkdir()
    pd.DataFrame([{"cell_id": "a", "model": "moco", "planned": "run", "reason": None}]).to_parquet(
        tmp_path / "results" / "grid" / "part-0.parquet"
    )
    pd.DataFrame([{"cell_id": "b", "model": "moco", "planned": "skipped", "reason": "too big"}]).to_parquet(
        tmp_path / "results" / "grid" / "part-1.parquet"
    )
    res = load_results(tmp_path)
    assert res.trials.empty and "overall_accuracy" in res.trials.columns
    assert res.embeddings.empty and list(res.grid["cell_id"]) == ["a", "b"]
    assert res.config["cssl_model"] == "byol" and res.config["targets"] == [0.85]
    assert res.config["compare_models"] == ["byol", "baseline"] and res.config["seconds_per_image"] == 33.0
    assert res.study_name == "x"


def test_grid_progress_and_states():
    grid = pd.DataFrame(
        [
            {
                "cell_id": c,
                "model": "moco",
                "category_set": "19cat",
                "train_size": 128,
                "fold": i,
                "planned": "skipped" if c == "s" else "run",
                "reason": "why" if c == "s" else None,
            }
            for i, c in enumerate(["d", "f", "m", "s", "r"])
        ]
    )
    trials = pd.DataFrame(
        [
            {**trial("moco", 128, 0, 0.5), "cell_id": "d"},
            {**trial("moco", 128, 1, None, status="failed"), "cell_id": "f", "message": "oom"},
            {**trial("moco", 128, 4, None, status="failed", finished=1.0), "cell_id": "r"},
            {**trial("moco", 128, 4, 0.6, finished=2.0), "cell_id": "r"},
        ]
    )
    assert grid_progress(grid, trials) == {"done": 2, "skipped": 1, "failed": 1, "missing": 1, "total": 5}
    states = cell_states(grid, trials).set_index("cell_id")
    assert states.loc["s", "reason"] == "why" and states.loc["f", "reason"] == "oom"


def test_summary_sentence_names_the_knee():
    trials, _ = _doa_trials()
    text = " ".join(knee_sentences(doa_table(trials, None, {}), {"seconds_per_image": 33.0}))
    assert "n = 2,048" in text and "154.1 h" in text and "4.0 pp overall accuracy" in text  # pp, not %


def test_the_knee_position_carries_its_share_of_fold_resamples():
    """Issue 21 item 3: how often each size is the knee when the folds are resampled; a knee that
    the folds agree on is at its size in every resample, a noisy one is not."""
    from analysis.labeling import KNEE_RESAMPLES, knee_shares

    trials, _ = _doa_trials()
    t = doa_table(trials, None, {})
    shares = t.set_index("train_size")["knee_share"]
    assert shares[2048] == pytest.approx(1.0) and shares.sum() <= 1.0 + 1e-12
    text = " ".join(knee_sentences(t, {"seconds_per_image": 33.0}))
    assert f"is at n = 2,048 (the knee in 100 % of {KNEE_RESAMPLES:,} resamples of the folds)" in text
    # five folds with noise of the size of the steps: the knee moves between neighbours
    rng = np.random.default_rng(1)
    x = np.array([150.0, 120.0, 60.0, 0.0])
    folds = np.array([0.60, 0.66, 0.72, 0.76])[:, None] + rng.normal(0, 0.03, (4, 5))
    noisy = knee_shares(x, np.full(5, 0.78), folds)
    assert 0.0 < noisy.max() < 0.95 and (noisy > 0.05).sum() >= 2
    assert np.array_equal(noisy, knee_shares(x, np.full(5, 0.78), folds))  # seeded
    assert np.isnan(knee_shares(x, [0.78], folds[:, :1])).all()  # one fold: no resampling


def _check_offline(html: str, n_expected: int | None = None) -> None:
    js = analysis.report.get_plotlyjs()
    assert html.count(js) == 1  # plotly.js inlined exactly once
    rest = html.replace(js, "")
    assert not re.search(r"<script[^>]*\bsrc\s*=", rest, re.I)
    assert not re.search(r"<link[^>]*\bhref\s*=\s*['\"]https?:", rest, re.I)
    assert "http://" not in rest and "https://" not in rest
    assert not re.search(r"cdn\.|cdnjs|jsdelivr|unpkg|mathjax", rest, re.I)
    n = int(re.search(r"raystudy-figures' content='(\d+)'", html).group(1))
    assert rest.count("Plotly.newPlot(") == n
    if n_expected is not None:
        assert n == n_expected


def test_report_on_empty_run(tmp_path):
    (tmp_path / "config.yaml").write_text("name: empty-study\n")
    out = build_report(tmp_path)
    assert out == tmp_path / "report.html"
    html = out.read_text()
    _check_offline(html, n_expected=0)
    assert "empty-study" in html and "no data yet" in html
    assert not list(tmp_path.glob(".report.html*"))  # temp file replaced


def test_report_on_partial_run(tmp_path):
    run = write_run(tmp_path / "run", partial_tables(), analysis={"curve_bootstrap": 10, "n_bootstrap": 200})
    out = build_report(run, tmp_path / "custom.html")
    html = out.read_text()
    _check_offline(html)
    assert int(re.search(r"content='(\d+)'", html).group(1)) >= 9
    assert "could not be drawn" not in html
    assert "missing-cells" in html and "byol-19cat-n8192-f0" in html  # cell without a trials row
    assert "train_size 16384 exceeds the 9182 labeled images" in html  # skipped with its reason
    assert "CUDA out of memory" in html  # failed with its message
    assert "no data yet" in html  # embeddings / losses absent
    assert "knee of the DOA curve" in html


def test_report_full_run_and_cli(tmp_path):
    run = write_run(tmp_path / "run", make_tables(folds=3), analysis={"curve_bootstrap": 10, "n_bootstrap": 200})
    proc = subprocess.run(
        [sys.executable, "-m", "analysis", str(run)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    html = (run / "report.html").read_text()
    _check_offline(html, n_expected=17)
    assert "backtest-table" in html and "Backtest of every learning curve" in html
    assert "could not be drawn" not in html
    for fig in (
        "Fig. 1",
        "Fig. 4",
        "Fig. 5",
        "Figs. 6 and 7",
        "Fig. 8",
        "Fig. 9",
        "Fig. 10",
        "Fig. 11",
        "Fig. 12",
        "Fig. A1",
        "Fig. A2",
        "Table B1",
    ):
        assert f"reproduces {fig}." in html, fig


def test_far_extrapolated_answers_are_not_quoted_as_numbers():
    from analysis.summary import answer_sentences

    answers = pd.DataFrame(
        [
            {
                "category_set": "19cat",
                "model": "moco",
                "target": 0.8,
                "n": 7.8e9,
                "low": None,
                "high": None,
                "min_size": 64,
                "max_size": 1024,
                "a": 0.81,
            },
            {
                "category_set": "19cat",
                "model": "moco",
                "target": 0.7,
                "n": 1800.0,
                "low": None,
                "high": None,
                "min_size": 64,
                "max_size": 1024,
                "a": 0.81,
            },
        ]
    )
    (sentence,) = answer_sentences(answers)
    assert "80 %: more than 2,048 (beyond what this study measured)" in sentence and "7,800,000,000" not in sentence
    assert "70 %: n \u2248 1,800, extrapolated beyond the largest size 1,024" in sentence
    # a target above the fitted asymptote is not "never reached": that is an extrapolation to any n
    above = answers.iloc[:1].assign(target=0.9, n=None)
    (sentence,) = answer_sentences(above)
    assert sentence.startswith("Semisup-MoCo (19cat): 90 %: more than 2,048 (beyond what this study measured; the ")
    assert "fitted curve levels off at a = 81.0 %, an extrapolation)" in sentence and "not reached" not in sentence


# ------------------------------------------------------------------ guards on automatic claims (issue 12)


def test_noisy_non_monotone_doa_curve_gives_no_knee():
    # Like the demo's Fig. 5: n = 256 is worse than n = 64 by far more than the fold spread.
    rows = [trial("baseline", 1024, f, oa) for f, oa in enumerate([0.50, 0.52, 0.51])]
    means = {64: 0.40, 128: 0.45, 256: 0.30, 512: 0.47, 1024: 0.48}
    for n, m in means.items():
        rows += [trial("moco", n, f, m + d) for f, d in enumerate([-0.01, 0.0, 0.01])]
    t = doa_table(pd.DataFrame(rows), None, {})
    assert not t["is_knee"].any()
    assert t["knee_note"].iloc[0].startswith("no reliable knee: the DOA curve is not monotone")
    text = " ".join(knee_sentences(t, {"seconds_per_image": 33.0}))
    assert "no reliable knee" in text and "saves" not in text
    fig = figures.doa_vs_time_saved(trials=pd.DataFrame(rows))
    assert not any("knee (max" in (tr.name or "") for tr in fig.data)
    assert any("no reliable knee" in a.text for a in fig.layout.annotations)
    # Monotone but the steps below the corner are within the fold spread (folds +-8 pp): no knee either.
    rows = [trial("baseline", 1024, f, 0.5) for f in range(3)]
    for n, m in {64: 0.40, 128: 0.42, 256: 0.44, 512: 0.49, 1024: 0.495}.items():
        rows += [trial("moco", n, f, m + d) for f, d in enumerate([-0.08, 0.0, 0.08])]
    t = doa_table(pd.DataFrame(rows), None, {})
    assert not t["is_knee"].any() and t["knee_note"].iloc[0].startswith(
        "no reliable knee: differences within fold spread"
    )


def test_flat_data_set_gives_fit_unreliable():
    from analysis.summary import answer_sentences

    rng = np.random.default_rng(0)
    rows = [trial("moco", n, f, float(0.45 + rng.normal(0, 0.01))) for n in (64, 128, 256, 512, 1024) for f in range(3)]
    fits = analysis.stats.fit_learning_curves(pd.DataFrame(rows), n_boot=30, seed=0)
    problems = fits[("19cat", "moco")].problems()
    assert problems and any("bound" in p or "below the best measured" in p for p in problems)
    answers = learning_curve_answers(fits, [0.4, 0.8])
    assert not answers["reliable"].any() and answers["n"].isna().all()
    (sentence,) = answer_sentences(answers)
    assert "fit unreliable" in sentence and "n \u2248" not in sentence
    fig = figures.learning_curves(trials=pd.DataFrame(rows), config={"curve_bootstrap": 30, "targets": [40]})
    assert any("fit unreliable" in (t.name or "") for t in fig.data)
    assert not any(getattr(t.marker, "symbol", None) == "x" for t in fig.data if isinstance(t, go.Scatter))
    # Three sizes of a clean curve: still unreliable (fewer than 4 sizes).
    few = [trial("moco", n, f, float(power_law(n, 0.85, 2.0, 0.5))) for n in (128, 512, 2048) for f in range(3)]
    fit = analysis.stats.fit_learning_curves(pd.DataFrame(few), n_boot=20)[("19cat", "moco")]
    assert any("fewer than 4" in p for p in fit.problems())


def _curve_rows(sizes, oa, folds=3, spread=0.01, model="moco"):
    """Fold-level trials around ``oa(n)`` with a fold spread shrinking like n^-0.35."""
    offsets = np.linspace(-1, 1, folds)
    return [
        trial(model, n, f, float(oa(n) + spread * (128 / n) ** 0.35 * d)) for n in sizes for f, d in enumerate(offsets)
    ]


def test_curve_family_is_chosen_by_aicc_and_offset_needs_six_sizes():
    from analysis.curves import OFFSET, POWER_LAW

    sizes = [64 * 2**i for i in range(8)]
    offset_truth = lambda n: 0.9 - 40.0 * (n + 900.0) ** -0.8  # noqa: E731  (flat start, then a late rise)
    fit = analysis.stats.fit_learning_curves(pd.DataFrame(_curve_rows(sizes, offset_truth, spread=0.002)))[
        ("19cat", "moco")
    ]
    assert fit.family == OFFSET and fit.d > 100
    assert np.allclose(fit.predict(sizes), [offset_truth(n) for n in sizes], atol=0.004)
    five = analysis.stats.fit_learning_curves(pd.DataFrame(_curve_rows(sizes[:5], offset_truth, spread=0.002)))
    assert five[("19cat", "moco")].family == POWER_LAW  # 5 sizes: the 4-parameter family is not eligible


def test_labels_needed_only_after_a_passed_backtest():
    from analysis.summary import answer_sentences

    sizes = [64 * 2**i for i in range(6)]
    good = lambda n: float(power_law(n, 0.9, 1.6, 0.45))  # noqa: E731 - a one-line true curve
    fits = analysis.stats.fit_learning_curves(pd.DataFrame(_curve_rows(sizes, good)))
    bt = analysis.stats.backtest_table(fits, 2.0)
    assert bt["passed"].all() and bt["size"].tolist() == [2048] and bt["from_size"].tolist() == [1024]
    target = good(1500)
    (sentence,) = answer_sentences(learning_curve_answers(fits, [target]))
    assert f"{100 * target:.0f} %: n \u2248" in sentence and "tolerance 2 pp: passed" in sentence
    assert "95 % CI" in sentence and "power law fit" in sentence
    # the largest size 6 pp below the curve (a plateau the power law cannot follow): withheld
    bent = lambda n: good(n) - (0.06 if n == sizes[-1] else 0.0)  # noqa: E731 - a one-line true curve
    fits = analysis.stats.fit_learning_curves(pd.DataFrame(_curve_rows(sizes, bent)))
    answers = learning_curve_answers(fits, [target])
    assert not answers["reliable"].any() and answers["n"].isna().all()
    (sentence,) = answer_sentences(answers)
    assert "the backtest failed" in sentence and "n \u2248" not in sentence
    fig = figures.backtest(trials=pd.DataFrame(_curve_rows(sizes, bent)))
    measured = next(t for t in fig.data if "measured" in t.name)
    assert list(measured.marker.symbol) == ["circle-open"]  # failed: open marker
    # four sizes: no backtest, no number, and the sentence says why
    fits = analysis.stats.fit_learning_curves(pd.DataFrame(_curve_rows(sizes[:4], good)))
    (sentence,) = answer_sentences(learning_curve_answers(fits, [target]))
    assert "no backtest with 4 sizes" in sentence and "at least 5 sizes" in sentence
    assert is_no_data(figures.backtest(trials=pd.DataFrame(_curve_rows(sizes[:4], good))))
    # one fold per size: no spread to weigh the curve, so no band, no backtest, no number
    one = fit_learning_curve(sizes, [good(n) for n in sizes], groups=[0] * len(sizes))
    assert one.band([100.0]) is None and one.backtest is None
    assert "one fold per size" in learning_curve_answers({("19cat", "moco"): one}, [target])["problems"].iloc[0]


def test_advantage_sentences_per_size_with_p_values():
    from analysis.summary import advantage_sentences

    rows = []
    diffs = {64: [0.12, 0.14, 0.13], 128: [-0.09, 0.02, -0.05]}  # + significant, - not significant
    for n, ds in diffs.items():
        for f, d in enumerate(ds):
            rows += [trial("baseline", n, f, 0.5), trial("moco", n, f, 0.5 + d)]
    text = " ".join(advantage_sentences(pd.DataFrame(rows), analysis.config.merge_analysis_config(None)))
    # corrected resampled t (paper protocol, 3 folds: variance factor 1/3 + 1/2 instead of 1/3), then
    # Holm over the family of both sizes: the smaller p times 2, the larger one as it is (monotone)
    raw = {n: stats.ttest_rel([0.5 + d for d in ds], [0.5] * 3).statistic for n, ds in diffs.items()}
    p = {n: 2 * stats.t.sf(abs(t) * np.sqrt((1 / 3) / (1 / 3 + 1 / 2)), df=2) for n, t in raw.items()}
    p64, p128 = min(1.0, 2 * p[64]), max(min(1.0, 2 * p[64]), p[128])
    assert f"n = 64: +13.0 pp (Holm-adjusted p = {p64:.3f})" in text
    assert f"n = 128: -4.0 pp (not significant, Holm-adjusted p = {p128:.3f})" in text
    assert (
        f"significantly higher at n = 64 (Holm-adjusted p = {p64:.3f} over 2 sizes of 19cat, moco vs baseline, OA)"
    ) in text and "The sign changes with the size" in text
    assert "paper protocol, 3 folds" in text
    assert "average advantage" not in text and "2,048" not in text  # no average; sizes from the run only


def test_reference_lines_majority_ceiling_and_no_learning_level():
    trials, _ = _box_trials()
    trials = pd.concat(
        [
            trials,
            pd.DataFrame(
                [{**trial("baseline", 20000, f, 0.83), "protocol": "ceiling", "cell_id": f"ceil-{f}"} for f in range(2)]
            ),
        ]
    )
    pc = pd.DataFrame(
        [
            {
                "cell_id": "moco-19cat-n128-f0",
                "model": "moco",
                "category_set": "19cat",
                "split": "validation",
                "category": c,
                "support": s,
            }
            for c, s in (("column", 45), ("plate", 35), ("cpc", 20))
        ]
    )
    fig = figures.accuracy_vs_size(trials=trials, per_class=pc)
    lines = [s for s in fig.layout.shapes if s.y0 == s.y1]
    assert {round(s.y0, 3) for s in lines} == {0.45, 0.83}  # majority share, ceiling mean
    assert 20000 not in [int(x) for b in fig.data if isinstance(b, go.Box) for x in b.x]  # ceiling is no box
    # each line labelled once, with text; the higher label above its line, the lower one below
    labels = {a.text.split(" ")[0]: a for a in fig.layout.annotations if a.text and "zoom" not in a.text}
    assert all(a.text for a in fig.layout.annotations)
    assert labels["majority"].yanchor == "top" and labels["supervised"].yanchor == "bottom"
    assert 20000 not in set(analysis.stats.paired_difference_table(trials)["train_size"])
    losses = pd.DataFrame(
        [{"run": "pretrain-moco", "stage": "pretrain", "model": "moco", "step": s, "loss": 6.0} for s in range(5)]
    )
    pre = pd.DataFrame([{"model": "moco", "n_images": 720, "batch_size": 64, "no_learning_loss": np.log(720 + 1)}])
    res = Results.from_frames(losses=losses, pretraining=pre, raw_config={"pretrain": {"moco": {"queue_size": 1024}}})
    fig = figures.pretraining_loss(res)
    (line,) = fig.layout.shapes
    assert line.y0 == pytest.approx(np.log(720 + 1))  # as recorded: K = 1024 cut to the 720 images


def _report_text(path):
    return path.read_text(encoding="utf-8")


def test_synthetic_banner_and_campaign_names(tmp_path):
    tables = make_tables(folds=3, embeddings=False)
    synthetic = write_run(tmp_path / "syn", tables, analysis={"curve_bootstrap": 10, "n_bootstrap": 200})
    html = _report_text(build_report(synthetic))
    assert "id='synthetic-banner'" in html and "synthetic demonstration data, not scientific results" in html.lower()
    assert "NASCENT19 (synthetic)" in html and "CLOUDLAB (synthetic)" in html
    real = write_run(
        tmp_path / "real", tables, analysis={"curve_bootstrap": 10, "n_bootstrap": 200}, data={"root": "/data/ice"}
    )
    html = _report_text(build_report(real))
    assert "synthetic-banner" not in html and "(synthetic)" not in html
    assert "root /data/ice" in html
    assert "not recorded" in html  # no run_info.json in a hand-made run


def test_csv_link_holds_the_figure_numbers_and_run_section(tmp_path):
    import base64
    import io
    import json

    tables = make_tables(folds=3, embeddings=False)
    tables["trials"] = tables["trials"].assign(train_accuracy=0.9, steps=120, init="random")
    run = write_run(tmp_path / "run", tables, analysis={"curve_bootstrap": 10, "n_bootstrap": 200})
    (run / "run_info.json").write_text(
        json.dumps(
            {
                "software": {"python": "3.11.7", "raystudy": "0.1.0", "torch": "2.14.1", "ray": "2.60.0"},
                "hardware": {"cpu_model": "Test CPU", "cpu_cores": 2, "gpu_models": []},
                "seeds": {"study": 0},
                "config_hash": "abc123",
                "started_at": 1.7e9,
                "wall_seconds": 95.0,
            }
        )
    )
    html = _report_text(build_report(run))
    links = re.findall(r"download='([^']+)' href='data:text/csv;base64,([^']+)'", html)
    assert len(links) >= int(re.search(r"content='(\d+)'", html).group(1))  # one per figure (+ numbers table)
    name, payload = next((n, p) for n, p in links if "Fig.-4" in n)
    csv = pd.read_csv(io.StringIO(base64.b64decode(payload).decode()))
    want = done = tables["trials"][tables["trials"]["category_set"] == "19cat"]
    assert len(csv) == len(done)
    assert csv["overall_accuracy"].sort_values().to_numpy() == pytest.approx(
        want["overall_accuracy"].sort_values().to_numpy()
    )
    for section in (
        "id='toc'",
        "id='pretraining'",
        "id='numbers-table'",
        "id='run-facts'",
        "id='parquet-paths'",
        "id='resolved-config'",
    ):
        assert section in html, section
    assert "Test CPU, 2 cores" in html and "torch 2.14.1" in html and "95 s" in html
    assert "training accuracy (mean)" in html and "Semisup-MoCo: random" in html
    assert str(run / "results" / "trials") in html


def test_bad_catalog_or_config_fails_by_name(tmp_path):
    from raystudy.config import ConfigError

    (tmp_path / "config.yaml").write_text("name: x\ncatalog:\n  categories: [a, b]\n  colours: [red]\n")
    with pytest.raises(ConfigError, match=r"config\.yaml: unknown config key\(s\) catalog\.colours"):
        load_results(tmp_path)
    (tmp_path / "config.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"config\.yaml is not valid YAML"):
        load_results(tmp_path)
    (tmp_path / "config.yaml").write_text(
        "name: x\ncatalog:\n  categories: [a, b]\n  basic: [a]\n  category_sets: {two: [a, b]}\n  aliases: {}\n"
    )
    assert load_results(tmp_path).catalog.category_set("two") == ("a", "b")


def test_ceiling_cells_stay_out_of_the_per_size_tables():
    from analysis.results import drop_ceiling_details

    trials = pd.DataFrame(
        {"cell_id": ["baseline-19cat-ceiling", "moco-19cat-n64-f0"], "protocol": ["ceiling", "paper"]}
    )
    per_class = pd.DataFrame({"cell_id": ["baseline-19cat-ceiling", "moco-19cat-n64-f0"], "f1": [0.9, 0.5]})
    losses = pd.DataFrame({"run": ["baseline-19cat-ceiling", "pretrain-moco"], "loss": [1.0, 6.0]})
    out = drop_ceiling_details({"trials": trials, "per_class": per_class, "losses": losses})
    assert out["trials"].equals(trials)  # the ceiling's trials row is the reference line
    assert out["per_class"]["cell_id"].tolist() == ["moco-19cat-n64-f0"]
    assert out["losses"]["run"].tolist() == ["pretrain-moco"]


def test_a_model_that_predicts_one_class_on_the_unseen_campaign_is_named():
    """Chance agreement (Cohen's kappa), not the share of one category: a perfect model of a
    campaign that is 70 % one category is not named, a model that puts everything there is."""
    from analysis.confusion import fold_agreement
    from analysis.summary import generalization_sentences

    truth = {"column": 70, "plate": 30}
    predictions = {
        "byol": {("column", "column"): 70, ("plate", "column"): 30},  # everything into column
        "moco": {("column", "column"): 70, ("plate", "plate"): 30},  # perfect
        "simclr": {("column", "column"): 60, ("column", "plate"): 10, ("plate", "column"): 10, ("plate", "plate"): 20},
    }
    rows, trials = [], []
    for model, cells in predictions.items():
        assert {t: sum(n for (tt, _), n in cells.items() if tt == t) for t in truth} == truth
        for fold in (0, 1):
            for (true, pred), n in cells.items():
                rows.append(
                    {
                        "split": "generalization",
                        "category_set": "4cat",
                        "model": model,
                        "train_size": 192,
                        "fold": fold,
                        "true_category": true,
                        "predicted_category": pred,
                        "count": n,
                    }
                )
            trials.append(
                {
                    "cell_id": f"{model}-4cat-n192-f{fold}",
                    "model": model,
                    "category_set": "4cat",
                    "n_categories": 4,
                    "train_size": 192,
                    "fold": fold,
                    "status": "done",
                    "protocol": "holdout",
                    "overall_accuracy": 0.7,
                    "generalization_accuracy": 0.7,
                    "generalization_campaign": "CLOUDLAB",
                    "finished_at": 1.0,
                    "arch": "resnet18",
                }
            )
    confusion = pd.DataFrame(rows)
    kappas = fold_agreement(confusion, "4cat").groupby("model")
    assert kappas["kappa"].max()["byol"] == 0.0 and kappas["kappa_se"].max()["byol"] == 0.0
    assert kappas["kappa"].min()["moco"] == pytest.approx(1.0)
    assert kappas["predicted_share"].max()["moco"] == pytest.approx(0.7)  # 70 % in one category, and right
    assert 0.4 < kappas["kappa"].min()["simclr"] < 0.7
    text = " ".join(
        generalization_sentences(
            pd.DataFrame(trials), {"cssl_model": "moco", "reference_model": "byol"}, confusion=confusion
        )
    )
    assert "every fold model of Semisup-BYOL agrees with the true categories barely beyond chance" in text
    assert "Bonferroni over 3 model(s)" in text and "puts 100\u2013100 % of the images into column" in text
    assert "true share is 70 %" in text
    assert "Semisup-MoCo agrees" not in text and "SimCLR agrees" not in text
    one_true = confusion[confusion["true_category"] == "column"]  # one true category: no kappa, no claim
    assert fold_agreement(one_true, "4cat")["kappa"].isna().all()
    assert "barely beyond chance" not in " ".join(
        generalization_sentences(
            pd.DataFrame(trials), {"cssl_model": "moco", "reference_model": "byol"}, confusion=one_true
        )
    )


# ------------------------------------------------------------------ selection strategies


def test_selection_section_appears_with_two_strategies_and_leaves_the_rest_unchanged(tmp_path):
    from fixtures_analysis import with_selection

    from analysis.sections import numbers_frame
    from analysis.strategies import labels_saved_table, selection_sentences, size_at_accuracy

    base = make_tables(seed=3, folds=5, embeddings=False)
    both = with_selection(base, "coreset", gain=0.04)
    single = load_results(write_run(tmp_path / "single", base))
    paired = load_results(write_run(tmp_path / "paired", both))
    # the paper's figures describe the random draw: the coreset cells change none of their numbers
    pd.testing.assert_frame_equal(numbers_frame(single), numbers_frame(paired))
    assert set(paired.per_class["cell_id"]) == set(single.per_class["cell_id"])
    html = _report_text(build_report(tmp_path / "paired"))
    assert "Selection strategies: 19 categories (19cat)" in html
    assert "Selection strategies" not in _report_text(build_report(tmp_path / "single"))
    table = labels_saved_table(paired.trials)
    assert set(table["selection"]) == {"coreset"} and set(table["category_set"]) == {"19cat"}
    # +4 pp at every size with tiny noise: coreset reaches random's OA with fewer labels, a verdict
    claims = table[~table["verdict"].str.startswith("no verdict")]
    assert len(claims) and (claims["labels_saved"].dropna() > 0).all() and (claims["p_adjusted"] <= 0.05).all()
    assert (table["mean_diff"] > 0.03).all()
    assert "coreset is better than random" in html
    # every quoted saving carries its 95 % interval, which holds the point, in the figure and the sentence
    quoted = table[table["labels_saved"].notna()]
    assert quoted["saved_ci"].str.startswith("95 % CI").all()
    lo, hi = quoted["saved_low"], quoted["saved_high"]  # an open end is -inf below, +inf above
    assert ((lo <= quoted["labels_saved"]) & (quoted["labels_saved"] <= hi)).all()
    assert all("95 % CI" in line for line in selection_sentences(table))
    assert size_at_accuracy(np.array([100, 400]), np.array([0.5, 0.7]), 0.6) == pytest.approx(200)


def test_selection_without_difference_gives_no_verdict(tmp_path):
    from fixtures_analysis import with_selection

    from analysis.strategies import labels_saved_table

    table = labels_saved_table(
        load_results(
            write_run(
                tmp_path / "run",
                with_selection(make_tables(seed=4, folds=5, embeddings=False), "balanced", gain=0.0, noise=0.0),
            )
        ).trials
    )
    assert len(table) and table["verdict"].str.startswith("no verdict").all()


# ------------------------------------------------------------------ comparable cells


def test_two_archs_and_a_ceiling_cell_give_the_single_arch_statistics(tmp_path):
    from fixtures_analysis import with_second_arch

    from analysis.confusion import fold_agreement
    from analysis.labeling import cell_hours
    from analysis.select import comparable, done_trials, majority_share
    from analysis.strategies import labels_saved_table
    from analysis.summary import advantage_sentences, knee_sentences

    base = make_tables(seed=5, folds=3, embeddings=False, sizes={"4cat": [128, 256, 512, 1024]})
    single = {
        k: v.assign(arch="resnet50") if k in ("grid", "trials", "per_class", "confusion") else v
        for k, v in base.items()
    }
    both = with_second_arch(base)
    cfg = analysis.config.merge_analysis_config({"labeling_time_model": "per_group"})
    drop = ["ci_low", "ci_high"]  # the bootstrap is not used below 10 folds; the t interval is exact
    for metric in ("overall_accuracy", "generalization_accuracy"):
        one = paired_difference_table(single["trials"], metric=metric)
        two = paired_difference_table(both["trials"], metric=metric)
        assert set(two["arch"]) == {"resnet50", "resnet18"}
        mine = two[two["arch"] == "resnet50"].reset_index(drop=True)
        pd.testing.assert_frame_equal(mine.drop(columns=drop), one.drop(columns=drop))
        assert np.allclose(mine[drop], one[drop])
        assert 50000 not in set(two["train_size"])  # the ceiling cell is no point of a curve
    # the other backbone's numbers are its own, not an average with the first
    other = paired_difference_table(both["trials"]).query("arch == 'resnet18'")
    assert not np.allclose(other["mean_diff"], paired_difference_table(single["trials"])["mean_diff"])
    doa_one = doa_table(single["trials"], single["per_class"], cfg)
    doa_two = doa_table(both["trials"], both["per_class"], cfg)
    pd.testing.assert_frame_equal(doa_two[doa_two["arch"] == "resnet50"].reset_index(drop=True), doa_one)
    assert (doa_one["time_model"] == "per_group").all()
    hours_one = cell_hours(single["per_class"], cfg, trials=single["trials"], arch="resnet50")
    hours_two = cell_hours(both["per_class"], cfg, trials=both["trials"], arch="resnet50")
    pd.testing.assert_frame_equal(hours_two.reset_index(drop=True), hours_one.reset_index(drop=True))
    assert majority_share(both["per_class"], "4cat", trials=both["trials"], arch="resnet50") == pytest.approx(
        majority_share(single["per_class"], "4cat", trials=single["trials"], arch="resnet50")
    )
    pd.testing.assert_frame_equal(
        fold_agreement(both["confusion"], "4cat", "validation", both["trials"], "resnet50"),
        fold_agreement(single["confusion"], "4cat", "validation", single["trials"], "resnet50"),
    )
    pd.testing.assert_frame_equal(
        fold_confusion(both["confusion"], "moco", "4cat", 1024, trials=both["trials"], arch="resnet50"),
        fold_confusion(single["confusion"], "moco", "4cat", 1024),
    )
    assert comparable(both["trials"], arch="resnet50").shape[0] == single["trials"].shape[0]
    assert len(done_trials(both["trials"], ceiling=True)) == 1
    # sentences: per backbone, named when there are two, and the single-arch wording otherwise
    text_one = advantage_sentences(single["trials"], cfg)
    text_two = advantage_sentences(both["trials"], cfg)
    assert [
        s.replace("4 categories (4cat), resnet50", "4 categories (4cat)") for s in text_two if "resnet50" in s
    ] == text_one
    assert any("4 categories (4cat), resnet18" in s for s in text_two)
    assert len(knee_sentences(doa_two, cfg)) == 2 * len(knee_sentences(doa_one, cfg))
    assert labels_saved_table(both["trials"]).empty  # one strategy only: nothing to compare
    # figures draw one backbone (the first by default), with the ceiling as a line, never as a box
    for build in (figures.accuracy_vs_size, figures.generalization):
        one_fig = build(trials=single["trials"], per_class=single["per_class"])
        two_fig = build(trials=both["trials"], per_class=both["per_class"], arch="resnet50")
        assert [list(t.y) for t in two_fig.data if t.y is not None] == [
            list(t.y) for t in one_fig.data if t.y is not None
        ]
        assert "(resnet50)" in two_fig.layout.title.text
    fits_one = analysis.stats.fit_learning_curves(single["trials"], n_boot=0)
    fits_two = analysis.stats.fit_learning_curves(both["trials"], n_boot=0, arch="resnet50")
    assert {k: (f.a, f.b, f.c) for k, f in fits_two.items()} == {k: (f.a, f.b, f.c) for k, f in fits_one.items()}
    html = _report_text(build_report(write_run(tmp_path / "two", both)))
    assert "4 categories (4cat), resnet18: Semisup-MoCo minus Baseline (Sup) in OA" in html
    # learning curves and their backtests per backbone, the backbone named
    assert re.search(r"Semisup-MoCo \(4cat, resnet18\): ", html) and re.search(
        r"Semisup-MoCo \(4cat, resnet50\): ", html
    )
    assert html.count("no backtest with 4 sizes") >= 6  # 3 models x 2 backbones (4 sizes each): no number


def test_doa_non_inferiority_claim_with_its_interval():
    from analysis.labeling import doa_interval, smallest_noninferior
    from analysis.summary import knee_sentences

    # by hand: reference folds [0.80, 0.82, 0.78] (mean 0.80, s^2 = 4e-4), model folds [0.79, 0.80, 0.78]
    # (mean 0.79, s^2 = 1e-4); paper protocol, 3 folds: factor 1/3 + 1/2 = 5/6 on both variances;
    # Var = 5/6 * 5e-4, Welch df = (5e-4)^2 / ((4e-4)^2 / 2 + (1e-4)^2 / 2) = 2.941
    doa, lo, hi = doa_interval([0.80, 0.82, 0.78], [0.79, 0.80, 0.78], 1 / 3, 1 / 3)
    half = stats.t.ppf(0.975, 25e-8 / (17e-8 / 2)) * np.sqrt(5 / 6 * 5e-4)
    assert doa == pytest.approx(0.01) and (lo, hi) == pytest.approx((0.01 - half, 0.01 + half))
    # fixed sequence from the largest size down: stops at the first size whose bound is not below the margin
    assert smallest_noninferior([128, 256, 512, 1024], [0.01, 0.01, 0.03, 0.005], 0.02) == 1024
    assert smallest_noninferior([128, 256, 512], [0.01, 0.015, 0.019], 0.02) == 128
    assert smallest_noninferior([128, 256], [0.01, 0.05], 0.02) is None
    rows = []
    for n, (ref, mine) in {256: (None, 0.70), 1024: (None, 0.785), 4096: (0.80, 0.795)}.items():
        for f, e in enumerate((-0.004, 0.0, 0.004)):
            rows.append(trial("moco", n, f, mine + e))
            if ref is not None:
                rows.append(trial("baseline", n, f, ref + e))
    cfg = analysis.config.merge_analysis_config({"doa_margin_pp": 3})
    doa = doa_table(pd.DataFrame(rows), cfg=cfg).set_index("train_size")
    assert doa.loc[1024, "doa_high"] < 0.03 < doa.loc[256, "doa_high"]
    assert (doa["smallest_noninferior"] == 1024).all() and doa.loc[[1024, 4096], "noninferior"].all()
    text = " ".join(knee_sentences(doa.reset_index(), cfg))
    assert (
        "the smallest n at which Semisup-MoCo is within 3 pp of Baseline (Sup) at n = 4,096 (DOA upper "
        "95 % bound below 3 pp"
    ) in text
    assert f"is n = 1,024: DOA +1.5 pp, 95 % CI {100 * doa.loc[1024, 'doa_low']:+.1f} to" in text


def test_the_knee_sentence_carries_its_doa_interval_and_reads_it():
    """Issue 21 item 3: the knee's cost (or gain) is printed with the DOA's 95 % interval, and a
    difference whose interval spans zero is not called a gain or a loss."""
    from analysis.summary import knee_cost

    k = {"doa": -0.034, "doa_low": -0.134, "doa_high": 0.067, "doa_margin": 0.02, "reference_size": 96}
    k |= {"reference_oa": 0.698, "fold_spread": 0.044}
    text = knee_cost(k, "Baseline (Sup)")
    assert text == (
        "and scores 3.4 pp above Baseline (Sup) at n = 96 (OA 69.8 %; DOA -3.4 pp, 95 % CI -13.4 to +6.7 pp: "
        "the interval spans both signs: no difference is shown; within the 2 pp margin: not shown)."
    )
    loss = knee_cost(k | {"doa": 0.04, "doa_low": 0.01, "doa_high": 0.07}, "Baseline (Sup)")
    assert loss.startswith("at the expense of 4.0 pp overall accuracy relative to") and "confirms the loss" in loss
    gain = knee_cost(k | {"doa": -0.05, "doa_low": -0.08, "doa_high": -0.02}, "Baseline (Sup)")
    assert "confirms the gain; within the 2 pp margin: yes" in gain
    one_fold = knee_cost(k | {"doa_low": float("nan"), "doa_high": float("nan")}, "Baseline (Sup)")
    assert one_fold.endswith("fold spread 4.4 pp; no interval with one fold).")


def test_cells_that_did_not_fit_are_marked_and_said():
    """Issue 21 item 8: a size whose cells ended below finetune.fit_accuracy on their own images is
    drawn with hollow fold dots and named in a sentence; the ceiling says how it ended."""
    trials = make_tables(folds=3, embeddings=False, sizes={"4cat": [128, 256, 512]})["trials"]
    trials["train_accuracy"], trials["fitted"] = 0.995, True
    late = (trials["train_size"] == 512) & (trials["model"] == "moco") & (trials["fold"] < 2)
    trials.loc[late, ["train_accuracy", "fitted"]] = [0.91, False]
    assert fit_sentences(trials.drop(columns="fitted")) == []  # runs from before the column: no claim
    ceiling = trials.iloc[[0]].assign(
        cell_id="baseline-4cat-ceiling",
        model="baseline",
        train_size=2000,
        fold=0,
        protocol="ceiling",
        train_accuracy=0.93,
        fitted=False,
        steps=1800,
        stop_reason="max_cycles",
    )
    said = fit_sentences(pd.concat([trials, ceiling], ignore_index=True))
    assert len(said) == 2
    assert said[0].startswith("4cat: cells stopped before fitting their training images")
    assert "at n = 512 (2 of 9 cells, training accuracy 91\u201391 %)." in said[0]
    assert said[1].startswith("Supervised ceiling of 4cat (2,000 labeled images): did not fit")
    assert "max_cycles" in said[1]
    fig = accuracy_vs_size(trials=trials, config={}, category_set="4cat", inset=False)
    moco = next(t for t in fig.data if t.name == "Semisup-MoCo folds")
    hollow = [s == "circle-open" for s in moco.marker.symbol]
    assert sum(hollow) == 2 and all(x == max(moco.x) for x, h in zip(moco.x, hollow, strict=True) if h)
    assert all("did not fit" in t for t, h in zip(moco.text, hollow, strict=True) if h)


def _probe_predictions(name: str, arch: str, correct: dict[str, np.ndarray]) -> pd.DataFrame:
    """Per-image probe predictions: right where ``correct[kind]`` is True (labels 0, wrong 1)."""
    return pd.concat(
        [
            pd.DataFrame(
                {
                    "model": name,
                    "arch": arch,
                    "probe": kind,
                    "image_id": [f"img{i}" for i in range(len(right))],
                    "label": 0,
                    "predicted": np.where(right, 0, 1),
                }
            )
            for kind, right in correct.items()
        ],
        ignore_index=True,
    )


def test_a_run_without_probes_or_pretraining_has_no_pretraining_verdicts():
    """A baseline-only study stores empty probes and pretraining tables; the section is empty, not an error."""
    from analysis.results import Results
    from analysis.sections import pretraining_verdicts

    assert pretraining_verdicts(Results()) == []


def test_did_pretraining_learn_uses_mcnemar_against_its_own_starting_weights_per_arch():
    """Issue 21 item 7: each encoder against the weights its pretraining started from, on the
    same backbone, with McNemar on per-image predictions and Holm over encoders x probes."""
    rng = np.random.default_rng(0)
    start = rng.random(400) < 0.45  # the starting weights right on 45 % of the images
    better = start | (rng.random(400) < 0.30)  # + about 16 points, same images
    same = start ^ (rng.random(400) < 0.04)  # the same up to a few flips either way

    def probe_row(name, arch, right):
        return {
            "model": name,
            "arch": arch,
            "encoder": name,
            "category_set": "19cat",
            "n_train": 800,
            "n_test": 400,
            "knn_accuracy": right.mean(),
            "linear_probe_accuracy": right.mean(),
        }

    specs = [
        ("random_init", "resnet18", start),
        ("moco", "resnet18", better),
        ("byol", "resnet18", same),
        ("random_init-resnet34", "resnet34", better),  # a better start on the other backbone ...
        ("moco-resnet34", "resnet34", better),  # ... so this encoder gained nothing over its own
    ]
    res = Results.from_frames(
        probes=pd.DataFrame([probe_row(*s) for s in specs]),
        probe_predictions=pd.concat([_probe_predictions(n, a, {"knn": r, "linear": r}) for n, a, r in specs]),
    )
    rows = {r["name"]: r for r in pretraining_verdicts(res)}
    assert set(rows) == {"moco", "byol", "moco-resnet34"}
    assert rows["moco"]["verdict"].startswith("yes: both probes beat its starting weights (random init)")
    assert "McNemar on the same test images, Holm over 6 tests" in rows["moco"]["verdict"]
    assert rows["byol"]["verdict"].startswith("no evidence")
    assert rows["moco-resnet34"]["verdict"].startswith("no evidence")  # against random_init-resnet34, not resnet18's
    test = rows["moco"]["knn_accuracy_test"]
    assert test["low"] < test["diff"] < test["high"] and test["p_adjusted"] <= 0.05
    text = _vs_random(rows["moco"], "knn_accuracy")
    assert "95 % CI" in text and "McNemar Holm-adjusted p" in text


def test_the_online_knn_curve_is_drawn_with_its_interval_and_the_starting_weights():
    """Issue 22 item 1: the report draws each encoder's online kNN per epoch (Wilson 95 % bars
    from its query count) against the same encoder at its starting weights."""
    from statsmodels.stats.proportion import proportion_confint

    from analysis.figures import is_no_data, online_knn
    from analysis.results import Results

    row = {
        "model": "moco",
        "arch": "resnet18",
        "online_knn_curve": "[0.5, 0.625, 0.75]",
        "online_knn_random_init": 0.375,
        "online_knn_queries": 64,
    }
    fig = online_knn(Results.from_frames(pretraining=pd.DataFrame([row])))
    curve, start = fig.data
    assert list(curve.x) == [1, 2, 3] and list(curve.y) == [0.5, 0.625, 0.75]
    lo, hi = proportion_confint(48, 64, alpha=0.05, method="wilson")
    assert curve.error_y.array[-1] == pytest.approx(hi - 0.75) and curve.error_y.arrayminus[-1] == pytest.approx(
        0.75 - lo
    )
    assert list(start.y) == [0.375, 0.375] and start.name.endswith("starting weights 37.5%")
    assert is_no_data(online_knn(Results.from_frames()))


def test_the_online_knn_numbers_are_one_row_per_encoder_and_epoch_with_the_figures_interval():
    """The CSV behind the online kNN figure gives each epoch's accuracy and its Wilson bounds, not the
    pretraining table's one row per encoder with the curve as a JSON string."""
    from statsmodels.stats.proportion import proportion_confint

    from analysis.figures import online_knn_table

    rows = pd.DataFrame(
        [
            {
                "model": "moco",
                "arch": "resnet18",
                "online_knn_curve": "[0.5, 0.75]",
                "online_knn_random_init": 0.375,
                "online_knn_queries": 64,
            },
            {
                "model": "byol",
                "arch": "resnet18",
                "online_knn_curve": "[0.25]",
                "online_knn_random_init": None,
                "online_knn_queries": None,
            },
            {
                "model": "simclr",
                "arch": "resnet18",
                "online_knn_curve": None,
                "online_knn_random_init": None,
                "online_knn_queries": None,
            },
        ]
    )
    table = online_knn_table(rows)
    assert table[["model", "epoch"]].values.tolist() == [["moco", 1], ["moco", 2], ["byol", 1]]
    lo, hi = proportion_confint(48, 64, alpha=0.05, method="wilson")
    moco = table[table["model"] == "moco"].iloc[-1]
    assert (moco["knn_accuracy"], moco["queries"], moco["starting_weights"]) == (0.75, 64, 0.375)
    assert moco["ci95_low"] == pytest.approx(lo) and moco["ci95_high"] == pytest.approx(hi)
    byol = table[table["model"] == "byol"].iloc[0]
    assert byol[["ci95_low", "ci95_high", "starting_weights"]].isna().all()  # no counts recorded: no interval
    assert online_knn_table(pd.DataFrame()).empty
