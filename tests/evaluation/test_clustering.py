"""evaluation/clustering.py without faiss: the torch k-means, checked with sklearn (NMI on separated blobs, the
objective of sklearn's KMeans). The faiss path is checked with the metrics (tests/metrics)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import normalized_mutual_info_score

from evaluation import clustering


@pytest.fixture
def no_faiss(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # ``import faiss`` raises ImportError
    monkeypatch.setattr(clustering, "_warned", False)


def inertia(x: np.ndarray, ids: np.ndarray) -> float:
    return float(sum(((x[ids == c] - x[ids == c].mean(0)) ** 2).sum() for c in np.unique(ids)))


def test_separated_blobs_are_found_without_faiss(no_faiss):
    x, y = make_blobs(n_samples=300, centers=6, n_features=8, cluster_std=0.3, random_state=0)
    with pytest.warns(UserWarning, match="faiss is not installed"):
        ids = clustering.kmeans(x.astype(np.float32), 6, seed=0)
    assert ids.shape == (300,) and ids.dtype == np.int64 and set(ids) == set(range(6))
    assert normalized_mutual_info_score(y, ids) == pytest.approx(1.0)


def test_torch_kmeans_matches_sklearns_objective_and_is_seeded(no_faiss):
    x, _ = make_blobs(n_samples=400, centers=10, n_features=16, cluster_std=2.0, random_state=1)
    x = x.astype(np.float32)
    with pytest.warns(UserWarning):
        ids = clustering.kmeans(x, 10, seed=3)
    assert np.array_equal(ids, clustering.kmeans(x, 10, seed=3))  # warned once; same seed, same clusters
    reference = KMeans(10, n_init=1, max_iter=clustering.N_ITER, random_state=0).fit(x)
    assert inertia(x, ids) <= 1.1 * reference.inertia_  # a local optimum as good as sklearn's single run


def test_torch_spherical_kmeans_clusters_directions(no_faiss):
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(4, 5))
    y = np.repeat(np.arange(4), 50)
    x = (directions[y] + 0.05 * rng.normal(size=(200, 5))) * rng.uniform(0.1, 10, size=(200, 1))  # norms vary
    with pytest.warns(UserWarning):
        ids = clustering.kmeans(x.astype(np.float32), 4, metric="cosine", seed=0)
    assert normalized_mutual_info_score(y, ids) > 0.95
