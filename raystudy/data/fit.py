"""Fit a study to the images it is given (``--data``): campaigns, new categories, category sets.

A preset names the paper's campaigns (NASCENT19 / NASCENT20 / CLOUDLAB) and category
sets (19cat, 4cat). Real collections rarely match, so with ``--data`` whatever the
user did not set is taken from the data:

- campaigns: one campaign folder is the labeled one and pretraining uses it (no
  generalization); with several, the labeled one is ``data.labeled_campaign`` or,
  when that is not among them, the largest; with three or more the smallest other
  one is the generalization campaign (the paper's CLOUDLAB role) when it holds
  images of the generalization category set; when the labeled campaign does not hold
  that set (your own category names), the generalization set is the categories the
  smallest other campaign shares with the labeled one, added to the grid.
- names outside the catalog become new categories (group ``unknown``), with the
  closest catalog name when one is close; ``catalog.strict: true`` refuses them. Their
  images may be upright content, so the pretraining and fine-tuning augmentations keep
  the orientation (no rotation, no flips) unless the user set them.
- category sets: all categories of the labeled campaign (``10cat``) plus each
  catalog set the labeled campaign fully holds, with the preset's train sizes cut at
  what the data allow.

Problems are not raised here: :func:`raystudy.data.prepare.prepare_data` reports
them all at once. What was decided is logged and saved as ``RUN/data_fit.json``.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from raystudy.catalog import Catalog
from raystudy.config import STUDIES_DIR, StudyConfig, parse_override, read_yaml, validate
from raystudy.data.prepare import image_table
from raystudy.data.problems import Problems
from raystudy.storage import Location, as_location

log = logging.getLogger("raystudy")

FIT_FILE = "data_fit.json"
SET_KEYS = ("grid.sizes", "catalog.category_sets")


@dataclass
class DataFit:
    """What ``--data`` decided, and why (saved as ``RUN/data_fit.json`` for the report)."""

    source: str
    campaigns: dict[str, int]  # campaign -> images found
    labeled_campaign: str
    pretrain_campaigns: list[str]
    generalization_campaign: str | None
    category_sets: dict[str, list[str]]  # the sets the study runs
    derived_sets: dict[str, str] = field(default_factory=dict)  # set -> why it was derived
    new_categories: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # every decision, one line each

    def save(self, run_dir: str | Path | Location) -> Location:
        return (as_location(run_dir) / FIT_FILE).write_text(json.dumps(asdict(self), indent=2))


class Notes(list):
    """Decisions, one line each, logged as they are made."""

    def add(self, text: str, warn: bool = False) -> None:
        self.append(text)
        (log.warning if warn else log.info)("data: %s", text)


def read_fit(run_dir: str | Path | Location) -> DataFit | None:
    """The saved fit of a run folder, or None for a study without ``--data``."""
    path = as_location(run_dir) / FIT_FILE
    return DataFit(**json.loads(path.read_text())) if path.is_file() else None


def _dotted(raw: dict[str, Any], prefix: str = "") -> Iterable[str]:
    for key, value in raw.items():
        name = f"{prefix}{key}"
        yield name
        if isinstance(value, dict):
            yield from _dotted(value, name + ".")


def user_keys(config_path: Path | None, overrides: Iterable[str]) -> set[str]:
    """Dotted config keys the user set: ``--set`` keys and a config file's keys (presets excepted).

    Example:
        >>> sorted(user_keys(None, ["grid.folds=3"]))
        ['grid.folds']
    """
    keys = {".".join(parse_override(item)[0]) for item in overrides}
    if config_path is not None and Path(config_path).resolve().parent != STUDIES_DIR.resolve():
        keys |= set(_dotted(read_yaml(Path(config_path))))
    return keys


def _given(key: str, given: AbstractSet[str]) -> bool:
    """True when the user set ``key`` or anything inside it or above it."""
    return any(g == key or g.startswith(key + ".") or key.startswith(g + ".") for g in given)


def cut_sizes(sizes: list[int], available: int) -> list[int]:
    """Train sizes the data allow, plus the first one beyond (planned as skipped, so the report shows the limit).

    Example:
        >>> cut_sizes([64, 128, 256, 512], 200)
        [64, 128, 256]
        >>> cut_sizes([64, 1000], 30)
        [30, 64]
    """
    fits = sorted(s for s in set(sizes) if s <= available)
    beyond = sorted(s for s in set(sizes) if s > available)[:1]
    return (fits or [max(available, 2)]) + beyond


def derive_category_sets(
    counts: pd.Series, catalog: Catalog, sizes: dict[str, list[int]], campaign: str
) -> tuple[dict[str, list[str]], dict[str, list[int]], dict[str, str], list[str]]:
    """Category sets from the labeled campaign's class counts.

    Args:
        counts: images per category in the labeled campaign.
        catalog: its category sets are the candidates (the paper's 19cat, 4cat).
        sizes: the preset's train sizes per set.
        campaign: the labeled campaign's name (for the reasons).

    Returns:
        (sets, sizes, why each was derived, notes on the sets dropped), sets largest first.

    Example:
        >>> counts = pd.Series({"column": 30, "column_aged": 30, "column_aggregate": 30,
        ...                     "column_aged_aggregate": 30, "plate": 30})
        >>> sets, sz, why, _ = derive_category_sets(counts, Catalog(), {"19cat": [64, 1000], "4cat": [40]}, "C1")
        >>> list(sets), sz["5cat"], sz["4cat"]
        (['5cat', '4cat'], [64, 1000], [40])
    """
    order = {c: i for i, c in enumerate(catalog.categories)}
    found = sorted(counts.index, key=lambda c: (order.get(c, len(order)), c))
    held = {n: list(m) for n, m in catalog.category_sets.items() if set(m) <= set(found)}
    notes = [
        f"category set '{n}' left out: the labeled campaign '{campaign}' lacks {[c for c in m if c not in found]}"
        for n, m in catalog.category_sets.items()
        if n not in held and n in sizes
    ]
    widest = max(sizes, key=lambda n: len(catalog.category_sets.get(n, ())), default=None)
    base = sizes.get(widest, []) if widest is not None else []
    sets: dict[str, list[str]] = {}
    grid: dict[str, list[int]] = {}
    why: dict[str, str] = {}
    if not any(set(m) == set(found) for m in held.values()):
        name = f"{len(found)}cat"
        name = f"{name}-all" if name in catalog.category_sets else name
        sets[name] = found
        grid[name] = cut_sizes(base, int(counts.sum()))
        why[name] = (
            f"all {len(found)} categories found in the labeled campaign '{campaign}' ({int(counts.sum())} images); "
            f"train sizes {grid[name]} from the preset's '{widest}' sizes {base}, cut at the data"
        )
    for name, members in held.items():
        sets[name] = members
        grid[name] = list(sizes.get(name) or cut_sizes(base, int(counts[members].sum())))
        why[name] = f"the labeled campaign '{campaign}' holds all {len(members)} categories of this catalog set"
    keys = sorted(sets, key=lambda n: -len(sets[n]))
    return {k: sets[k] for k in keys}, {k: grid[k] for k in keys}, why, notes


def _assign_labeled(cfg: StudyConfig, found: dict[str, int], given: AbstractSet[str], notes: Notes) -> None:
    d = cfg.data
    if d.labeled_campaign in found or _given("data.labeled_campaign", given):
        return  # present, or the user's choice (a missing one is reported by prepare_data)
    largest = max(found, key=lambda c: (found[c], c))
    if len(found) > 1:
        notes.add(
            f"labeled campaign: '{largest}', the largest of {len(found)} campaigns ({found[largest]} images; "
            f"'{d.labeled_campaign}' is not among them); set data.labeled_campaign to choose another"
        )
    d.labeled_campaign = largest


def _assign_others(
    cfg: StudyConfig, table: pd.DataFrame, found: dict[str, int], given: AbstractSet[str], notes: Notes
) -> None:
    """Generalization and pretraining campaigns of what the user left unset."""
    d = cfg.data
    if len(found) == 1:
        if not _given("data.pretrain_campaigns", given):
            d.pretrain_campaigns = [d.labeled_campaign]
        if not _given("data.generalization_campaign", given):
            d.generalization_campaign = None
        notes.add(
            f"one campaign ('{d.labeled_campaign}', {found[d.labeled_campaign]} images): it is the labeled campaign "
            "and pretraining uses it too; no generalization campaign, so the report has no generalization figure"
        )
        return
    gset = d.generalization_category_set
    members = set(cfg.catalog.category_sets.get(gset, ())) if gset else set()
    if not _given("data.generalization_campaign", given) and not gset:
        d.generalization_campaign = None
    elif not _given("data.generalization_campaign", given) and (
        d.generalization_campaign not in found or d.generalization_campaign == d.labeled_campaign
    ):
        others = sorted((c for c in found if c != d.labeled_campaign), key=lambda c: (found[c], c))
        holds = [c for c in others if table[(table["campaign"] == c) & table["category"].isin(members)].shape[0]]
        if len(found) >= 3 and holds:
            d.generalization_campaign = holds[0]
            notes.add(
                f"generalization campaign: '{holds[0]}', the smallest other campaign with images of '{gset}' "
                f"({found[holds[0]]} images); set data.generalization_campaign to choose another"
            )
        else:
            d.generalization_campaign = None
            why = "two campaigns" if len(found) == 2 else f"no other campaign holds images of '{gset}'"
            notes.add(f"no generalization campaign ({why}): the report has no generalization figure")
    if not _given("data.pretrain_campaigns", given) and (
        any(c not in found for c in d.pretrain_campaigns) or d.generalization_campaign in d.pretrain_campaigns
    ):
        d.pretrain_campaigns = sorted((c for c in found if c != d.generalization_campaign), key=lambda c: -found[c])
        notes.add(f"pretraining campaigns: {d.pretrain_campaigns} (every campaign but the generalization one)")


MIN_SHARED = 2  # a derived generalization set needs this many categories (a classifier needs 2)


def _derive_generalization_set(
    cfg: StudyConfig,
    table: pd.DataFrame,
    found: dict[str, int],
    given: AbstractSet[str],
    preset_sizes: dict[str, list[int]],
    catalog: Catalog,
    derived: dict[str, str],
    notes: Notes,
) -> None:
    """The generalization category set from the data, when the preset's is not held.

    With three or more campaigns, the generalization campaign (the user's, or the smallest
    other than the labeled one, as CLOUDLAB in the paper) tests on the categories it shares
    with the labeled campaign (at least :data:`MIN_SHARED`): an existing derived set with
    exactly those members, or a new set added to the grid (train sizes from the preset's
    generalization set, cut at the data). ``cfg``, ``derived`` and ``notes`` are updated.
    """
    d = cfg.data
    if len(found) < 3:
        return
    labeled = set(table.loc[table["campaign"] == d.labeled_campaign, "category"])
    order = {c: i for i, c in enumerate(catalog.categories)}

    def shared_with(campaign: str) -> list[str]:
        held = set(table.loc[table["campaign"] == campaign, "category"]) & labeled
        return sorted(held, key=lambda c: (order.get(c, len(order)), c))

    if _given("data.generalization_campaign", given):
        candidates = [d.generalization_campaign] if d.generalization_campaign in found else []
    else:
        candidates = sorted((c for c in found if c != d.labeled_campaign), key=lambda c: (found[c], c))
    if not candidates or not candidates[0]:
        return
    picked, shared = candidates[0], shared_with(candidates[0])
    if len(shared) < MIN_SHARED:
        notes.add(
            f"no generalization set: campaign '{picked}' shares {len(shared)} category(ies) with the labeled "
            f"campaign '{d.labeled_campaign}' (a test needs {MIN_SHARED})"
        )
        return
    sets = cfg.catalog.category_sets
    name = next((n for n, members in sets.items() if set(members) == set(shared)), None)
    if name is None:
        name = f"{len(shared)}cat"
        name = f"{name}-shared" if name in sets or name in catalog.category_sets else name
        base = preset_sizes.get(d.generalization_category_set or "") or next(iter(cfg.grid.sizes.values()), [])
        n_images = int(table[(table["campaign"] == d.labeled_campaign) & table["category"].isin(shared)].shape[0])
        sets[name] = shared
        cfg.grid.sizes[name] = cut_sizes(list(base), n_images)
        derived[name] = (
            f"the {len(shared)} categories the generalization campaign '{picked}' shares with the labeled "
            f"campaign '{d.labeled_campaign}' ({n_images} labeled images); train sizes {cfg.grid.sizes[name]}"
        )
        notes.add(f"category set '{name}': {derived[name]}")
    was = d.generalization_category_set
    d.generalization_category_set, d.generalization_campaign = name, picked
    notes.add(
        f"generalization: campaign '{picked}' tests category set '{name}' ({', '.join(shared)})"
        + (f"; the preset's '{was}' is not held by the labeled campaign" if was else "")
        + "; set data.generalization_campaign / data.generalization_category_set to choose others"
    )


def _accept_new(cfg: StudyConfig, catalog: Catalog, new: list[str], notes: Notes) -> None:
    """Names outside the catalog become categories of group ``unknown``, each with its closest catalog name."""
    named = []
    for name in new:
        hint = catalog.closest(name)
        named.append(f"{name} (did you mean '{hint}'?)" if hint else name)
        cfg.catalog.categories.append(name)
        cfg.catalog.groups.setdefault(name, "unknown")
    notes.add(
        f"{len(new)} new category name(s) outside the catalog, accepted as new categories (group unknown): "
        + ", ".join(named)
        + "; rename typos, or set catalog.strict: true to refuse new names",
        warn=True,
    )


ORIENTATION_KEYS = ("rotation_degrees", "flip_p")


def _keep_orientation(cfg: StudyConfig, given: AbstractSet[str], notes: Notes) -> None:
    """Categories outside the catalog: augmentations that keep an image's orientation.

    The paper's rotations (0-180 degrees) and flips suit particles, whose class does not depend
    on how they lie; the catalog's categories are such. A new category may be upright content
    (a digit, a letter, a scene: a 6 turned is a 9), where those augmentations teach the encoder
    to confuse classes (on scikit-learn's digits MoCo's online kNN fell below its random
    initial weights with them, and rose above them without). A section whose rotation or flip
    the user set is left as given.
    """
    kept = []
    for section in ("pretrain", "finetune"):
        if any(_given(f"{section}.augment.{k}", given) for k in ORIENTATION_KEYS):
            continue
        aug = getattr(cfg, section).augment
        if list(aug.rotation_degrees) != [0.0, 0.0] or aug.flip_p > 0:
            aug.rotation_degrees, aug.flip_p = [0.0, 0.0], 0.0
            kept.append(section)
    if kept:
        notes.add(
            "categories outside the catalog may depend on how an image lies, so the "
            + " and ".join(f"{s}.augment" for s in kept)
            + " augmentations keep its orientation (no rotation, no flips); for images whose class does not "
            "(particles, cells), set them as the paper's: --set pretrain.augment.rotation_degrees=[0,180] "
            "--set pretrain.augment.flip_p=0.5 (and finetune.augment likewise)"
        )


def fit_to_data(cfg: StudyConfig, given: AbstractSet[str] = frozenset()) -> tuple[StudyConfig, DataFit | None]:
    """A copy of ``cfg`` fitted to its data; what the user set (``given`` dotted keys) is kept.

    Returns (cfg, None) when the data cannot be listed: :func:`prepare_data` then names every problem.

    Example:
        >>> cfg, fit = fit_to_data(load_config(preset="smoke", overrides=["data.root=/data/mine"]))  # doctest: +SKIP
        >>> list(fit.category_sets)  # doctest: +SKIP
        ['10cat', '4cat']
    """
    cfg = copy.deepcopy(cfg)
    catalog = cfg.catalog.build()
    table, source = image_table(cfg, catalog, Problems(), new_categories=True)
    if table.empty:
        return cfg, None
    notes = Notes()
    new = sorted(set(table["category"]) - set(catalog.categories))
    if new and cfg.catalog.strict:
        table = table[~table["category"].isin(new)]  # prepare_data reports them
        new = []
    elif new:
        _accept_new(cfg, catalog, new, notes)
        _keep_orientation(cfg, given, notes)
        catalog = cfg.catalog.build()
    found = table["campaign"].value_counts().to_dict()
    if not found:
        return cfg, None
    _assign_labeled(cfg, found, given, notes)
    derived: dict[str, str] = {}
    if not any(_given(k, given) for k in SET_KEYS):
        preset_sizes = dict(cfg.grid.sizes)
        counts = table.loc[table["campaign"] == cfg.data.labeled_campaign, "category"].value_counts()
        sets, sizes, derived, dropped = derive_category_sets(counts, catalog, cfg.grid.sizes, cfg.data.labeled_campaign)
        cfg.catalog.category_sets = sets
        cfg.grid.sizes = sizes
        if isinstance(cfg.grid.selection, dict):  # strategies of sets left out go with them
            cfg.grid.selection = {k: v for k, v in cfg.grid.selection.items() if k in sizes}
        for line in [f"category set '{n}': {why}" for n, why in derived.items()] + dropped:
            notes.add(line)
        if cfg.data.generalization_category_set not in sets and not _given("data.generalization_category_set", given):
            _derive_generalization_set(cfg, table, found, given, preset_sizes, catalog, derived, notes)
        if cfg.data.generalization_category_set not in sets:
            if cfg.data.generalization_category_set:
                notes.add(
                    f"no generalization figure: the generalization category set "
                    f"'{cfg.data.generalization_category_set}' is not held by the labeled campaign"
                )
            cfg.data.generalization_category_set = None
        for section in (cfg.embeddings, cfg.search):
            if section.category_set not in sets:
                section.category_set = None
    _assign_others(cfg, table, found, given, notes)
    roles = {cfg.data.labeled_campaign, cfg.data.generalization_campaign, *cfg.data.pretrain_campaigns}
    unused = sorted(c for c in found if c not in roles)
    if unused:
        notes.add(
            f"campaign folder(s) not used by any role: {unused}; "
            "name them in data.pretrain_campaigns to pretrain on them",
            warn=True,
        )
    validate(cfg)
    fit = DataFit(
        source=source,
        campaigns={c: int(n) for c, n in found.items()},
        labeled_campaign=cfg.data.labeled_campaign,
        pretrain_campaigns=list(cfg.data.pretrain_campaigns),
        generalization_campaign=cfg.data.generalization_campaign,
        category_sets={k: list(v) for k, v in cfg.catalog.category_sets.items() if k in cfg.grid.sizes},
        derived_sets=derived,
        new_categories=new,
        notes=list(notes),
    )
    return cfg, fit
