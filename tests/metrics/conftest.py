"""Fixtures of the metric tests.

* ``naive_ranking(x, geometry)``: the naive full ranking (float64 scipy ``cdist``): row i holds the other
  indices sorted by squared Euclidean (``"euclidean"``) or cosine (``"cosine"``) distance, self removed.
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


@pytest.fixture
def naive_ranking():
    return _ranking
