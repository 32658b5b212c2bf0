import pandas as pd
import pytest

from raystudy.results import finished_cells, has_result, read_table, write_table


def test_write_is_atomic_and_idempotent(tmp_path):
    row = {"cell_id": "moco-4cat-n8-f0", "model": "moco", "status": "done", "overall_accuracy": 0.5}
    write_table(tmp_path, "trials", "moco-4cat-n8-f0", pd.DataFrame([row]))
    write_table(tmp_path, "trials", "moco-4cat-n8-f0", pd.DataFrame([{**row, "overall_accuracy": 0.7}]))
    df = pd.read_parquet(tmp_path / "results" / "trials")
    assert len(df) == 1 and df["overall_accuracy"].iloc[0] == 0.7
    assert not list((tmp_path / "results" / "trials").glob(".*"))
    assert has_result(tmp_path, "moco-4cat-n8-f0")
    assert finished_cells(tmp_path) == {"moco-4cat-n8-f0"}


def test_failed_cells_are_not_finished(tmp_path):
    write_table(tmp_path, "trials", "c1", pd.DataFrame([{"cell_id": "c1", "status": "failed"}]))
    assert not has_result(tmp_path, "c1")


def test_half_written_temp_file_is_ignored(tmp_path):
    write_table(tmp_path, "trials", "c1", pd.DataFrame([{"cell_id": "c1", "status": "done"}]))
    (tmp_path / "results" / "trials" / ".c2.parquet.123.tmp").write_bytes(b"PAR1garbage")
    assert len(pd.read_parquet(tmp_path / "results" / "trials")) == 1
    assert len(read_table(tmp_path, "trials")) == 1


def test_empty_table_has_columns_and_unknown_columns_refused(tmp_path):
    df = read_table(tmp_path, "per_class")
    assert df.empty and "precision" in df.columns
    with pytest.raises(ValueError, match="no columns"):
        write_table(tmp_path, "trials", "c1", pd.DataFrame([{"cell_id": "c1", "bogus": 1}]))


def test_full_disk_fails_the_write_cleanly(tmp_path, monkeypatch):
    import errno

    from raystudy import storage

    write_table(tmp_path, "trials", "c1", pd.DataFrame([{"cell_id": "c1", "status": "done"}]))
    real = storage.os.fsync

    def full_disk(fd):  # the temporary file holds part of the bytes, as a full disk leaves it
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage.os, "fsync", full_disk)
    with pytest.raises(storage.DiskFull, match="no space left on the device holding .* MiB free"):
        write_table(tmp_path, "trials", "c2", pd.DataFrame([{"cell_id": "c2", "status": "done"}]))
    folder = tmp_path / "results" / "trials"
    assert sorted(p.name for p in folder.iterdir()) == ["c1.parquet"]  # no partial file left
    assert has_result(tmp_path, "c1") and not has_result(tmp_path, "c2")
    assert len(pd.read_parquet(folder)) == 1  # earlier results still readable
    monkeypatch.setattr(storage.os, "fsync", real)
    write_table(tmp_path, "trials", "c2", pd.DataFrame([{"cell_id": "c2", "status": "done"}]))  # the rerun
    assert finished_cells(tmp_path) == {"c1", "c2"}
