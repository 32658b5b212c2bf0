"""Hand-made, realistic result tables for the analysis tests (no training involved)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # let `pytest tests/...` import analysis and raystudy from the checkout
    sys.path.insert(0, str(ROOT))

from raystudy.catalog import CATEGORIES_4, CATEGORIES_19  # noqa: E402 - after the checkout is put on sys.path

SIZES = {
    "19cat": [128, 256, 512, 1024, 2048, 4096, 8192, 16384, 18864],
    "4cat": [128, 256, 512, 1024, 2048, 4096, 8192],
}
# (a, b, c) of OA(n) = a - b n^-c per (category set, model).
TRUTH = {
    ("19cat", "moco"): (0.80, 2.0, 0.45),
    ("19cat", "byol"): (0.78, 3.2, 0.45),
    ("19cat", "baseline"): (0.795, 3.0, 0.45),
    ("4cat", "moco"): (0.91, 1.4, 0.5),
    ("4cat", "byol"): (0.905, 1.6, 0.5),
    ("4cat", "baseline"): (0.915, 2.4, 0.5),
}
# Relative frequency of each category in the labeled campaign (NASCENT19-like, Fig. 1).
FREQ19 = dict(
    zip(CATEGORIES_19, [22, 4, 1.5, 3, 3, 10, 14, 13, 4, 5, 2.5, 1.2, 1.5, 0.8, 0.6, 1.5, 0.7, 4, 1.2], strict=True)
)

ANALYSIS_CONFIG: dict[str, Any] = {
    "reference_points": [
        {"label": "IceDetectNet", "n_categories": 19, "train_size": 18864, "accuracy": 0.782, "spread": 0.009}
    ],
    "curve_bootstrap": 30,
    "n_bootstrap": 500,
}


def _freq(cset: str) -> np.ndarray:
    cats = CATEGORIES_19 if cset == "19cat" else CATEGORIES_4
    p = np.array([FREQ19[c] for c in cats], dtype=float)
    return p / p.sum()


def _confusion(rng: np.random.Generator, cset: str, oa: float, n_val: int) -> np.ndarray:
    """A confusion matrix whose frequent classes are recognised best, overall accuracy ~ oa."""
    p = _freq(cset)
    true = rng.multinomial(n_val, p)
    skill = np.sqrt(p / p.max())
    recall = np.clip(oa + 0.3 * (skill - (p * skill).sum()), 0.05, 0.99)
    k = len(p)
    m = np.zeros((k, k), dtype=int)
    for i in range(k):
        wrong = p.copy()
        wrong[i] = 0
        probs = (1 - recall[i]) * wrong / wrong.sum()
        probs[i] = recall[i]
        m[i] = rng.multinomial(true[i], probs)
    return m


def make_tables(
    seed: int = 0,
    folds: int = 5,
    models: tuple[str, ...] = ("moco", "byol", "baseline"),
    sizes: dict[str, list[int]] | None = None,
    embeddings: bool = True,
) -> dict[str, pd.DataFrame]:
    """Every result table of a finished paper-like sweep."""
    rng = np.random.default_rng(seed)
    sizes = sizes or SIZES
    grid, trials, per_class, confusion, losses = [], [], [], [], []
    t0 = 1.7e9
    for cset, set_sizes in sizes.items():
        cats = list(CATEGORIES_19 if cset == "19cat" else CATEGORIES_4)
        for model in models:
            a, b, c = TRUTH[(cset, model)]
            for n in set_sizes:
                for fold in range(folds):
                    cell = f"{model}-{cset}-n{n}-f{fold}"
                    key = dict(
                        cell_id=cell, model=model, category_set=cset, n_categories=len(cats), train_size=n, fold=fold
                    )
                    grid.append({**key, "planned": "run", "reason": None})
                    oa_true = a - b * n ** (-c) + rng.normal(0, 0.025 * (128 / n) ** 0.35 + 0.003)
                    n_val = max(n // 5, 60)
                    m = _confusion(rng, cset, oa_true, n_val)
                    oa = float(np.trace(m) / m.sum())
                    train = rng.multinomial(n, _freq(cset))
                    col, row = m.sum(0), m.sum(1)
                    prec = np.divide(np.diag(m), col, out=np.full(len(cats), np.nan), where=col > 0)
                    rec = np.divide(np.diag(m), row, out=np.full(len(cats), np.nan), where=row > 0)
                    f1 = np.where(prec + rec > 0, 2 * prec * rec / np.where(prec + rec > 0, prec + rec, 1), 0.0)
                    gen = oa - 0.06 + rng.normal(0, 0.02) if cset == "4cat" else None
                    trials.append(
                        {
                            **key,
                            "study": "demo-paper",
                            "seed": fold,
                            "protocol": "paper",
                            "status": "done",
                            "message": None,
                            "overall_accuracy": oa,
                            "macro_f1": float(np.nanmean(f1)),
                            "generalization_accuracy": gen,
                            "generalization_campaign": "CLOUDLAB" if gen is not None else None,
                            "n_train": n,
                            "n_validation": n_val,
                            "epochs": 30,
                            "train_seconds": 60 * (4 + 5 * np.log2(n / 128) ** 1.6) * rng.uniform(0.95, 1.05),
                            "device": "cuda:0",
                            "config_hash": "abc123",
                            "finished_at": t0 + len(trials),
                        }
                    )
                    for i, cat in enumerate(cats):
                        per_class.append(
                            {
                                **key,
                                "split": "validation",
                                "category": cat,
                                "precision": prec[i],
                                "recall": rec[i],
                                "f1": f1[i],
                                "support": int(row[i]),
                                "train_count": int(train[i]),
                            }
                        )
                        for j, pred in enumerate(cats):
                            if m[i, j]:
                                confusion.append(
                                    {
                                        **key,
                                        "split": "validation",
                                        "true_category": cat,
                                        "predicted_category": pred,
                                        "count": int(m[i, j]),
                                    }
                                )
                    spe = int(np.ceil(n * 0.8 / 64))
                    for ep in range(30):
                        losses.append(
                            {
                                "run": cell,
                                "stage": "finetune",
                                "model": model,
                                "category_set": cset,
                                "train_size": n,
                                "fold": fold,
                                "epoch": ep,
                                "step": (ep + 1) * spe,
                                "loss": 0.35 + 2.5 * np.exp(-ep * (n / 4000) ** 0.3) + 0.05 * rng.random(),
                                "lr": 1e-3,
                            }
                        )
    for model in ("moco", "byol"):
        for step in range(0, 5000, 25):
            losses.append(
                {
                    "run": f"pretrain-{model}",
                    "stage": "pretrain",
                    "model": model,
                    "category_set": None,
                    "train_size": None,
                    "fold": None,
                    "epoch": step // 500,
                    "step": step,
                    "loss": (6.5 if model == "moco" else 1.2) * (0.35 + 0.65 * np.exp(-step / 900))
                    + 0.03 * rng.standard_normal(),
                    "lr": 0.03,
                }
            )
    pretraining = pd.DataFrame(
        [
            {
                "model": "moco",
                "arch": "resnet50",
                "epochs": 100,
                "n_images": 33354,
                "batch_size": 256,
                "world_size": 1,
                "no_learning_loss": float(np.log(33354 + 1)),
                "seconds": 66 * 60,
                "final_loss": 2.3,
                "device": "cuda:0",
                "knn_accuracy": 0.61,
                "linear_probe_accuracy": 0.66,
            },
            {
                "model": "byol",
                "arch": "resnet50",
                "epochs": 100,
                "n_images": 33354,
                "batch_size": 256,
                "world_size": 1,
                "seconds": 78 * 60,
                "final_loss": 0.4,
                "device": "cuda:0",
                "knn_accuracy": None,
                "linear_probe_accuracy": None,
            },
        ]
    )
    ds = []
    for cat, f in zip(CATEGORIES_19, _freq("19cat"), strict=True):
        ds.append({"campaign": "NASCENT19", "category": cat, "count": int(round(f * 18864)), "role": "labeled"})
        ds.append({"campaign": "NASCENT19", "category": cat, "count": int(round(f * 18864)), "role": "pretrain"})
        if cat not in ("lollipop", "cpc", "lollipop_aggregate", "droplet_aggregate", "cpc_aggregate"):
            ds.append(
                {"campaign": "NASCENT20", "category": cat, "count": int(rng.integers(100, 2500)), "role": "pretrain"}
            )
    for cat, cnt in zip(CATEGORIES_4, (900, 700, 300, 243), strict=True):
        ds.append({"campaign": "CLOUDLAB", "category": cat, "count": cnt, "role": "generalization"})
    probes = pd.DataFrame(
        [
            {
                "model": m,
                "encoder": e,
                "category_set": "19cat",
                "n_train": 2000,
                "n_test": 500,
                "knn_accuracy": k,
                "linear_probe_accuracy": lp,
            }
            for m, e, k, lp in (
                ("random_init", "random init", 0.30, 0.35),
                ("moco", "encoders/moco.pt", 0.61, 0.66),
                ("byol", "encoders/byol.pt", 0.31, 0.36),
            )
        ]
    )
    tables = {
        "probes": probes,
        "grid": pd.DataFrame(grid),
        "trials": pd.DataFrame(trials),
        "per_class": pd.DataFrame(per_class),
        "confusion": pd.DataFrame(confusion),
        "losses": pd.DataFrame(losses),
        "pretraining": pretraining,
        "dataset": pd.DataFrame(ds),
    }
    if embeddings:
        tables["embeddings"] = make_embeddings(rng)
    return tables


def make_embeddings(rng: np.random.Generator, per_panel: int = 250) -> pd.DataFrame:
    rows = []
    cats = list(CATEGORIES_19)
    centers = rng.normal(0, 10, size=(len(cats), 2))
    for s, stage in enumerate(("before_pretraining", "after_pretraining", "after_finetuning")):
        spread = (12.0, 5.0, 1.8)[s]
        for n in (18864, 8192, 4096, 2048):
            labels = rng.choice(len(cats), size=per_panel, p=_freq("19cat"))
            xy = centers[labels] * (0 if s == 0 else 1) + rng.normal(0, spread, size=(per_panel, 2))
            for k, (lab, (x, y)) in enumerate(zip(labels, xy, strict=True)):
                rows.append(
                    {
                        "model": "moco",
                        "stage": stage,
                        "train_size": n,
                        "image_id": f"img{n}-{k:04d}",
                        "category": cats[lab],
                        "x": float(x),
                        "y": float(y),
                    }
                )
    return pd.DataFrame(rows)


def write_run(
    run_dir: Path,
    tables: dict[str, pd.DataFrame],
    analysis: dict[str, Any] | None = None,
    name: str = "demo-paper",
    data: dict[str, Any] | None = None,
) -> Path:
    """A run folder: config.yaml plus results/<table>/part-0.parquet (and a temp file to ignore).

    Without ``data`` (no data.root / data.manifest) the run counts as synthetic."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = {"name": name, "analysis": ANALYSIS_CONFIG if analysis is None else analysis}
    if data is not None:
        cfg["data"] = data
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    for table, df in tables.items():
        folder = run_dir / "results" / table
        folder.mkdir(parents=True, exist_ok=True)
        df.to_parquet(folder / "part-0.parquet", index=False)
        (folder / ".part-1.parquet.tmp").write_bytes(b"half-written")
    return run_dir


def partial_tables(seed: int = 0) -> dict[str, pd.DataFrame]:
    """A sweep still running: some cells missing, one failed, one skipped; no embeddings or losses."""
    t = make_tables(seed=seed, folds=3, embeddings=False)
    trials = t["trials"]
    keep = ~((trials["train_size"] >= 8192) & (trials["model"] == "byol")) & ~(
        (trials["category_set"] == "4cat") & (trials["fold"] == 2)
    )
    trials = trials[keep].copy()
    trials.loc[trials.index[3], ["status", "message", "overall_accuracy"]] = ["failed", "CUDA out of memory", None]
    grid = t["grid"].copy()
    grid.loc[len(grid)] = {
        "cell_id": "baseline-4cat-n16384-f0",
        "model": "baseline",
        "category_set": "4cat",
        "n_categories": 4,
        "train_size": 16384,
        "fold": 0,
        "planned": "skipped",
        "reason": "train_size 16384 exceeds the 9182 labeled images",
    }
    done_ids = set(trials["cell_id"])
    return {
        "grid": grid,
        "trials": trials,
        "per_class": t["per_class"][t["per_class"]["cell_id"].isin(done_ids)],
        "confusion": t["confusion"][t["confusion"]["cell_id"].isin(done_ids)],
        "dataset": t["dataset"],
    }


def with_selection(
    tables: dict[str, pd.DataFrame],
    strategy: str = "coreset",
    gain: float = 0.04,
    category_set: str = "19cat",
    seed: int = 0,
    noise: float = 0.004,
) -> dict[str, pd.DataFrame]:
    """The tables plus a second selection strategy on one category set: every random cell of the set
    again, as ``<cell_id>-<strategy>`` with ``selection`` = strategy and OA raised by ``gain`` (plus
    ``noise``); the existing cells get ``selection`` = random."""
    rng = np.random.default_rng(seed)
    out = {k: v.copy() for k, v in tables.items()}
    for name in ("grid", "trials", "per_class", "confusion"):
        df = out[name].assign(selection="random")
        mine = df[df["category_set"] == category_set].copy()
        mine["cell_id"] = mine["cell_id"] + f"-{strategy}"
        mine["selection"] = strategy
        if name == "trials":
            mine["overall_accuracy"] = (mine["overall_accuracy"] + gain + rng.normal(0, noise, len(mine))).clip(0, 1)
            mine["finished_at"] = mine["finished_at"] + 1e5
        out[name] = pd.concat([df, mine], ignore_index=True)
    return out


def with_second_arch(
    tables: dict[str, pd.DataFrame],
    first: str = "resnet50",
    second: str = "resnet18",
    shift: float = -0.05,
    seed: int = 0,
) -> dict[str, pd.DataFrame]:
    """The tables with ``arch`` = ``first`` on every cell, plus every cell again on a second backbone
    (``<cell_id>-<second>``, OA moved by ``shift`` plus noise), plus one supervised-ceiling cell of the
    first backbone per category set (a trials row with ``protocol`` = ceiling and its per-class and
    confusion rows)."""
    rng = np.random.default_rng(seed)
    out = {k: v.copy() for k, v in tables.items()}
    for name in ("grid", "trials", "per_class", "confusion"):
        df = out[name].assign(arch=first)
        mine = df.copy()
        mine["cell_id"] = mine["cell_id"] + f"-{second}"
        mine["arch"] = second
        if name == "trials":
            mine["overall_accuracy"] = (mine["overall_accuracy"] + shift + rng.normal(0, 0.01, len(mine))).clip(0, 1)
        ceiling = []
        for cset, g in df.groupby("category_set"):
            top = g[g["train_size"] == g["train_size"].max()]
            top = top[(top["model"] == "baseline") & (top["fold"] == 0)].copy()
            top["cell_id"] = f"baseline-{cset}-ceiling"
            top["train_size"] = 50000
            if name == "trials":
                top["protocol"] = "ceiling"
                top["overall_accuracy"] = 0.99
            if name == "confusion":
                top["count"] = top["count"] * 50
            ceiling.append(top)
        out[name] = pd.concat([df, mine] + ceiling, ignore_index=True)
    return out
