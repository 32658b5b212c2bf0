"""Bad input gets a clear error naming the files, before anything is trained."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from raystudy.catalog import Catalog
from raystudy.config import load_config
from raystudy.data.loading import DataError, decode_image, load_images, read_manifest, scan_folder
from raystudy.data.prepare import prepare_data


def write_png(path, value=128, mode="L", size=(20, 20)):
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "I;16":
        Image.fromarray(np.full(size, value * 256, dtype=np.uint16)).save(path)
    else:
        Image.new(mode, size, value if mode == "L" else (value,) * len(mode)).save(path)


def test_missing_folder():
    with pytest.raises(DataError, match="does not exist.*--data"):
        scan_folder("/nonexistent/data", Catalog())


def test_unknown_categories_and_empty_folders_listed_at_once(tmp_path):
    write_png(tmp_path / "C1" / "column" / "a.png")
    write_png(tmp_path / "C1" / "dendrite" / "a.png")
    write_png(tmp_path / "C1" / "Snowflake" / "a.png")
    (tmp_path / "C1" / "plate").mkdir()
    (tmp_path / "C1" / "column" / "notes.txt").write_text("x")
    with pytest.raises(DataError) as err:
        scan_folder(tmp_path, Catalog())
    msg = str(err.value)
    assert "2 category folder(s) not in the catalog" in msg and "dendrite" in msg and "Snowflake" in msg
    assert "catalog.aliases" in msg
    assert "plate" in msg and "without images" in msg
    assert "notes.txt" in msg


def test_aliases_map_folder_names(tmp_path):
    write_png(tmp_path / "C1" / "Column_Plate" / "a.png")
    df = scan_folder(tmp_path, Catalog())
    assert df["category"].tolist() == ["cpc"]


def test_unreadable_images_all_reported(tmp_path):
    write_png(tmp_path / "C1" / "column" / "good.png")
    (tmp_path / "C1" / "column" / "bad1.png").write_bytes(b"not a png")
    (tmp_path / "C1" / "column" / "empty.png").write_bytes(b"")
    df = scan_folder(tmp_path, Catalog())
    with pytest.raises(DataError, match="2 unreadable image") as err:
        load_images(df, 16, tmp_path / "cache")
    assert "bad1.png (not a readable PNG, JPEG or TIFF image)" in str(err.value)
    assert "empty.png (empty file, 0 bytes)" in str(err.value)
    assert not list((tmp_path / "cache").glob("*.npy"))  # nothing half-written


def test_modes_are_converted(tmp_path):
    for mode in ("L", "RGB", "RGBA", "I;16"):
        write_png(tmp_path / f"{mode.replace(';', '')}.png", value=100, mode=mode)
        arr = decode_image(str(tmp_path / f"{mode.replace(';', '')}.png"), 8)
        assert arr.shape == (8, 8) and arr.dtype == np.uint8


def test_manifest_missing_files_and_labels(tmp_path):
    write_png(tmp_path / "img" / "a.png")
    pd.DataFrame(
        {"path": ["img/a.png", "img/missing.png"], "label": ["column", "dendrite"], "campaign": ["X", "X"]}
    ).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(DataError) as err:
        read_manifest(tmp_path / "m.csv", Catalog())
    assert "missing.png" in str(err.value) and "dendrite" in str(err.value)


def test_decoded_once_and_cached(tmp_path):
    for i in range(3):
        write_png(tmp_path / "C1" / "column" / f"{i}.png", value=40 * i)
    df = scan_folder(tmp_path, Catalog())
    first = load_images(df, 8, tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
    second = load_images(df, 8, tmp_path / "cache")
    assert np.array_equal(first.images, second.images)


def test_campaign_without_images_is_named(tmp_path):
    write_png(tmp_path / "NASCENT19" / "column" / "a.png")
    cfg = load_config(preset="smoke", overrides=[f"data.root={tmp_path}"])
    with pytest.raises(DataError, match="campaign\\(s\\) without images.*NASCENT20"):
        prepare_data(cfg, tmp_path / "cache")


def test_category_set_naming_absent_category(tmp_path):
    for camp in ("NASCENT19", "NASCENT20", "CLOUDLAB"):
        write_png(tmp_path / camp / "column" / "a.png")
    cfg = load_config(preset="smoke", overrides=[f"data.root={tmp_path}"])
    with pytest.raises(DataError, match="category set '19cat' names"):
        prepare_data(cfg, tmp_path / "cache")


def test_palette_image_is_converted(tmp_path):
    img = Image.new("P", (12, 12))
    img.putpalette([i % 256 for i in range(768)])
    img.save(tmp_path / "p.png")
    arr = decode_image(str(tmp_path / "p.png"), 8)
    assert arr.shape == (8, 8) and arr.dtype == np.uint8


def test_many_bad_files_are_listed_once_with_a_count(tmp_path):
    d = tmp_path / "C1" / "column"
    d.mkdir(parents=True)
    for i in range(25):
        (d / f"bad{i:02d}.png").write_bytes(b"")
    df = scan_folder(tmp_path, Catalog())
    with pytest.raises(DataError) as err:
        load_images(df, 8, tmp_path / "cache")
    msg = str(err.value)
    assert msg.startswith("25 unreadable image(s):")
    import re

    assert len(re.findall(r"column/bad\d\d\.png \(empty file, 0 bytes\)", msg)) == 20
    assert "... and 5 more" in msg


def test_more_folds_than_rarest_class_says_so():
    from raystudy.data.splits import make_split

    labels = np.array([0] * 40 + [1] * 3)
    split = make_split(labels, 43, 0, 5, "paper", 0, "s")
    assert split.notes and "rarest class has 3 image(s)" in split.notes[0]
