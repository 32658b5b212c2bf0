import numpy as np
import torch

from raystudy.training.finetune import epoch_order, log_prior
from raystudy.training.probes import knn_accuracy, linear_probe_accuracy, tsne_2d


def clusters(n_per=30, d=8, seed=0):
    rng = np.random.default_rng(seed)
    centers = np.eye(3, d) * 5
    x = np.concatenate([c + rng.normal(0, 0.5, (n_per, d)) for c in centers]).astype(np.float32)
    y = np.repeat(np.arange(3), n_per)
    return x, y


def test_knn_separates_clusters_and_is_chance_on_noise():
    x, y = clusters()
    xt, yt = clusters(seed=1)
    assert knn_accuracy(x, y, xt, yt, k=5) == 1.0
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(600, 8)).astype(np.float32)
    labels = rng.integers(0, 3, 600)
    acc = knn_accuracy(noise[:300], labels[:300], noise[300:], labels[300:], k=5)
    assert 0.2 < acc < 0.5


def test_knn_weighted_vote_by_hand():
    train = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]], dtype=np.float32)
    labels = np.array([0, 0, 1])
    # the query is closest to class 1's single point but class 0 has two near votes
    q = np.array([[0.6, 0.8]], dtype=np.float32)
    assert knn_accuracy(train, labels, q, np.array([1]), k=1) == 1.0
    assert knn_accuracy(train, labels, q, np.array([0]), k=3, temperature=10.0) == 1.0


def test_linear_probe_learns_clusters():
    x, y = clusters()
    xt, yt = clusters(seed=2)
    assert linear_probe_accuracy(x, y, xt, yt) == 1.0


def test_tsne_shape_and_small_inputs():
    x, _ = clusters(n_per=10)
    assert tsne_2d(x).shape == (30, 2)
    assert tsne_2d(x[:2]).shape == (2, 2)


def test_balanced_order_equalizes_classes():
    labels = np.array([0] * 900 + [1] * 100)
    rng = np.random.default_rng(0)
    plain = epoch_order(labels, rng, balanced=False)
    assert sorted(plain.tolist()) == list(range(1000))
    draws = np.concatenate([epoch_order(labels, rng, balanced=True) for _ in range(5)])
    share = (labels[draws] == 1).mean()
    assert 0.45 < share < 0.55


def test_log_prior():
    lp = log_prior(np.array([0, 0, 0, 1]), 3)
    assert torch.allclose(lp.exp().sum(), torch.tensor(1.0), atol=1e-5)
    assert lp[0] > lp[1] > lp[2]
