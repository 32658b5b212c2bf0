"""Which images to label: the selection strategies of ``grid.selection`` and ``raystudy advise``.

Every strategy picks ``n`` indices from a pool (positions ``0 .. len(pool) - 1``):

- ``random``: the stratified random draw the study always used (class shares kept);
- ``balanced``: equal counts per category as far as the pool allows;
- ``coreset``: greedy k-center on L2-normalised encoder embeddings (no labels at all);
- ``uncertainty``: a random seed set, then rounds that add the images whose predicted
  category is least certain (smallest top-1 minus top-2 probability) under a linear head
  refitted each round on the embeddings of the images selected so far;
- ``typiclust``: TypiClust (Hacohen et al., ICML 2022): k-means with k = n clusters (at most
  500, as the paper's code), then the most typical image (highest inverse mean distance to its
  K = 20 nearest neighbours in its cluster) of each of the largest uncovered clusters;
- ``probcover``: ProbCover (Yehuda et al., NeurIPS 2022): greedy maximum coverage of the
  delta-balls around the pool images, delta the largest radius whose balls stay 95 % pure
  under k-means with one cluster per category.

Ties (equal scores, equal distances) are broken by the selection's seeded generator, never
by pool order: pools are often sorted by category, and the first of equal scores would then
pick one category only.

``random`` and ``balanced`` read the pool's categories (they model a labeled pool, as the
stratified draw always did); ``coreset`` reads none; ``uncertainty`` reads only the labels
of images it has already selected, through a :class:`SelectedLabels` reveal callback.
Each registers a :class:`raystudy.registry.StrategySpec` (:func:`select` dispatches by name);
a strategy from outside raystudy registers the same way.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from raystudy import registry
from raystudy.data.splits import stratified_sample

Reveal = Callable[[np.ndarray], np.ndarray]  # pool positions -> their labels (only selected ones)


class SelectedLabels:
    """Reveals labels one selected image at a time and remembers which were asked for.

    Example:
        >>> oracle = SelectedLabels(np.array([3, 1, 2]))
        >>> oracle(np.array([2])).tolist(), sorted(oracle.revealed)
        ([2], [2])
    """

    def __init__(self, labels: np.ndarray) -> None:
        self._labels = np.asarray(labels)
        self.revealed: set[int] = set()

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        positions = np.asarray(positions, dtype=np.int64)
        self.revealed.update(int(p) for p in positions)
        return self._labels[positions]


def select_random(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """The stratified random draw of ``n`` pool positions (class shares kept, largest remainder).

    Bit-identical to the draw of :func:`raystudy.data.splits.make_split` for the same seed.

    Args:
        labels: (P,) category of every pool image.
        n: how many to pick (all of them when ``n >= P``).
        seed: the draw's seed.

    Example:
        >>> labels = np.array([0] * 6 + [1] * 2)
        >>> np.bincount(labels[select_random(labels, 4, seed=0)]).tolist()
        [3, 1]
    """
    return stratified_sample(np.asarray(labels), n, seed)


def balanced_counts(counts: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """How many images to take per category: equal shares, capped at what each category holds.

    Categories that run out leave their share to the others; the last few images (fewer
    than open categories) go to open categories in a seeded random order.

    Example:
        >>> balanced_counts(np.array([1, 10, 10]), 9, np.random.default_rng(0)).tolist()
        [1, 4, 4]
    """
    counts = np.asarray(counts, dtype=np.int64)
    take = np.zeros_like(counts)
    left = min(int(n), int(counts.sum()))
    while left > 0:
        open_ = np.flatnonzero(take < counts)
        share = left // len(open_)
        if share == 0:  # fewer images left than open categories
            take[rng.permutation(open_)[:left]] += 1
            break
        for c in open_:
            add = min(share, int(counts[c] - take[c]))
            take[c] += add
            left -= add
    return take


def select_balanced(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` pool positions with (as far as the pool allows) equal counts per category.

    Args:
        labels: (P,) category of every pool image.
        n: how many to pick.
        seed: seeds the leftover spread and the draw inside each category.

    Example:
        >>> labels = np.array([0] * 2 + [1] * 8 + [2] * 8)
        >>> np.bincount(labels[select_balanced(labels, 8, seed=0)]).tolist()
        [2, 3, 3]
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    take = balanced_counts(counts, n, rng)
    picked = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take, strict=True)]
    return rng.permutation(np.concatenate(picked)) if picked else np.empty(0, dtype=np.int64)


def random_argmax(scores: np.ndarray, rng: np.random.Generator) -> int:
    """The position of the largest score; among equal largest scores, one drawn by ``rng``.

    Example:
        >>> random_argmax(np.array([1.0, 3.0, 3.0]), np.random.default_rng(0)) in (1, 2)
        True
    """
    scores = np.asarray(scores)
    best = np.flatnonzero(scores == scores.max())
    return int(best[0]) if len(best) == 1 else int(rng.choice(best))


def random_argsort(scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Positions ordered by ascending score; equal scores in an order drawn by ``rng``.

    Example:
        >>> sorted(random_argsort(np.array([1.0, 0.0, 1.0]), np.random.default_rng(0))[1:].tolist())
        [0, 2]
    """
    scores = np.asarray(scores)
    return np.lexsort((rng.permutation(len(scores)), scores))


def l2_normalise(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    x = np.asarray(features, dtype=np.float64)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def select_coreset(
    features: np.ndarray,
    n: int,
    seed: int,
    start: int | None = None,
    already: np.ndarray | None = None,
    normalise: bool = True,
) -> np.ndarray:
    """Greedy k-center: each step adds the pool point farthest from everything selected so far.

    Args:
        features: (P, D) embeddings of the pool.
        n: how many to pick (at most P).
        seed: picks the first point when neither ``start`` nor ``already`` is given, and
            breaks ties between equally far points.
        start: the first point (a pool position) instead of a seeded random one.
        already: (K, D) embeddings of images labeled before (``raystudy advise``): the
            distances start from them, so the first pick is the pool point farthest from them.
        normalise: L2-normalise the embeddings first (cosine geometry, as the encoders train).

    Returns:
        (n,) pool positions in the order picked.

    Example:
        >>> pts = np.array([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0], [5.0, 0.0]])
        >>> select_coreset(pts, 3, seed=0, start=0, normalise=False).tolist()
        [0, 2, 3]
    """
    # squared distances |x|^2 + |r|^2 - 2 x.r in float32, in (4096, 1024) blocks: memory does not grow with D
    # (the argmax of squared distances is that of distances; equal distances: drawn by the seeded generator)

    def as_rows(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a, dtype=np.float32)  # no copy for float32 input
        if not normalise:
            return a
        norm = np.sqrt(np.einsum("ij,ij->i", a, a))  # (rows,)
        return a / np.where(norm > 0, norm, 1.0).astype(np.float32)[:, None]

    def sq_norms(a: np.ndarray) -> np.ndarray:
        return np.einsum("ij,ij->i", a, a)  # (rows,) float32

    x = as_rows(features)  # (P, D)
    n = min(int(n), len(x))
    if n <= 0:
        return np.empty(0, dtype=np.int64)
    x_sq = sq_norms(x)  # (P,)
    picked: list[int] = []
    rng = np.random.default_rng(seed)
    if already is not None and len(already):
        ref = as_rows(already)  # (K, D)
        ref_sq = sq_norms(ref)  # (K,)
        nearest = np.full(len(x), np.inf, dtype=np.float32)  # (P,) squared distance to the nearest reference
        for i in range(0, len(x), 4096):
            for j in range(0, len(ref), 1024):
                d = x[i : i + 4096] @ ref[j : j + 1024].T  # (p, k)
                d *= -2.0
                d += x_sq[i : i + 4096, None]
                d += ref_sq[None, j : j + 1024]
                nearest[i : i + 4096] = np.minimum(nearest[i : i + 4096], d.min(axis=1))
        np.maximum(nearest, 0.0, out=nearest)
    else:
        first = int(rng.integers(len(x))) if start is None else int(start)
        picked.append(first)
        nearest = np.maximum(x_sq + x_sq[first] - 2.0 * (x @ x[first]), 0.0)  # (P,)
    while len(picked) < n:
        nearest[picked] = -1.0  # never pick twice
        nxt = random_argmax(nearest, rng)
        picked.append(nxt)
        nearest = np.minimum(nearest, np.maximum(x_sq + x_sq[nxt] - 2.0 * (x @ x[nxt]), 0.0))
    return np.asarray(picked, dtype=np.int64)


def prediction_margin(train_x: np.ndarray, train_y: np.ndarray, x: np.ndarray, seed: int) -> np.ndarray:
    """Top-1 minus top-2 probability of a multinomial logistic-regression head fitted on
    (``train_x``, ``train_y``), for every row of ``x``; small = uncertain.

    With a single category among the training labels every margin is 1 (no information).

    Example:
        >>> tx = np.array([[0.0], [0.1], [1.0], [1.1]]); ty = np.array([0, 0, 1, 1])
        >>> m = prediction_margin(tx, ty, np.array([[0.55], [5.0]]), seed=0)
        >>> bool(m[0] < m[1])
        True
    """
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(train_y)) < 2:
        return np.ones(len(x))
    head = LogisticRegression(max_iter=500, C=1.0, random_state=seed).fit(train_x, train_y)
    proba = head.predict_proba(x)  # (M, classes seen)
    top = np.sort(proba, axis=1)
    return top[:, -1] - top[:, -2]


def select_uncertainty(
    features: np.ndarray,
    n: int,
    reveal: Reveal,
    seed: int,
    rounds: int = 4,
    seed_fraction: float = 0.25,
) -> np.ndarray:
    """A seeded random seed set, then ``rounds`` rounds each adding the least-certain pool images.

    Each round refits a linear head (multinomial logistic regression) on the L2-normalised
    embeddings of the images selected so far and adds the unselected images with the
    smallest top-1 minus top-2 probability margin. Labels are only ever asked for through
    ``reveal`` and only for selected images.

    Args:
        features: (P, D) embeddings of the pool.
        n: how many to pick (at most P).
        reveal: pool positions -> their labels (a :class:`SelectedLabels`).
        seed: seeds the seed set and the head.
        rounds: how many refit-and-add rounds after the seed set.
        seed_fraction: share of ``n`` drawn at random first (at least one image).

    Returns:
        (n,) pool positions in the order picked.

    Example:
        >>> x = np.array([[0.0, 1.0], [0.1, 1.0], [1.0, 0.1], [1.0, 0.0], [0.7, 0.7]])
        >>> len(select_uncertainty(x, 4, SelectedLabels(np.array([0, 0, 1, 1, 0])), seed=0, rounds=1))
        4
    """
    x = l2_normalise(features)  # (P, D)
    n = min(int(n), len(x))
    rng = np.random.default_rng(seed)
    k0 = min(n, max(1, int(round(seed_fraction * n))))
    picked = list(rng.choice(len(x), size=k0, replace=False).astype(np.int64))
    for add in np.array_split(np.arange(n - k0), max(1, rounds)):
        if len(add) == 0:
            continue
        chosen = np.asarray(picked, dtype=np.int64)
        rest = np.setdiff1d(np.arange(len(x)), chosen)
        margin = prediction_margin(x[chosen], reveal(chosen), x[rest], seed)
        picked += list(rest[random_argsort(margin, rng)[: len(add)]])  # a one-class seed set: all margins 1
    return np.asarray(picked, dtype=np.int64)


TYPICLUST_MAX_CLUSTERS = 500  # the paper's code caps k-means at 500 clusters
TYPICLUST_MIN_CLUSTER_SIZE = 5  # ... and skips clusters of at most 5 images while larger ones are left
TYPICLUST_NEIGHBOURS = 20  # K of the typicality (at most half the cluster, as the paper's code)
PROBCOVER_PURITY = 0.95  # alpha: the share of pure delta-balls the radius keeps


def typicality(features: np.ndarray) -> np.ndarray:
    """Inverse mean distance of each row to its K nearest other rows (K = min(20, rows // 2), at least 1).

    Example:
        >>> t = typicality(np.array([[0.0], [0.1], [0.2], [5.0]]))
        >>> int(np.argmax(t))
        1
    """
    from sklearn.neighbors import NearestNeighbors  # deferred: sklearn is heavy and reading a config imports this

    x = np.asarray(features, dtype=np.float32)
    if len(x) < 2:
        return np.ones(len(x))
    k = max(1, min(TYPICLUST_NEIGHBOURS, len(x) // 2))
    dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)  # (rows, k + 1), itself first
    return 1.0 / (dist[:, 1:].mean(axis=1) + 1e-5)


def kmeans_labels(features: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """(P,) k-means cluster of every row (k-means++, seeded from ``rng``)."""
    from sklearn.cluster import KMeans  # deferred: sklearn is heavy and reading a config imports this

    k = max(1, min(int(k), len(features)))
    seed = int(rng.integers(2**31 - 1))
    return KMeans(n_clusters=k, n_init=1, random_state=seed).fit_predict(np.asarray(features, dtype=np.float32))


def _unit_rows(features: np.ndarray, already: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The pool and the already-labeled embeddings, L2-normalised in float32 ((0, D) when none)."""
    pool = l2_normalise(features).astype(np.float32)
    known = np.empty((0, pool.shape[1]), np.float32) if already is None else l2_normalise(already).astype(np.float32)
    return pool, known


def select_typiclust(features: np.ndarray, n: int, seed: int, already: np.ndarray | None = None) -> np.ndarray:
    """TypiClust (Hacohen, Dekel and Weinshall, ICML 2022) for a pool with no labels yet.

    The L2-normalised embeddings are clustered by k-means into ``min(n, 500)`` clusters. Each
    step takes the cluster holding the fewest selected images (ties: the largest cluster; then
    drawn), skipping clusters of at most 5 images while larger ones are left, and adds its most
    typical unselected image: the highest inverse mean distance to its K = min(20, size // 2)
    nearest neighbours inside the cluster (computed on the cluster's images, as the paper's code).

    Args:
        features: (P, D) embeddings of the pool.
        n: how many to pick (at most P).
        seed: seeds k-means and every tie.
        already: (K, D) embeddings of images labeled before (``raystudy advise``): they are
            clustered with the pool (``min(K + n, 500)`` clusters) and count as selected in theirs.

    Returns:
        (n,) pool positions in the order picked.

    Example:
        >>> t = np.array([0.0, 0.1, 0.12, 0.14, 0.4])  # two clusters of 5, densest at 0.12
        >>> x = np.concatenate([np.stack([np.ones(5), t], 1), np.stack([t, np.ones(5)], 1)])
        >>> sorted(select_typiclust(x, 2, seed=0).tolist())
        [2, 7]
    """
    pool, known = _unit_rows(features, already)  # (P, D), (K, D)
    n = min(int(n), len(pool))
    if n <= 0:
        return np.empty(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    x = np.concatenate([pool, known])  # (P + K, D): the pool first
    cluster = kmeans_labels(x, min(len(known) + n, TYPICLUST_MAX_CLUSTERS), rng)  # (P + K,)
    sizes = np.bincount(cluster)  # images per cluster
    taken = np.bincount(cluster[len(pool) :], minlength=len(sizes))  # selected (or labeled) images per cluster
    free = np.arange(len(x)) < len(pool)  # only pool images can be picked
    picked: list[int] = []
    while len(picked) < n:
        open_ = np.bincount(cluster[free], minlength=len(sizes)) > 0
        if (open_ & (sizes > TYPICLUST_MIN_CLUSTER_SIZE)).any():
            open_ &= sizes > TYPICLUST_MIN_CLUSTER_SIZE
        # fewest selected first, then the largest: score = -taken * (P + 1) + size; closed clusters never win
        score = np.where(open_, -taken * (len(x) + 1) + sizes, -np.inf)
        c = random_argmax(score, rng)
        members = np.flatnonzero(cluster == c)  # typicality among all its images, the labeled ones too
        score_in = np.where(free[members], typicality(x[members]), -np.inf)
        best = members[random_argmax(score_in, rng)]
        picked.append(int(best))
        free[best] = False
        taken[c] += 1
    return np.asarray(picked, dtype=np.int64)


def probcover_delta(
    features: np.ndarray, n_classes: int, rng: np.random.Generator, alpha: float = PROBCOVER_PURITY
) -> float:
    """ProbCover's ball radius: the largest delta whose balls are pure for a share >= ``alpha`` of the points.

    A ball B(x, delta) is pure when every point in it has x's k-means cluster (k = ``n_classes``,
    the number of categories, as the paper). B(x, delta) is pure exactly while delta is at most
    the distance from x to the nearest point of another cluster, so the paper's search over a
    grid of radii is solved exactly: (just below) the largest delta with at most
    ``floor((1 - alpha) P)`` impure balls.

    Args:
        features: (P, D) the (already normalised) embeddings.
        n_classes: the number of k-means clusters.
        rng: seeds k-means.
        alpha: the share of pure balls to keep.
    """
    from sklearn.neighbors import NearestNeighbors  # deferred: sklearn is heavy and reading a config imports this

    x = np.asarray(features, dtype=np.float32)
    cluster = kmeans_labels(x, n_classes, rng)
    if len(np.unique(cluster)) < 2:  # one cluster: every ball is pure; the largest distance covers all
        return float(np.linalg.norm(x - x.mean(axis=0), axis=1).max() * 2.0) or 1.0
    to_other = np.empty(len(x))  # (P,) distance to the nearest point of another cluster
    for c in np.unique(cluster):
        inside = cluster == c
        dist, _ = NearestNeighbors(n_neighbors=1).fit(x[~inside]).kneighbors(x[inside])
        to_other[inside] = dist[:, 0]
    impure = int(np.floor((1.0 - alpha) * len(x)))
    # just below that distance: the balls hold the points at most delta away (radius_neighbors_graph)
    return float(np.sort(to_other)[min(impure, len(x) - 1)]) * (1.0 - 1e-6)


def select_probcover(
    features: np.ndarray,
    n: int,
    seed: int,
    n_classes: int,
    delta: float | None = None,
    already: np.ndarray | None = None,
) -> np.ndarray:
    """ProbCover (Yehuda, Dekel, Hacohen and Weinshall, NeurIPS 2022) for a pool with no labels yet.

    On the L2-normalised embeddings, every image covers the images within ``delta`` of it
    (itself included). Each step adds the image covering the most images not covered yet
    (ties: drawn); once every image is covered, the rest are drawn at random, as the paper's code.

    Args:
        features: (P, D) embeddings of the pool.
        n: how many to pick (at most P).
        seed: seeds k-means, the ties and the random rest.
        n_classes: the k-means clusters of the purity rule (the number of categories).
        delta: the ball radius; None: :func:`probcover_delta` (purity 0.95) on pool and ``already``.
        already: (K, D) embeddings of images labeled before (``raystudy advise``): what their
            balls cover counts as covered.

    Returns:
        (n,) pool positions in the order picked.

    Example:
        >>> x = np.array([[0.0, 1.0], [0.1, 1.0], [0.05, 1.0], [1.0, 0.0], [1.0, 0.1]])
        >>> sorted(select_probcover(x, 2, seed=0, n_classes=2, delta=0.2).tolist())[0]
        2
    """
    from sklearn.neighbors import NearestNeighbors  # deferred: sklearn is heavy and reading a config imports this

    x, known = _unit_rows(features, already)  # (P, D), (K, D)
    n = min(int(n), len(x))
    if n <= 0:
        return np.empty(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    radius = probcover_delta(np.concatenate([x, known]), n_classes, rng) if delta is None else float(delta)
    balls = NearestNeighbors(radius=radius).fit(x)
    graph = balls.radius_neighbors_graph(x, mode="connectivity").tocsr()  # (P, P), symmetric, itself included
    uncovered = np.ones(len(x), dtype=bool)
    if len(known):
        uncovered[np.unique(balls.radius_neighbors_graph(known).tocsr().indices)] = False
    gain = graph @ uncovered.astype(np.int64)  # (P,) uncovered images each ball holds
    free = np.ones(len(x), dtype=bool)
    picked: list[int] = []
    while len(picked) < n:
        if gain[free].max(initial=0) <= 0:  # everything covered: the rest at random
            rest = rng.permutation(np.flatnonzero(free))[: n - len(picked)]
            picked += [int(i) for i in rest]
            break
        best = random_argmax(np.where(free, gain, -1), rng)
        picked.append(best)
        free[best] = False
        newly = graph.indices[graph.indptr[best] : graph.indptr[best + 1]]
        newly = newly[uncovered[newly]]
        uncovered[newly] = False
        gain -= np.asarray(graph[newly].sum(axis=0)).ravel().astype(gain.dtype)  # the graph is symmetric
    return np.asarray(picked, dtype=np.int64)


def select(
    strategy: str,
    n: int,
    seed: int,
    labels: np.ndarray | None = None,
    features: Callable[[], np.ndarray] | None = None,
    rounds: int = 4,
    seed_fraction: float = 0.25,
    n_classes: int | None = None,
) -> np.ndarray:
    """``n`` pool positions chosen by the registered ``strategy`` (:func:`raystudy.registry.strategies`).

    Args:
        strategy: random, balanced, coreset, uncertainty or a registered one.
        n: how many to pick.
        seed: the selection's seed.
        labels: (P,) pool categories (random and balanced read them all; uncertainty only
            through a :class:`SelectedLabels` view of them).
        features: computes the (P, D) pool embeddings (coreset, uncertainty), called once.
        rounds, seed_fraction: the uncertainty strategy's knobs.
        n_classes: the number of categories (probcover's k-means); None: those among ``labels``.

    Example:
        >>> select("balanced", 2, 0, labels=np.array([0, 0, 0, 1])).size
        2
    """
    try:
        spec = registry.get_strategy(strategy)
    except KeyError as err:
        raise ValueError(err.args[0]) from None
    if n_classes is None:
        n_classes = len(np.unique(labels)) if labels is not None else 1
    return spec.pick(
        n, seed, labels=labels, features=features, rounds=rounds, seed_fraction=seed_fraction, n_classes=n_classes
    )


def _pick_random(n: int, seed: int, labels: np.ndarray, **_: object) -> np.ndarray:
    return select_random(labels, n, seed)


def _pick_balanced(n: int, seed: int, labels: np.ndarray, **_: object) -> np.ndarray:
    return select_balanced(labels, n, seed)


def _pick_coreset(n: int, seed: int, features: Callable[[], np.ndarray], **_: object) -> np.ndarray:
    return select_coreset(features(), n, seed)


def _pick_uncertainty(
    n: int,
    seed: int,
    labels: np.ndarray,
    features: Callable[[], np.ndarray],
    rounds: int,
    seed_fraction: float,
    **_: object,
) -> np.ndarray:
    return select_uncertainty(features(), n, SelectedLabels(labels), seed, rounds, seed_fraction)


def _pick_typiclust(n: int, seed: int, features: Callable[[], np.ndarray], **_: object) -> np.ndarray:
    return select_typiclust(features(), n, seed)


def _pick_probcover(n: int, seed: int, features: Callable[[], np.ndarray], n_classes: int, **_: object) -> np.ndarray:
    return select_probcover(features(), n, seed, n_classes)


for _spec in (
    registry.StrategySpec("random", _pick_random, False, "every pool image's category (stratified)", order=0),
    registry.StrategySpec("balanced", _pick_balanced, False, "every pool image's category", order=1),
    registry.StrategySpec("coreset", _pick_coreset, True, "none", order=2),
    registry.StrategySpec("uncertainty", _pick_uncertainty, True, "only the images it has selected", order=3),
    registry.StrategySpec("typiclust", _pick_typiclust, True, "none", order=4),
    registry.StrategySpec("probcover", _pick_probcover, True, "none (the number of categories only)", order=5),
):
    registry.register_strategy(_spec)
