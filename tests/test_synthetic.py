"""Tests of the embedded synthetic ice-crystal data set (raystudy.data.synthetic)."""

from __future__ import annotations

import dataclasses
import functools
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from raystudy.catalog import BASIC_HABITS, CATEGORIES_4, CATEGORIES_19
from raystudy.data import synthetic
from raystudy.data.synthetic import (
    CAMPAIGN_PRESETS,
    MARKER_NAME,
    CampaignStyle,
    class_counts,
    generate_campaign,
    generate_dataset,
    image_rng,
    render_crystal,
)

N19 = CAMPAIGN_PRESETS["NASCENT19"]
ABSENT_IN_NASCENT20 = {"lollipop", "cpc", "lollipop_aggregate", "droplet_aggregate", "cpc_aggregate"}


@functools.cache
def _images(category: str, n: int, campaign: str = "NASCENT19", seed: int = 5, size: int = 64):
    """``n`` images of one class (cached across tests; do not modify them)."""
    style = CAMPAIGN_PRESETS[campaign]
    return tuple(render_crystal(category, image_rng(seed, campaign, category, i), size, style) for i in range(n))


def _border_level(img: np.ndarray) -> float:
    x = img.astype(np.float64)
    return float(np.median(np.concatenate([x[0], x[-1], x[:, 0], x[:, -1]])))


def _dark_pixels(img: np.ndarray) -> int:
    """Pixels at least 30 % darker than the image's background (border median)."""
    return int((img.astype(np.float64) < 0.7 * _border_level(img)).sum())


# --------------------------------------------------------------------------- class mix


@pytest.mark.parametrize("n", [3000, 1000, 101, 19, 5, 0])
def test_class_counts_sum_and_follow_weights(n):
    counts = class_counts(N19.class_weights, n)
    assert sum(counts.values()) == n
    assert set(counts) == set(CATEGORIES_19)
    total = sum(N19.class_weights.values())
    if n >= len(counts):
        assert min(counts.values()) >= 1
    if n >= 1000:
        for c, k in counts.items():
            quota = n * N19.class_weights[c] / total
            assert abs(k - quota) <= 1.0, (c, k, quota)


def test_class_counts_largest_remainder():
    assert class_counts({"a": 1, "b": 1, "c": 1}, 10) == {"a": 4, "b": 3, "c": 3}
    assert class_counts({"a": 0.6, "b": 0.4, "z": 0.0}, 5) == {"a": 3, "b": 2}
    # Minimum one image per category, taken from the largest class.
    assert class_counts({"a": 100, "b": 1, "c": 1}, 3) == {"a": 1, "b": 1, "c": 1}
    with pytest.raises(ValueError):
        class_counts({"a": 0}, 3)


def test_nascent19_mix_mirrors_paper():
    w = N19.class_weights
    total = sum(w.values())
    share = {c: v / total for c, v in w.items()}
    assert [c for c in CATEGORIES_19 if share[c] > 0] == list(CATEGORIES_19)
    assert max(share, key=share.get) == "column"
    assert share["column"] == pytest.approx(0.288, abs=0.01)
    assert share["column"] + share["cpc"] + share["column_aged"] == pytest.approx(0.665, abs=0.01)
    aged = sum(v for c, v in share.items() if c.endswith("_aged"))
    aggregate = sum(v for c, v in share.items() if c.endswith("_aggregate") and "_aged_" not in c)
    aged_aggregate = sum(v for c, v in share.items() if c.endswith("_aged_aggregate"))
    assert aged == pytest.approx(0.221, abs=0.01)
    assert aggregate == pytest.approx(0.0634, abs=0.01)
    assert aged_aggregate == pytest.approx(0.0591, abs=0.01)
    assert min(share.values()) >= 0.005
    # NASCENT19-4CAT has 9182 of 18864 images.
    assert sum(share[c] for c in CATEGORIES_4) == pytest.approx(9182 / 18864, abs=0.01)


def test_nascent20_lacks_exactly_the_five_categories():
    style = CAMPAIGN_PRESETS["NASCENT20"]
    present = set(style.categories)
    assert len(present) == 14
    assert set(CATEGORIES_19) - present == ABSENT_IN_NASCENT20
    total = sum(style.class_weights.values())
    top3 = sum(style.class_weights[c] for c in ("irregular", "small", "irregular_aggregate")) / total
    assert top3 == pytest.approx(0.544, abs=0.01)
    generated = {c for c, _ in generate_campaign("NASCENT20", 40, 32, seed=0)}
    assert generated == present


def test_cloudlab_has_only_the_column_categories():
    style = CAMPAIGN_PRESETS["CLOUDLAB"]
    assert set(style.categories) == set(CATEGORIES_4)
    generated = [c for c, _ in generate_campaign("CLOUDLAB", 30, 32, seed=0)]
    assert len(generated) == 30
    assert set(generated) == set(CATEGORIES_4)


# --------------------------------------------------------------------------- determinism


def test_generation_is_deterministic_and_seed_dependent():
    a = list(generate_campaign("NASCENT19", 40, 48, seed=3))
    b = list(generate_campaign("NASCENT19", 40, 48, seed=3))
    c = list(generate_campaign("NASCENT19", 40, 48, seed=4))
    assert [x for x, _ in a] == [x for x, _ in b] == [x for x, _ in c]
    for (_, ia), (_, ib) in zip(a, b, strict=True):
        assert ia.dtype == np.uint8 and ia.shape == (48, 48)
        assert np.array_equal(ia, ib)
    assert sum(not np.array_equal(ia, ic) for (_, ia), (_, ic) in zip(a, c, strict=True)) == len(a)


def test_images_do_not_depend_on_generation_order_or_n():
    small_run = {}
    for cat, img in generate_campaign("CLOUDLAB", 8, 32, seed=1):
        small_run.setdefault(cat, []).append(img)
    big_run = {}
    for cat, img in generate_campaign("CLOUDLAB", 40, 32, seed=1):
        big_run.setdefault(cat, []).append(img)
    style = CAMPAIGN_PRESETS["CLOUDLAB"]
    for cat, imgs in small_run.items():
        for i, img in enumerate(imgs):
            assert np.array_equal(img, big_run[cat][i])
            # Rendered alone, out of order, from its own seed.
            assert np.array_equal(img, render_crystal(cat, image_rng(1, "CLOUDLAB", cat, i), 32, style))
    # Images of one class differ from each other.
    col = big_run["column"]
    assert not np.array_equal(col[0], col[1])


@pytest.mark.parametrize("size", [32, 64, 96])
def test_every_category_renders_at_several_sizes(size):
    for cat in CATEGORIES_19:
        img = render_crystal(cat, image_rng(0, "x", cat, 0), size, N19)
        assert img.dtype == np.uint8 and img.shape == (size, size)
        assert _dark_pixels(img) > 0, cat


def test_bad_category_and_campaign_are_refused(tmp_path):
    with pytest.raises(ValueError, match="basic habit"):
        render_crystal("snowflake", np.random.default_rng(0), 64, N19)
    with pytest.raises(ValueError, match="NASCENT19"):
        list(generate_campaign("NOPE", 5, 32, seed=0))
    with pytest.raises(ValueError, match="NASCENT19"):
        generate_dataset(tmp_path / "ds", {"NOPE": 5}, size=32)
    assert not (tmp_path / "ds").exists()
    with pytest.raises(ValueError):
        CampaignStyle(class_weights={"snowflake": 1.0})
    with pytest.raises(ValueError):
        CampaignStyle(contrast=1.5)


def test_custom_style_for_a_new_campaign(tmp_path):
    style = CampaignStyle(background=0.5, class_weights={"plate": 2.0, "small": 1.0, "column": 0.0})
    out = [c for c, _ in generate_campaign("MYLAB", 9, 32, seed=0, style=style)]
    assert out == ["plate"] * 6 + ["small"] * 3
    root = generate_dataset(tmp_path / "ds", {"MYLAB": 9}, size=32, styles={"MYLAB": style})
    assert sorted(p.name for p in (root / "MYLAB").iterdir()) == ["plate", "small"]


# --------------------------------------------------------------------------- on disk


def test_dataset_layout_png_mode_and_size(tmp_path):
    root = tmp_path / "synthetic"
    campaigns = {"NASCENT19": 40, "CLOUDLAB": 10}
    assert generate_dataset(root, campaigns, size=32, seed=1) == root
    assert (root / MARKER_NAME).is_file()
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == ["CLOUDLAB", "NASCENT19"]
    for campaign, n in campaigns.items():
        counts = class_counts(CAMPAIGN_PRESETS[campaign].class_weights, n)
        folders = {p.name for p in (root / campaign).iterdir()}
        assert folders == {c for c, k in counts.items() if k > 0}
        for category, k in counts.items():
            files = sorted((root / campaign / category).glob("*.png"))
            assert [f.name for f in files] == [f"{campaign}_{category}_{i:05d}.png" for i in range(k)]
            for f in files[:2]:
                with Image.open(f) as im:
                    assert im.format == "PNG" and im.mode == "L" and im.size == (32, 32)
    # The saved pixels are the generated ones.
    first = next(generate_campaign("CLOUDLAB", 10, 32, seed=1))
    with Image.open(root / "CLOUDLAB" / first[0] / f"CLOUDLAB_{first[0]}_00000.png") as im:
        assert np.array_equal(np.asarray(im), first[1])
    # No temporary folder is left behind.
    assert [p.name for p in tmp_path.iterdir()] == ["synthetic"]


def _all_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_same_seed_same_bytes_different_seed_different(tmp_path):
    a = generate_dataset(tmp_path / "a", {"NASCENT20": 20}, size=32, seed=7)
    b = generate_dataset(tmp_path / "b", {"NASCENT20": 20}, size=32, seed=7)
    c = generate_dataset(tmp_path / "c", {"NASCENT20": 20}, size=32, seed=8)
    ba, bb, bc = _all_bytes(a), _all_bytes(b), _all_bytes(c)
    assert len(ba) == 20
    assert ba == bb
    assert ba.keys() == bc.keys()
    assert all(ba[k] != bc[k] for k in ba)
    assert (a / MARKER_NAME).read_text() == (b / MARKER_NAME).read_text()
    assert (a / MARKER_NAME).read_text() != (c / MARKER_NAME).read_text()


def test_second_call_is_idempotent_and_rewrites_nothing(tmp_path):
    root = tmp_path / "ds"
    generate_dataset(root, {"CLOUDLAB": 12}, size=32, seed=0)
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    assert generate_dataset(root, {"CLOUDLAB": 12}, size=32, seed=0) == root
    after = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    assert before == after
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_refuses_a_foreign_or_different_folder(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("my data")
    with pytest.raises(ValueError, match="pick another folder or delete it"):
        generate_dataset(foreign, {"CLOUDLAB": 4}, size=32)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]

    other = generate_dataset(tmp_path / "other", {"CLOUDLAB": 4}, size=32, seed=0)
    for spec in ({"CLOUDLAB": 4, "seed": 1}, {"CLOUDLAB": 5, "seed": 0}):
        seed = spec.pop("seed")
        with pytest.raises(ValueError, match="different spec"):
            generate_dataset(other, spec, size=32, seed=seed)
    brighter = dataclasses.replace(CAMPAIGN_PRESETS["CLOUDLAB"], background=0.9)
    with pytest.raises(ValueError):
        generate_dataset(other, {"CLOUDLAB": 4}, size=32, seed=0, styles={"CLOUDLAB": brighter})

    empty = tmp_path / "empty"
    empty.mkdir()
    assert generate_dataset(empty, {"CLOUDLAB": 4}, size=32) == empty
    assert (empty / MARKER_NAME).is_file()


def test_a_crash_leaves_no_half_written_dataset(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = synthetic.render_crystal

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 6:
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(synthetic, "render_crystal", flaky)
    with pytest.raises(RuntimeError, match="simulated crash"):
        generate_dataset(tmp_path / "ds", {"CLOUDLAB": 12}, size=32)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(synthetic, "render_crystal", real)
    generate_dataset(tmp_path / "ds", {"CLOUDLAB": 12}, size=32)
    assert len(list((tmp_path / "ds").rglob("*.png"))) == 12


# --------------------------------------------------------------------------- image content


def test_campaign_shift_is_measurable():
    n19 = _images("column", 30, "NASCENT19")
    cl = _images("column", 30, "CLOUDLAB")
    bg19 = np.mean([_border_level(i) for i in n19])
    bgcl = np.mean([_border_level(i) for i in cl])
    assert bgcl - bg19 > 20  # grey levels out of 255

    def noise(img):  # high-pass residual of the border rows
        x = img.astype(np.float64)[:4]
        return float(np.std(np.diff(x, axis=1)))

    assert np.mean([noise(i) for i in cl]) > 1.3 * np.mean([noise(i) for i in n19])


def test_small_has_far_fewer_dark_pixels_than_plate():
    small = np.mean([_dark_pixels(i) for i in _images("small", 30)])
    plate = np.mean([_dark_pixels(i) for i in _images("plate", 30)])
    assert small > 0
    assert small < 0.1 * plate


@pytest.mark.parametrize("habit", [h for h in BASIC_HABITS if f"{h}_aggregate" in CATEGORIES_19])
def test_aggregates_have_more_dark_pixels_than_their_basic_habit(habit):
    basic = np.mean([_dark_pixels(i) for i in _images(habit, 30)])
    aggregate = np.mean([_dark_pixels(i) for i in _images(f"{habit}_aggregate", 30)])
    assert aggregate > 1.08 * basic


def test_aged_outlines_are_rougher_than_basic():
    def roughness(img):  # dark pixels removed by a 5x5 opening, per boundary pixel
        m = ndimage.binary_fill_holes(img.astype(np.float64) < 0.7 * _border_level(img))
        boundary = (m & ~ndimage.binary_erosion(m)).sum()
        bumps = (m & ~ndimage.binary_opening(m, structure=np.ones((5, 5)))).sum()
        return bumps / max(boundary, 1)

    for habit in ("column", "plate", "droplet"):
        basic = np.mean([roughness(i) for i in _images(habit, 30)])
        aged = np.mean([roughness(i) for i in _images(f"{habit}_aged", 30)])
        assert aged > 1.15 * basic, habit


def test_basic_habits_are_learnable_by_a_simple_classifier():
    """Nearest centroid on 16x16 downsampled pixels separates 4 habits well above chance."""
    cats = ["column", "plate", "small", "droplet"]

    def features(imgs):
        x = np.stack(imgs).astype(np.float64) / 255.0
        x = x.reshape(len(imgs), 16, 4, 16, 4).mean(axis=(2, 4)).reshape(len(imgs), -1)
        return x - x.mean(axis=1, keepdims=True)  # remove the background level

    train = {c: features(_images(c, 60, seed=11)) for c in cats}
    centroids = np.stack([train[c].mean(axis=0) for c in cats])
    correct = total = 0
    for k, c in enumerate(cats):
        test = features(_images(c, 40, seed=12))
        pred = np.argmin(((test[:, None, :] - centroids[None]) ** 2).sum(axis=-1), axis=1)
        correct += int((pred == k).sum())
        total += len(test)
    accuracy = correct / total
    assert accuracy > 0.7, accuracy


def test_module_docstring_explains_shapes_and_shift():
    doc = synthetic.__doc__ or ""
    for word in BASIC_HABITS + ("aged", "aggregate", "NASCENT19", "NASCENT20", "CLOUDLAB"):
        assert word in doc
    assert re.search(r"domain shift", doc)
