"""Shared pieces of the metric families: what a metric needs, and the context it reads.

A metric object has a ``name``, a ``requires`` (``Requires``) and ``__call__(ctx) -> float``.
``evaluation.compute_metrics`` collects the ``requires`` of all requested metrics, runs
ONE exact k-NN search and ONE k-means per geometry, and hands every metric the same
``Context``.

Conventions shared by all neighbour-based metrics (they follow pytorch-metric-learning's
``AccuracyCalculator`` with the reference set equal to the query set):

* the query itself is never among its neighbours (its own index is dropped, so exact
  duplicates of it still count as neighbours);
* a query whose class has a single member (a "lone" query: no relevant item exists) is
  left out of the average; if every query is lone the metric is NaN.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

GEOMETRIES = ("euclidean", "cosine")  # of the raw embeddings; the evaluation runs one k-NN search per geometry
POINCARE = "poincare"  # neighbours on the loss's Poincare ball (the points come from the "poincare" view)

# What a loss can offer the metrics beyond the raw embeddings ("views" of one split), in the order they are
# computed (a seeded generator is shared, so the order fixes the draws). A metric names the view it needs in
# ``Requires.view``; where the loss or the split cannot give it, the metric is left out of the results.
VIEWS = {
    "probabilities": "class probabilities [N, C] of the loss's classifier (closed-set splits only)",
    "samples": "sampled embedding sets [S, N, d] of a probabilistic loss",
    "poincare": "points [N, d] on the loss's Poincare ball and its curvature c",
    "kappa": "per-image concentrations [N] of a probabilistic loss",
}


@dataclass(frozen=True)
class Requires:
    """Shared inputs a metric needs.

    geometry: 'euclidean' (raw embeddings, L2) or 'cosine' (L2-normalised embeddings),
        the geometry of the neighbours and clusters below; None if neither is needed.
    k: neighbours needed per query (self excluded).
    r_offset: if not None, also needs ``R_max + r_offset`` neighbours, with R_max = the
        largest class size - 1 (MAP@R and R-precision read the first R of each query).
    kmeans: needs k-means cluster ids in ``geometry`` (k = number of classes).
    embeddings: needs the raw embedding matrix.
    view: a key of ``VIEWS`` the metric reads (``ctx.views[view]``). With ``view="samples"`` the geometry, k and
        r_offset apply to each sampled set (``ctx.sampled``, one ``Context`` per set) instead of the raw embeddings.
    """

    geometry: str | None = None
    k: int = 0
    r_offset: int | None = None
    kmeans: bool = False
    embeddings: bool = False
    view: str | None = None

    @property
    def needed_view(self) -> str | None:
        """The view this metric cannot do without (the Poincare geometry needs the ball's points)."""
        return self.view or (POINCARE if self.geometry == POINCARE else None)

    def neighbours_needed(self, n_points: int, max_class_size: int) -> int:
        """Neighbours to search for (self excluded), capped at ``n_points - 1``."""
        k = self.k
        if self.r_offset is not None:
            k = max(k, max_class_size - 1 + self.r_offset)
        return max(0, min(k, n_points - 1))


class Context:
    """Inputs shared by every metric of one ``compute_metrics`` call.

    embeddings: float32 [N, D] raw embeddings (numpy).
    labels: int64 [N].
    neighbours: geometry -> int [N, k] neighbour ids, nearest first, self excluded.
    clusters: geometry -> int [N] k-means cluster ids.
    views: view name -> what the loss gave (see ``VIEWS``); absent when it gave nothing.
    sampled: one ``Context`` per sampled embedding set (``views["samples"]``), with its own neighbours.
    """

    def __init__(
        self,
        embeddings: np.ndarray,
        labels: np.ndarray,
        neighbours: dict[str, np.ndarray] | None = None,
        clusters: dict[str, np.ndarray] | None = None,
    ):
        self.embeddings = embeddings
        self.labels = np.asarray(labels, dtype=np.int64)
        self.neighbours = neighbours or {}
        self.clusters = clusters or {}
        self.views: dict[str, object] = {}
        self.sampled: list[Context] = []
        self._hits: dict[str, np.ndarray] = {}

    @cached_property
    def class_size(self) -> np.ndarray:
        """[N] number of items sharing each query's label (the query included)."""
        _, inverse, counts = np.unique(self.labels, return_inverse=True, return_counts=True)
        return counts[inverse.reshape(-1)]

    @cached_property
    def n_relevant(self) -> np.ndarray:
        """[N] R = class size - 1: items a query can retrieve."""
        return self.class_size - 1

    @cached_property
    def not_lone(self) -> np.ndarray:
        """[N] bool: queries with at least one other item of their class."""
        return self.n_relevant > 0

    def hits(self, geometry: str) -> np.ndarray:
        """bool [N, k]: neighbour j of query i has the query's label (computed once, row chunks)."""
        if geometry not in self._hits:
            ids = self.neighbours[geometry]
            out = np.empty(ids.shape, dtype=bool)
            step = max(1, (1 << 22) // max(1, ids.shape[1]))  # bounds the int64 label temporaries
            for s in range(0, len(ids), step):
                out[s : s + step] = self.labels[ids[s : s + step]] == self.labels[s : s + step, None]
            self._hits[geometry] = out
        return self._hits[geometry]


class Metric:
    """Base of every metric: ``name``, ``requires`` and ``__call__(ctx) -> float``."""

    name: str
    requires: Requires
    # what follows '@' in the name: None (no '@'), "int" (positive int), "nonzero_int", or a tuple of choices
    arg_kind: str | tuple[str, ...] | None = None

    def __call__(self, ctx: Context) -> float:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def average_precision(hits: np.ndarray, length: np.ndarray, norm: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Per-query truncated average precision, row-chunked so memory stays O(chunk * k).

    AP_i = (1/norm_i) sum_{j <= length_i} P_i(j) rel_i(j), P_i(j) = (hits among first j) / j.

    hits: bool [Q, K]; length: [Q] ranks considered (<= K); norm: [Q] positive normalisers.
    """
    q, k = hits.shape
    out = np.zeros(q, dtype=np.float64)
    ranks = np.arange(1, k + 1, dtype=np.float64)
    for s in range(0, q, chunk):
        rel = hits[s : s + chunk] & (ranks[None, :] <= length[s : s + chunk, None])
        precision = np.cumsum(rel, axis=1, dtype=np.float64) / ranks
        out[s : s + chunk] = (precision * rel).sum(axis=1) / norm[s : s + chunk]
    return out


def mean_over_queries(values: np.ndarray) -> float:
    """Mean of per-query values (NaN if there are none, i.e. every query is lone)."""
    return float(values.mean()) if values.size else float("nan")
