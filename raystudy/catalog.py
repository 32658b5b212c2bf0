"""The category catalog of the paper (Table 2) and how folder names map onto it.

The catalog is the default labeling scheme. A study config may declare its own
categories, groups and category sets (see :class:`Catalog.from_config`).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

# The 7 basic habits of Table 2, in the paper's order.
BASIC_HABITS: tuple[str, ...] = (
    "column",
    "plate",
    "lollipop",
    "droplet",
    "irregular",
    "small",
    "cpc",
)

# The 12 complex shapes: a basic habit after aging (riming), aggregation or both.
COMPLEX_SHAPES: tuple[str, ...] = (
    "column_aged",
    "column_aggregate",
    "column_aged_aggregate",
    "plate_aged",
    "plate_aggregate",
    "plate_aged_aggregate",
    "lollipop_aggregate",
    "droplet_aged",
    "droplet_aggregate",
    "droplet_aged_aggregate",
    "irregular_aggregate",
    "cpc_aggregate",
)

CATEGORIES_19: tuple[str, ...] = BASIC_HABITS + COMPLEX_SHAPES

# NASCENT19-4CAT / CLOUDLAB: the column-related shapes (Sect. 4.2.2).
CATEGORIES_4: tuple[str, ...] = (
    "column",
    "column_aged",
    "column_aggregate",
    "column_aged_aggregate",
)

# Other spellings seen in real data (Fig. 1 calls CPC "column_plate").
DEFAULT_ALIASES: dict[str, str] = {
    "column_plate": "cpc",
    "columnplate": "cpc",
    "capped_column": "cpc",
    "column_plate_aggregate": "cpc_aggregate",
    "frozen_droplet": "droplet",
    "frozendroplet": "droplet",
    "frozen_droplet_aged": "droplet_aged",
    "frozen_droplet_aggregate": "droplet_aggregate",
    "frozen_droplet_aged_aggregate": "droplet_aged_aggregate",
}


def microphysical_process(category: str) -> str:
    """The merge of Fig. 7: ``aged``, ``aggregate``, ``aged_aggregate`` or ``basic``."""
    if category.endswith("_aged_aggregate"):
        return "aged_aggregate"
    if category.endswith("_aggregate"):
        return "aggregate"
    if category.endswith("_aged"):
        return "aged"
    return "basic"


def normalize_name(name: str) -> str:
    """Lower-case, with spaces, dashes and dots turned into underscores."""
    return re.sub(r"[\s\-.]+", "_", name.strip().lower())


@dataclass(frozen=True)
class Catalog:
    """Categories, which of them are basic habits, named category sets and aliases."""

    categories: tuple[str, ...] = CATEGORIES_19
    basic: tuple[str, ...] = BASIC_HABITS
    category_sets: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {"19cat": CATEGORIES_19, "4cat": CATEGORIES_4}
    )
    aliases: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ALIASES))
    # Category -> group used by the complex-shape confusion matrix (Fig. 7).
    groups: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = [c for c in self.basic if c not in self.categories]
        if unknown:
            raise ValueError(f"catalog: basic habits {unknown} are not among the categories")
        for name, members in self.category_sets.items():
            missing = [c for c in members if c not in self.categories]
            if missing:
                raise ValueError(
                    f"catalog: category set '{name}' names unknown categories {missing}; "
                    f"known categories are {list(self.categories)}"
                )
        bad_alias = {a: c for a, c in self.aliases.items() if c not in self.categories}
        if bad_alias:
            raise ValueError(f"catalog: aliases point at unknown categories {bad_alias}")

    def is_basic(self, category: str) -> bool:
        return category in self.basic

    def group(self, category: str) -> str:
        """Group of a category: an explicit entry, else the paper's process merge."""
        if category in self.groups:
            return self.groups[category]
        return "basic" if self.is_basic(category) else microphysical_process(category)

    def resolve(self, name: str) -> str | None:
        """Map a folder or manifest label onto a catalog category, case-insensitively."""
        key = normalize_name(name)
        if key in self.categories:
            return key
        aliases = {normalize_name(a): c for a, c in self.aliases.items()}
        return aliases.get(key)

    def closest(self, name: str) -> str | None:
        """The catalog category or alias name most like ``name`` (a likely typo), or None.

        Example:
            >>> Catalog().closest("colum")
            'column'
        """
        names = list(self.categories) + [normalize_name(a) for a in self.aliases]
        match = difflib.get_close_matches(normalize_name(name), names, n=1, cutoff=0.75)
        return match[0] if match else None

    def category_set(self, name: str) -> tuple[str, ...]:
        if name not in self.category_sets:
            raise KeyError(f"unknown category set '{name}'; known sets are {sorted(self.category_sets)}")
        return self.category_sets[name]
