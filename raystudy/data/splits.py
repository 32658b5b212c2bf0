"""Train / validation splits for every (category set, train size, fold) cell.

Splits depend only on the study seed, the category set, the size and the fold,
never on the model type, so the comparison between models is paired.

Protocols:
- ``paper``: draw n labeled images (stratified), then k-fold cross-validation
  inside them: fold f trains on the other folds of the n and validates on fold f.
- ``holdout``: k-fold split of the whole labeled pool; fold f validates on the
  whole fold f and trains on n images drawn (stratified) from the other folds.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
from sklearn.model_selection import KFold, StratifiedKFold


def derive_seed(*parts: object) -> int:
    """A stable 32-bit seed from any parts (independent of Python's hash salt)."""
    blob = "|".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:4], "little")


def stratified_sample(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of ``n`` items keeping class shares (largest remainder), deterministic."""
    rng = np.random.default_rng(seed)
    if n >= len(labels):
        return rng.permutation(len(labels))
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts / counts.sum() * n
    take = np.floor(exact).astype(int)
    order = np.argsort(-(exact - take), kind="stable")
    take[order[: n - take.sum()]] += 1
    picked = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take, strict=True)]
    return rng.permutation(np.concatenate(picked))


def kfold(labels: np.ndarray, folds: int, seed: int) -> tuple[list[np.ndarray], str | None]:
    """Validation index arrays of a k-fold split; stratified when every class allows."""
    _, counts = np.unique(labels, return_counts=True)
    x = np.zeros(len(labels))
    if counts.min() >= folds:
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        return [val for _, val in splitter.split(x, labels)], None
    note = (
        f"stratified {folds}-fold split impossible (rarest class has {counts.min()} "
        f"image(s)); used an unstratified split"
    )
    splitter = KFold(n_splits=folds, shuffle=True, random_state=seed)
    return [val for _, val in splitter.split(x)], note


@dataclass
class Split:
    train: np.ndarray  # indices into the labeled pool
    validation: np.ndarray
    notes: list[str] = field(default_factory=list)


def holdout_fold(
    labels: np.ndarray, fold: int, folds: int, seed: int, set_name: str
) -> tuple[np.ndarray, np.ndarray, str | None]:
    """The ``holdout`` protocol's fold ``fold``: (validation positions, training pool positions, note),
    both sorted; the folds are fixed over the whole labeled pool of the set."""
    vals, note = kfold(labels, folds, derive_seed(seed, set_name, "holdout-folds"))
    val = np.sort(vals[fold])
    return val, np.setdiff1d(np.arange(len(labels)), val), note


def make_split(
    labels: np.ndarray,
    train_size: int,
    fold: int,
    folds: int,
    protocol: str,
    seed: int,
    set_name: str,
) -> Split | str:
    """The split of one cell, or the reason the cell is skipped."""
    n_pool = len(labels)
    if protocol == "paper":
        if train_size > n_pool:
            return f"train size {train_size} exceeds the {n_pool} labeled images of category set '{set_name}'"
        if train_size < folds:
            return f"train size {train_size} is smaller than the {folds} folds"
        subset = np.sort(stratified_sample(labels, train_size, derive_seed(seed, set_name, train_size, "subset")))
        vals, note = kfold(labels[subset], folds, derive_seed(seed, set_name, train_size, "folds"))
        val = subset[vals[fold]]
        train = np.setdiff1d(subset, val)
        return Split(train=train, validation=np.sort(val), notes=[note] if note else [])
    # holdout: fixed folds over the whole pool, n drawn from the training folds
    val, pool, note = holdout_fold(labels, fold, folds, seed, set_name)
    if train_size > len(pool):
        return (
            f"train size {train_size} exceeds the {len(pool)} training images of fold {fold} "
            f"of category set '{set_name}'"
        )
    pick = stratified_sample(labels[pool], train_size, derive_seed(seed, set_name, train_size, fold, "train"))
    return Split(train=np.sort(pool[pick]), validation=val, notes=[note] if note else [])


def inner_split(labels: np.ndarray, split: Split, folds: int, seed: int, *key: object) -> Split:
    """A split of ``split.train`` alone (k-fold, its first fold validates), for tuning.

    ``raystudy search`` tunes on it, so the cell's own validation images (``split.validation``)
    never choose a hyperparameter: the grid's numbers for that fold are not optimistic. ``key``
    names the cell (category set, size, fold) in the seed.

    Example:
        >>> labels = np.repeat([0, 1], 30)
        >>> outer = Split(train=np.arange(0, 60, 2), validation=np.arange(1, 60, 2))
        >>> inner = inner_split(labels, outer, 3, 0, "4cat", 30, 0)
        >>> len(inner.train), len(inner.validation), set(inner.validation) <= set(outer.train)
        (20, 10, True)
    """
    train = np.asarray(split.train)
    vals, note = kfold(labels[train], max(2, folds), derive_seed(seed, *key, "search-inner"))
    validation = np.sort(train[vals[0]])
    return Split(train=np.setdiff1d(train, validation), validation=validation, notes=[note] if note else [])


def online_probe_slice(labels: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray] | str:
    """The online kNN probe of pretraining: (bank, query) positions into ``labels``, or why there is none.

    ``n`` images are drawn stratified (``stratified_sample``) and halved by a 2-fold split
    (stratified where every class allows): the kNN memory bank and its queries. The caller
    passes only images no cell trains, validates or tests on (see
    :func:`raystudy.scheduler.online_probe_rows`); their labels serve this number only.
    """
    if n < 2 or len(labels) < 2:
        return (
            f"online kNN off: {len(labels)} labeled image(s) outside the cells' campaigns, "
            f"pretrain.online_knn_images={n}"
        )
    pick = stratified_sample(labels, min(n, len(labels)), seed)
    halves, _ = kfold(labels[pick], 2, seed)
    return np.sort(pick[halves[0]]), np.sort(pick[halves[1]])
