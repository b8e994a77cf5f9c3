"""Fixtures of the metric tests.

* ``naive_ranking(x, geometry)``: the naive full ranking (float64 scipy ``cdist``): row i holds the other
  indices sorted by squared Euclidean (``"euclidean"``) or cosine (``"cosine"``) distance, self removed.
* ``naive_split_ranking(x, queries, gallery, geometry)``: the same for a query/gallery split: row i holds the
  gallery item indices sorted by distance to item ``queries[i]``, that item itself removed.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist


def _ranking(x, geometry: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    d = cdist(x, x, {"euclidean": "sqeuclidean", "cosine": "cosine"}[geometry])
    np.fill_diagonal(d, np.inf)
    return np.argsort(d, axis=1, kind="stable")[:, :-1]


def _split_ranking(x, queries, gallery, geometry: str) -> list[np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    queries, gallery = np.asarray(queries), np.asarray(gallery)
    d = cdist(x[queries], x[gallery], {"euclidean": "sqeuclidean", "cosine": "cosine"}[geometry])
    return [gallery[np.argsort(row, kind="stable")][gallery[np.argsort(row, kind="stable")] != q]
            for q, row in zip(queries, d)]  # fmt: skip


@pytest.fixture
def naive_ranking():
    return _ranking


@pytest.fixture
def naive_split_ranking():
    return _split_ranking
