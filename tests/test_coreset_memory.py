"""Greedy k-center (``select_coreset``) in bounded memory: squared distances in float32 blocks."""

from __future__ import annotations

import tracemalloc

import numpy as np

from raystudy.selection import select_coreset


def test_coreset_picks_the_point_farthest_from_the_labeled_references():
    pts = np.array([[0.0, 0.0], [3.0, 4.0], [-1.0, 0.0], [0.0, 9.0], [2.0, 2.0]])
    refs = np.array([[0.0, 0.0], [0.0, 1.0]])
    # nearest reference: 0, sqrt 18 (to (0, 1)), 1, 8, sqrt 5: (0, 9) first; then (3, 4) (5 from (0, 9)) ...
    assert select_coreset(pts, 2, seed=0, already=refs, normalise=False).tolist() == [3, 1]
    # ... then (2, 2) (sqrt 5 from (0, 0), sqrt 5 from (3, 4)), then (-1, 0) (1 from (0, 0))
    assert select_coreset(pts, 5, seed=0, already=refs, normalise=False).tolist() == [3, 1, 4, 2, 0]
    # equal distances: drawn by the seeded generator, never by pool order (issue 24); the same seed, the same pick
    tied = np.array([[0.0], [2.0], [-2.0]])
    picks = {select_coreset(tied, 2, seed=s, start=0, normalise=False)[1] for s in range(20)}
    assert picks == {1, 2}
    assert (
        select_coreset(tied, 2, seed=3, start=0, normalise=False).tolist()
        == select_coreset(tied, 2, seed=3, start=0, normalise=False).tolist()
    )


def test_coreset_of_a_large_pool_stays_under_one_gigabyte():
    # 20,000 x 2,048 (ResNet-50 features): the old (P, 1024, D) float64 difference block needed ~335 GB
    tracemalloc.start()
    try:
        rng = np.random.default_rng(0)
        pool = rng.standard_normal((20_000, 2_048), dtype=np.float32)  # 164 MB, counted too
        refs = rng.standard_normal((3, 2_048), dtype=np.float32)
        pool[123] = -4 * refs.mean(axis=0)  # opposite the references: the farthest in cosine geometry
        picked = select_coreset(pool, 5, seed=0, already=refs)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(set(picked.tolist())) == 5 and picked[0] == 123
    print(f"tracemalloc peak {peak / 2**20:.0f} MiB")
    assert peak < 2**30
