import numpy as np

from raystudy.data.splits import derive_seed, kfold, make_split, stratified_sample


def labels_for(counts):
    return np.concatenate([np.full(c, i) for i, c in enumerate(counts)])


def test_stratified_sample_keeps_shares_and_is_deterministic():
    labels = labels_for([600, 300, 100])
    a = stratified_sample(labels, 100, seed=1)
    b = stratified_sample(labels, 100, seed=1)
    assert np.array_equal(a, b) and len(set(a)) == 100
    assert np.bincount(labels[a]).tolist() == [60, 30, 10]


def test_paper_protocol_cv_inside_n():
    labels = labels_for([300, 200, 100])
    folds = [make_split(labels, 128, f, 5, "paper", 0, "s") for f in range(5)]
    vals = np.concatenate([s.validation for s in folds])
    assert len(vals) == 128 and len(set(vals)) == 128  # the folds partition the n images
    for s in folds:
        assert len(s.train) + len(s.validation) == 128
        assert not set(s.train) & set(s.validation)
        assert not s.notes


def test_holdout_protocol_validates_on_whole_fold():
    labels = labels_for([300, 200, 100])
    s = make_split(labels, 50, 0, 5, "holdout", 0, "s")
    assert len(s.validation) == 120 and len(s.train) == 50
    assert not set(s.train) & set(s.validation)


def test_same_split_for_every_model_and_seed_dependence():
    labels = labels_for([50, 50])
    a = make_split(labels, 40, 1, 5, "paper", 7, "s")
    b = make_split(labels, 40, 1, 5, "paper", 7, "s")
    c = make_split(labels, 40, 1, 5, "paper", 8, "s")
    assert np.array_equal(a.train, b.train)
    assert not np.array_equal(a.train, c.train)


def test_too_large_size_is_skipped_with_reason():
    labels = labels_for([10, 10])
    reason = make_split(labels, 21, 0, 5, "paper", 0, "tiny")
    assert isinstance(reason, str) and "exceeds the 20 labeled images" in reason


def test_stratification_fallback_is_noted():
    labels = labels_for([30, 2])
    vals, note = kfold(labels, 5, 0)
    assert note and "unstratified" in note
    assert sorted(np.concatenate(vals).tolist()) == list(range(32))


def test_derive_seed_stable():
    assert derive_seed(1, "a", 3) == derive_seed(1, "a", 3) != derive_seed(1, "a", 4)
