import pytest

from raystudy.catalog import BASIC_HABITS, CATEGORIES_4, CATEGORIES_19, COMPLEX_SHAPES, Catalog, microphysical_process


def test_table2_counts():
    assert len(CATEGORIES_19) == 19 and len(set(CATEGORIES_19)) == 19
    assert len(BASIC_HABITS) == 7 and len(COMPLEX_SHAPES) == 12
    assert CATEGORIES_4 == ("column", "column_aged", "column_aggregate", "column_aged_aggregate")


def test_fig7_merge():
    assert microphysical_process("plate_aged") == "aged"
    assert microphysical_process("cpc_aggregate") == "aggregate"
    assert microphysical_process("droplet_aged_aggregate") == "aged_aggregate"
    groups = {Catalog().group(c) for c in COMPLEX_SHAPES}
    assert groups == {"aged", "aggregate", "aged_aggregate"}
    assert {Catalog().group(c) for c in BASIC_HABITS} == {"basic"}


def test_folder_names_resolve_case_insensitively():
    cat = Catalog()
    assert cat.resolve("Column_Plate") == "cpc"
    assert cat.resolve("COLUMN-aged") == "column_aged"
    assert cat.resolve("Frozen droplet") == "droplet"
    assert cat.resolve("dendrite") is None


def test_custom_catalog_validated():
    with pytest.raises(ValueError, match="unknown categories"):
        Catalog(categories=("a",), basic=("a",), category_sets={"s": ("a", "b")}, aliases={})
