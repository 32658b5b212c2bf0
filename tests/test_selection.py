"""Selection strategies (``grid.selection``): the strategies by hand, the config rules, the grid
axis, a selection study end to end and ``raystudy advise``."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from raystudy.config import ConfigError, load_config
from raystudy.data.splits import derive_seed, make_split
from raystudy.grid import Cell, plan_grid, selection_encoder
from raystudy.selection import (
    SelectedLabels,
    balanced_counts,
    kmeans_labels,
    l2_normalise,
    probcover_delta,
    select,
    select_balanced,
    select_coreset,
    select_probcover,
    select_random,
    select_typiclust,
    select_uncertainty,
)


# -- the strategies by hand ---------------------------------------------------------------------
def test_k_center_adds_the_farthest_point_each_step():
    # start at (0, 0); farthest is (10, 0); then (0, 6) is 6 from (0, 0) and beats (5, 0) (5 from
    # both) and (1, 1); then (5, 0) at 5; then (1, 1) (sqrt 2 from the origin) last
    pts = np.array([[0.0, 0.0], [1.0, 1.0], [10.0, 0.0], [5.0, 0.0], [0.0, 6.0]])
    assert select_coreset(pts, 5, seed=0, start=0, normalise=False).tolist() == [0, 2, 4, 3, 1]
    # each pick is the argmax of the distance to the points picked before it
    order = select_coreset(pts, 5, seed=0, start=3, normalise=False)
    for k in range(1, 5):
        d = np.linalg.norm(pts[:, None] - pts[order[:k]][None], axis=2).min(axis=1)
        assert d[order[k]] == d.max()


def test_k_center_starts_from_already_labeled_images():
    pts = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.7, 0.7]])
    # already labeled: (1, 0); on the unit circle (-1, 0) is farthest from it, then (0, 1)
    assert select_coreset(pts, 2, seed=0, already=np.array([[1.0, 0.0]])).tolist() == [2, 1]


def test_balanced_counts_by_hand():
    rng = np.random.default_rng(0)
    # 4 categories holding 2, 3, 10, 10 images; 17 wanted: shares 4 each, the first two run out
    # (2 + 3), the 12 left split 6 / 6 between the two large ones
    assert balanced_counts(np.array([2, 3, 10, 10]), 17, rng).tolist() == [2, 3, 6, 6]
    # 10 of [5, 5, 5]: 3 each, the one left goes to one category
    take = balanced_counts(np.array([5, 5, 5]), 10, rng)
    assert sorted(take.tolist()) == [3, 3, 4]
    labels = np.array([0] * 2 + [1] * 3 + [2] * 10 + [3] * 10)
    pick = select_balanced(labels, 17, seed=1)
    assert len(set(pick.tolist())) == 17 and np.bincount(labels[pick]).tolist() == [2, 3, 6, 6]
    assert select_balanced(labels, 17, seed=1).tolist() == pick.tolist()  # deterministic by seed


def test_uncertainty_never_reads_an_unselected_label():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, size=120)
    features = rng.normal(size=(120, 8)) + labels[:, None] * 0.8
    oracle = SelectedLabels(labels)
    picked = select_uncertainty(features, 30, oracle, seed=5, rounds=3, seed_fraction=0.2)
    assert len(set(picked.tolist())) == 30
    assert oracle.revealed <= set(picked.tolist())  # only labels of images already selected
    scrambled = rng.permutation(labels)
    scrambled[picked] = labels[picked]  # the unselected labels are garbage now
    again = select_uncertainty(features, 30, SelectedLabels(scrambled), seed=5, rounds=3, seed_fraction=0.2)
    assert again.tolist() == picked.tolist()


def test_random_is_the_previous_stratified_draw():
    labels = np.arange(300) % 7
    labels[:40] = 0  # imbalanced
    for fold in range(3):
        split = make_split(labels, 50, fold, 3, "holdout", 11, "7cat")
        pool = np.setdiff1d(np.arange(len(labels)), split.validation)
        pick = select_random(labels[pool], 50, derive_seed(11, "7cat", 50, fold, "train"))
        assert np.array_equal(np.sort(pool[pick]), split.train)


def _blobs(centres: list[list[float]], per: int, spread: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``per`` points around each centre (on the unit circle once normalised), and their blob."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([np.asarray(c) + spread * rng.normal(size=(per, len(c))) for c in centres])
    return x, np.repeat(np.arange(len(centres)), per)


def test_typiclust_picks_the_densest_point_of_each_cluster():
    x, blob = _blobs([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], per=30, spread=0.05)
    picked = select_typiclust(x, 3, seed=4)
    assert sorted(blob[picked].tolist()) == [0, 1, 2]  # one per cluster
    z = l2_normalise(x)
    for b in range(3):  # the densest by brute force: the inverse mean distance to its 15 nearest others
        members = np.flatnonzero(blob == b)
        d = np.linalg.norm(z[members, None] - z[None, members], axis=2)
        mean_knn = np.sort(d, axis=1)[:, 1:16].mean(axis=1)  # K = min(20, 30 // 2)
        assert members[np.argmin(mean_knn)] in picked.tolist()


def test_typiclust_takes_the_largest_uncovered_clusters_first():
    x, blob = _blobs([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], per=10, spread=0.02)
    x = np.concatenate([x, x[20:] + 0.001])  # blob 2 twice as large
    blob = np.concatenate([blob, np.full(10, 2)])
    # k = 2 clusters for 2 picks would merge; with 3 picks every cluster gets one, blob 2's first
    picked = select_typiclust(x, 3, seed=0)
    assert blob[picked[0]] == 2 and sorted(blob[picked].tolist()) == [0, 1, 2]


def test_probcover_covers_every_point_within_delta_when_the_budget_allows():
    x, blob = _blobs([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.6, 0.6, 0.0]], per=25, spread=0.03)
    z = l2_normalise(x)
    for delta in (0.15, 0.3):
        picked = select_probcover(x, len(x), seed=1, n_classes=4, delta=delta)
        assert len(set(picked.tolist())) == len(x)
        d = np.linalg.norm(z[:, None] - z[None, :], axis=2)
        within = d[picked] <= delta  # (picks, P): which points each pick covers
        first_full = int(np.argmax(np.logical_or.accumulate(within, axis=0).all(axis=1)))
        assert within.any(axis=0).all() and first_full + 1 < len(x) // 2  # all covered, by far fewer than P picks
    # four tight blobs and delta 0.3: one pick per blob covers everything
    assert sorted(blob[select_probcover(x, 4, seed=1, n_classes=4, delta=0.3)].tolist()) == [0, 1, 2, 3]


def test_probcover_delta_keeps_95_percent_of_the_balls_pure():
    x, _ = _blobs([[1.0, 0.0, 0.2], [0.0, 1.0, 0.2], [0.5, 0.5, 0.9]], per=40, spread=0.15, seed=2)
    z = l2_normalise(x).astype(np.float32)
    delta = probcover_delta(z, 3, np.random.default_rng(7))
    cluster = kmeans_labels(z, 3, np.random.default_rng(7))  # the same k-means draw
    d = np.linalg.norm(z[:, None].astype(np.float64) - z[None, :], axis=2)
    pure = [(cluster[d[i] <= delta] == cluster[i]).all() for i in range(len(z))]
    assert np.mean(pure) >= 0.95
    wider = [(cluster[d[i] <= delta * 1.5] == cluster[i]).all() for i in range(len(z))]
    assert np.mean(wider) < 0.95  # the largest such delta, not any small one


def test_typiclust_and_probcover_start_from_already_labeled_images():
    x, blob = _blobs([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], per=20, spread=0.03)
    labeled = x[blob == 0][:3] + 0.001  # blob 0 is labeled already (raystudy advise)
    assert sorted(blob[select_typiclust(x, 2, seed=0, already=labeled)].tolist()) == [1, 2]
    picked = select_probcover(x, 2, seed=0, n_classes=3, delta=0.2, already=labeled)
    assert sorted(blob[picked].tolist()) == [1, 2]


@pytest.mark.parametrize("strategy", ["coreset", "typiclust", "probcover", "uncertainty"])
def test_ties_are_broken_by_the_seed_not_by_pool_order(strategy):
    # a pool sorted by category whose embeddings do not tell images apart: 4 identical points
    # repeated; the first of equal scores would always be a category-0 image
    labels = np.repeat(np.arange(4), 25)
    features = np.tile(np.eye(4), (25, 1))
    n = 4 if strategy == "typiclust" else 8
    spreads = [
        len(set(labels[select(strategy, n, seed, labels=labels, features=lambda: features)].tolist()))
        for seed in range(5)
    ]
    assert min(spreads) > 1  # pool order: category-0 images after the random first picks
    again = select(strategy, n, 3, labels=labels, features=lambda: features)
    assert again.tolist() == select(strategy, n, 3, labels=labels, features=lambda: features).tolist()


def test_uncertainty_with_a_one_class_seed_set_does_not_follow_pool_order():
    # one seed image: its class alone, every margin is 1; the old stable argsort took positions 0, 1, 2, ...
    labels = np.repeat(np.arange(5), 40)
    features = np.random.default_rng(0).normal(size=(200, 6))
    picked = select_uncertainty(features, 12, SelectedLabels(labels), seed=2, rounds=1, seed_fraction=0.01)
    rest = picked[1:]
    assert sorted(rest.tolist()) != [i for i in range(12) if i != picked[0]][:11]
    assert len(set(labels[rest].tolist())) > 1


# -- the config and the grid axis ---------------------------------------------------------------
def test_config_refuses_unknown_strategies_and_non_random_under_the_paper_protocol():
    with pytest.raises(ConfigError, match=r"grid.selection\[1\]: unknown selection strategy 'corset'"):
        load_config(preset="smoke", overrides=["grid.selection=[random, corset]", "grid.protocol=holdout"])
    with pytest.raises(ConfigError, match=r"grid.selection: \['coreset'\] need grid.protocol: holdout"):
        load_config(preset="smoke", overrides=["grid.selection={19cat: [random, coreset]}"])
    with pytest.raises(ConfigError, match=r"grid.selection.5cat: category set '5cat' is not in grid.sizes"):
        load_config(preset="smoke", overrides=["grid.selection={5cat: [random]}"])
    with pytest.raises(ConfigError, match="selection.encoder: 'simclr' is not pretrained by this study"):
        load_config(
            preset="smoke", overrides=["grid.selection=[coreset]", "grid.protocol=holdout", "selection.encoder=simclr"]
        )


def test_selection_axis_keeps_random_ids_and_shares_the_validation_fold():
    cfg = load_config(preset="smoke", overrides=["grid.protocol=holdout", "grid.selection={19cat: [random, coreset]}"])
    assert cfg.selection.encoder == "moco" and cfg.grid.strategies("4cat") == ["random"]
    planned = plan_grid(cfg, {"19cat": np.arange(480) % 19, "4cat": np.arange(200) % 4})
    ids = {p.cell.cell_id for p in planned}
    assert "moco-19cat-n64-f0" in ids and "baseline-19cat-n64-f1-coreset" in ids
    assert not any(i.endswith("coreset") for i in ids if "-4cat-" in i)
    assert len(planned) == 2 * 2 * 3 * 2 + 2 * 3  # 19cat: 2 sizes x 2 folds x 3 models x 2 strategies
    c = Cell("baseline", "19cat", 19, 64, 0, "resnet18", "resnet18", selection="coreset")
    assert c.pair_key == Cell("moco", "19cat", 19, 64, 0).pair_key and c.keys()["selection"] == "coreset"
    assert selection_encoder(cfg, c) == "moco"  # the baseline's coreset cell waits for MoCo's encoder
    assert selection_encoder(cfg, Cell("baseline", "19cat", 19, 64, 0)) is None


def test_selections_are_planned_once_per_key_before_their_cells_and_read_back_identically(tmp_path):
    from raystudy.data.prepare import LabeledPool
    from raystudy.sweep import plan_jobs
    from raystudy.training.cell_split import store_selection, stored_split

    overrides = ["grid.protocol=holdout", "grid.selection={19cat: [random, typiclust]}"]
    cfg = load_config(preset="smoke", overrides=overrides)
    labels = {"19cat": np.arange(480) % 19, "4cat": np.arange(200) % 4}
    planned = plan_grid(cfg, labels)
    jobs = plan_jobs(cfg, tmp_path, planned)
    kinds = [j.kind for j in jobs]
    selects = [j for j in jobs if j.kind == "select"]
    keys = {p.cell.selection_key for p in planned if p.cell.selection == "typiclust" and p.split is not None}
    assert sorted(j.name for j in selects) == sorted(keys)  # one per (set, n, fold, strategy, arch)
    assert max(i for i, k in enumerate(kinds) if k == "select") < kinds.index("cell")
    assert all(j.selects_with == "moco" for j in selects)
    cells = [j for j in jobs if j.kind == "cell"]
    assert {j.selected_by for j in cells if j.cell.selection == "typiclust"} == keys
    assert all(j.selected_by is None for j in cells if j.cell.selection == "random")

    # store one key's selection: it is not planned again (a resumed study reads the same rows)
    moco = next(p for p in planned if p.cell.selection == "typiclust" and p.cell.model == "moco" and p.split)
    key = moco.cell.selection_key
    baseline = next(p for p in planned if p.cell.selection_key == key and p.cell.model == "baseline")
    pool = LabeledPool(np.arange(480) + 1000, labels["19cat"], [f"c{i}" for i in range(19)])
    image_ids = np.array([f"img{i:05d}" for i in range(2000)])
    train_pool = np.setdiff1d(np.arange(480), moco.split.validation)
    chosen = np.random.default_rng(0).permutation(train_pool)[: moco.cell.train_size]
    store_selection(cfg, tmp_path, moco.cell, pool, chosen, image_ids)
    again = plan_jobs(cfg, tmp_path, planned)
    assert moco.cell.selection_key not in {j.name for j in again if j.kind == "select"}
    assert len([j for j in again if j.kind == "select"]) == len(selects) - 1
    stored = pd.read_parquet(tmp_path / "results" / "selections")
    assert stored["rank"].tolist() == list(range(1, len(chosen) + 1))
    assert stored["image_id"].tolist() == image_ids[pool.indices[chosen]].tolist()  # the order picked
    a = stored_split(tmp_path, moco.cell, moco.split, pool, image_ids)
    b = stored_split(tmp_path, baseline.cell, baseline.split, pool, image_ids)
    assert np.array_equal(a.train, np.sort(chosen)) and np.array_equal(a.train, b.train)
    assert np.array_equal(a.validation, moco.split.validation)


# -- end to end ---------------------------------------------------------------------------------
SELECTION_STUDY = [
    "grid.protocol=holdout",
    "grid.models=[moco, baseline]",
    "grid.sizes={19cat: [64]}",
    "grid.selection=[random, typiclust, probcover]",
]


@pytest.fixture(scope="module")
def selection_run(ray_instance, tmp_path_factory):
    """The smoke preset with three strategies at its one real 19cat size, under the holdout protocol
    (the smoke preset itself keeps the paper protocol that many tests count on)."""
    from raystudy.study import run_study

    run_dir = tmp_path_factory.mktemp("selection") / "run"
    run_study(load_config(preset="smoke", overrides=SELECTION_STUDY), run_dir)
    return run_dir


@pytest.mark.e2e
def test_selection_study_pairs_strategies_on_one_validation_fold(selection_run):
    trials = pd.read_parquet(selection_run / "results" / "trials")
    assert sorted(trials["cell_id"]) == sorted(
        f"{m}-19cat-n64-f{f}{s}" for m in ("moco", "baseline") for f in (0, 1) for s in ("", "-typiclust", "-probcover")
    )
    assert (trials["status"] == "done").all() and (trials["n_train"] == 64).all()
    assert set(trials["selection"]) == {"random", "typiclust", "probcover"}
    # one validation fold per fold for every strategy and model
    assert (trials.groupby("fold")["n_validation"].nunique() == 1).all()
    per_class = pd.read_parquet(selection_run / "results" / "per_class")
    counts = per_class[per_class["split"] == "validation"].groupby(["cell_id", "selection"])["train_count"].sum()
    assert (counts == 64).all()
    # both model types of a (fold, strategy) trained on the same images: identical class counts
    pc = per_class[per_class["split"] == "validation"]
    shares = pc.pivot_table(index=["fold", "selection", "category"], columns="model", values="train_count")
    assert (shares["moco"] == shares["baseline"]).all()
    random_counts = shares.xs("random", level="selection")["moco"]
    typiclust_counts = shares.xs("typiclust", level="selection")["moco"]
    assert not random_counts.equals(typiclust_counts)  # the strategy chose other images
    # one stored selection per (fold, strategy), 64 ids in order, which every model type trained on
    stored = pd.read_parquet(selection_run / "results" / "selections")
    assert sorted(stored["selection_key"].unique()) == sorted(
        f"19cat-n64-f{f}-{s}-resnet18" for f in (0, 1) for s in ("typiclust", "probcover")
    )
    assert (stored.groupby("selection_key")["image_id"].nunique() == 64).all()
    assert (stored.groupby("selection_key")["rank"].max() == 64).all() and stored["encoder"].eq("moco").all()
    picked = stored.groupby(["fold", "selection", "category"]).size()
    for model in ("moco", "baseline"):
        trained = shares[model].drop("random", level="selection")
        assert trained[trained > 0].astype(int).sort_index().equals(picked.sort_index().rename(model))
    grid = pd.read_parquet(selection_run / "results" / "grid")
    assert set(grid["selection"]) == {"random", "typiclust", "probcover"}
    html = (selection_run / "report.html").read_text()
    assert "Selection strategies" in html
    # the pool's map under the selection encoder, every pick of fold 0 on it, drawn in the report
    smap = pd.read_parquet(selection_run / "results" / "selection_map")
    assert set(smap["encoder"]) == {"moco"} and smap["image_id"].is_unique and smap[["x", "y"]].notna().all().all()
    assert set(stored["image_id"]) <= set(smap["image_id"])  # the pool is below embeddings.max_points
    assert "Images each strategy picked at n = 64 (fold 0)" in html


def _png_pool(folder, n: int, seed: int = 0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(n):
        sub = folder / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, size=(48, 48), dtype=np.uint8)).save(sub / f"{i:03d}.png")
    return folder


@pytest.mark.e2e
def test_advise_writes_budget_distinct_pool_paths(smoke_run, tmp_path, capsys):
    from raystudy.cli import main

    pool = _png_pool(tmp_path / "pool", 12)
    for strategy in ("coreset", "uncertainty", "typiclust", "probcover", None):
        out = tmp_path / f"{strategy}.csv"
        args = ["advise", str(smoke_run), "--pool", str(pool), "--budget", "5", "--out", str(out)]
        assert main(args + (["--strategy", strategy] if strategy else [])) == 0
        rows = pd.read_csv(out)
        assert rows["rank"].tolist() == [1, 2, 3, 4, 5]
        assert rows["path"].is_unique and set(rows["path"]) <= {str(p) for p in pool.rglob("*.png")}
        text = capsys.readouterr().out
        # smoke runs one 19cat size: the curve cannot say
        assert "64 labeled + 5: fit unreliable" in text
    assert "(random: the study ran one selection strategy)" in text
    assert main(["advise", str(smoke_run), "--pool", str(pool), "--budget", "13"]) == 2
    assert "choose 1 to 12 (the pool" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["advise", str(smoke_run), "--pool", str(tmp_path / "empty"), "--budget", "1"]) == 2
    assert "no image files" in capsys.readouterr().err
    # a strategy registered for the grid picks from a labeled pool: advise says so instead of ranking with another
    from raystudy import registry

    registry.register_strategy(registry.StrategySpec("first", lambda n, seed, **_: np.arange(n), False, "none"))
    try:
        args = ["advise", str(smoke_run), "--pool", str(pool), "--budget", "3", "--strategy", "first"]
        assert main([*args, "--out", str(tmp_path / "first.csv")]) == 2
    finally:
        registry._STRATEGIES.pop("first")
    assert "--strategy first: use one of ['random', 'coreset'" in (err := capsys.readouterr().err)
    assert "first is a strategy registered for the grid, which picks from a labeled pool" in err


@pytest.mark.e2e
def test_advise_defaults_to_the_studys_best_strategy(selection_run, tmp_path, capsys):
    from raystudy.advise import advise, best_strategy, study_trials

    trials = study_trials(selection_run, "19cat", "moco", "resnet18")
    best, why = best_strategy(trials)
    assert best in ("random", "typiclust", "probcover") and "mean OA over n = [64]" in why
    assert ("none beat random" in why) == (best == "random")
    assert best == "random" or ("vs random, fold-paired: n = 64:" in why and "95 % CI" in why)
    advice = advise(selection_run, _png_pool(tmp_path / "pool", 6), 3)
    assert advice.strategy == best and len(set(advice.paths)) == 3
    missing = tmp_path / "copy"
    (missing / "encoders").mkdir(parents=True)
    (missing / "config.yaml").write_text((selection_run / "config.yaml").read_text())
    with pytest.raises(Exception, match=r"no selection encoder at .*encoders/moco.pt"):
        advise(missing, tmp_path / "pool", 2, strategy="coreset")


@pytest.mark.e2e
def test_advise_needs_neither_the_studys_data_folder_nor_its_init_weights(selection_run, tmp_path, capsys):
    from raystudy.cli import main

    # the run folder as a laptop gets it: no image cache, no Ray folder; its data folder and
    # checkpoints named in config.yaml are not there (renamed away)
    laptop = tmp_path / "laptop" / "run"
    shutil.copytree(selection_run, laptop, ignore=shutil.ignore_patterns("cache", "ray"))
    raw = yaml.safe_load((laptop / "config.yaml").read_text())
    raw["data"]["root"] = str(tmp_path / "renamed-away")
    raw["model"]["baseline_init"] = str(tmp_path / "renamed-away" / "init.pth")
    (laptop / "config.yaml").write_text(yaml.safe_dump(raw))
    assert (laptop / "advise" / "19cat-moco.npz").is_file()
    pool = _png_pool(tmp_path / "pool", 10)
    for strategy in ("typiclust", "probcover", "coreset", None):
        out = tmp_path / f"{strategy}.csv"
        args = ["advise", str(laptop), "--pool", str(pool), "--budget", "4", "--out", str(out)]
        assert main(args + (["--strategy", strategy] if strategy else [])) == 0, capsys.readouterr().err
        rows = pd.read_csv(out)
        assert rows["rank"].tolist() == [1, 2, 3, 4] and rows["path"].is_unique
    assert "19cat, moco (resnet18), 64 labeled + 4:" in capsys.readouterr().out
    assert main(["advise", str(laptop), "--pool", str(pool), "--budget", "2", "--arch", "resnet50"]) == 2
    assert "--arch resnet50: the study ran ['resnet18']" in capsys.readouterr().err


def test_selection_figure_names_the_encoder_that_picked_the_images():
    from analysis.figures.selection import selection_curves
    from analysis.results import Results

    trials = pd.DataFrame(
        [
            {
                "cell_id": f"moco-19cat-n{n}-f{f}-{s}",
                "model": "moco",
                "category_set": "19cat",
                "n_categories": 19,
                "train_size": n,
                "fold": f,
                "arch": "resnet18",
                "selection": s,
                "status": "done",
                "protocol": "holdout",
                "overall_accuracy": 0.5 + 0.01 * f,
            }
            for n in (24, 48)
            for f in (0, 1)
            for s in ("random", "typiclust")
        ]
    )
    selections = pd.DataFrame(
        [{"selection_key": "19cat-n24-f0-typiclust-resnet18", "category_set": "19cat", "encoder": "moco", "rank": 1}]
    )
    fig = selection_curves(Results.from_frames(trials=trials, selections=selections))
    assert "picked on the moco encoder's embeddings" in fig.layout.title.text
    assert "picked on" not in selection_curves(Results.from_frames(trials=trials)).layout.title.text


def test_picks_figure_draws_each_strategys_images_on_the_selection_map():
    from analysis.figures import is_no_data
    from analysis.figures.selection import selection_picks
    from analysis.results import Results

    rng = np.random.default_rng(0)
    ids = [f"img{i}" for i in range(40)]
    smap = pd.DataFrame(
        {
            "category_set": "19cat",
            "encoder": "moco",
            "arch": "resnet18",
            "image_id": ids,
            "category": ["a", "b"] * 20,
            "x": rng.normal(size=40),
            "y": rng.normal(size=40),
        }
    )
    picks = [
        {
            "selection_key": f"19cat-n{n}-f{f}-{s}-resnet18",
            "category_set": "19cat",
            "train_size": n,
            "fold": f,
            "selection": s,
            "arch": "resnet18",
            "encoder": "moco",
            "rank": r + 1,
            "image_id": image,
            "category": ["a", "b"][int(image[3:]) % 2],
        }
        for n in (4, 8)
        for f in (0, 1)
        for s, first in (("typiclust", 0), ("probcover", 20))
        for r, image in enumerate(ids[first + f : first + f + n])
    ]
    picks.append({**picks[0], "rank": 5, "image_id": "not-on-the-map"})  # a pick outside the map's subsample
    fig = selection_picks(Results.from_frames(selections=pd.DataFrame(picks), selection_map=smap))
    title = fig.layout.title.text
    assert "at n = 4 (fold 0)" in title and "the moco encoder's embeddings (resnet18)" in title
    panels = [a.text for a in fig.layout.annotations]
    assert panels == ["typiclust: 4 of 5 picks on the map", "probcover: 4 of 4 picks"]
    drawn = [t for t in fig.data if t.name != "labeled pool"]
    assert sorted(x for t in drawn for x in t.customdata[:, 0]) == sorted(ids[0:4] + ids[20:24])
    assert sum(t.name == "labeled pool" for t in fig.data) == 2 and len(fig.data[0].x) == 40
    later = selection_picks(
        Results.from_frames(selections=pd.DataFrame(picks), selection_map=smap), train_size=8, fold=1
    )
    assert sorted(x for t in later.data if t.name != "labeled pool" for x in t.customdata[:, 0]) == sorted(
        ids[1:9] + ids[21:29]
    )
    empty = selection_picks(Results.from_frames(selections=pd.DataFrame(picks)))
    assert is_no_data(empty) and "no selection map" in empty.layout.annotations[0].text
