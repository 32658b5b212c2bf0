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
    assert "bad1.png" in str(err.value) and "empty.png" in str(err.value)
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
