"""Shared pieces of the metric families: what a metric needs, and the context it reads.

A metric object has a ``name``, a ``requires`` (``Requires``) and ``__call__(ctx) -> float``.
``evaluation.compute_metrics`` collects the ``requires`` of all requested metrics, runs
ONE exact k-NN search (serving every geometry) and ONE k-means per geometry, and hands every metric the same
``Context``.

Conventions shared by all neighbour-based metrics (they follow pytorch-metric-learning's
``AccuracyCalculator``; self retrieval is its call with the reference set equal to the query set):

* neighbour metrics rank the gallery for each query; by default the query set and the gallery are both
  every evaluated item (self retrieval), else the split ``compute_metrics(..., queries=, gallery=)`` gives;
* the query itself is never among its neighbours (its own index is dropped, so exact
  duplicates of it still count as neighbours);
* R, the query's relevant items, is the number of gallery items of its class, less one when the query is
  itself in the gallery;
* a query with R = 0 (a "lone" query: no relevant item exists) is left out of the average; if every query
  is lone the metric is NaN.

Clustering (NMI, F1), the set statistics (dists, rho_spectrum, norms) and the classifier's metrics use every
item of the set, whatever the split.
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
    k: neighbours needed per query (the query itself excluded).
    r_offset: if not None, also needs ``R_max + r_offset`` neighbours, with R_max = the
        largest R over the queries (MAP@R and R-precision read the first R of each query).
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

    def neighbours_needed(self, n_candidates: int, max_relevant: int) -> int:
        """Neighbours to search for: ``k``, or ``max_relevant + r_offset`` if larger, capped at ``n_candidates``
        (the neighbours every query can have)."""
        k = self.k
        if self.r_offset is not None:
            k = max(k, max_relevant + self.r_offset)
        return max(0, min(k, n_candidates))


def item_indices(items, n: int) -> np.ndarray:
    """None (every item), a boolean mask [n] or item indices -> sorted distinct int64 item indices."""
    if items is None:
        return np.arange(n)
    items = np.asarray(items).reshape(-1)
    if items.dtype == bool:
        return np.flatnonzero(items)
    return np.unique(items.astype(np.int64))


class Context:
    """Inputs shared by every metric of one ``compute_metrics`` call.

    The evaluated set has N items. Neighbour metrics rank the ``gallery`` items for every item of ``queries``
    (both default to every item: self retrieval); a query never retrieves itself.

    embeddings: float32 [N, D] raw embeddings of every item (numpy).
    labels: int64 [N] of every item.
    queries, gallery: sorted int64 item indices [Q] and [G].
    neighbours: geometry -> int [Q, k] item ids of each query's nearest gallery items, nearest first, the query
        itself excluded.
    clusters: geometry -> int [N] k-means cluster ids of every item.
    views: view name -> what the loss gave (see ``VIEWS``), per item; absent when it gave nothing.
    sampled: one ``Context`` per sampled embedding set (``views["samples"]``), same split, its own neighbours.
    """

    def __init__(
        self,
        embeddings: np.ndarray,
        labels: np.ndarray,
        neighbours: dict[str, np.ndarray] | None = None,
        clusters: dict[str, np.ndarray] | None = None,
        *,
        queries=None,
        gallery=None,
    ):
        self.embeddings = embeddings
        self.labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        n = len(self.labels)
        self.queries, self.gallery = item_indices(queries, n), item_indices(gallery, n)
        self.neighbours = neighbours or {}
        self.clusters = clusters or {}
        self.views: dict[str, object] = {}
        self.sampled: list[Context] = []
        self._hits: dict[str, np.ndarray] = {}

    @cached_property
    def query_labels(self) -> np.ndarray:
        """[Q] labels of the queries."""
        return self.labels[self.queries]

    @cached_property
    def query_in_gallery(self) -> np.ndarray:
        """[Q] bool: the query is itself a gallery item (and so cannot retrieve itself)."""
        member = np.zeros(len(self.labels), dtype=bool)
        member[self.gallery] = True
        return member[self.queries]

    @cached_property
    def n_relevant(self) -> np.ndarray:
        """[Q] R: gallery items of the query's class, the query itself not counted."""
        _, item_class = np.unique(self.labels, return_inverse=True)
        in_gallery = np.bincount(item_class[self.gallery], minlength=item_class.max(initial=-1) + 1)
        return in_gallery[item_class[self.queries]] - self.query_in_gallery

    @cached_property
    def norms(self) -> np.ndarray:
        """[N] float64 embedding norms of every item (the certainty the uncertainty metrics read)."""
        return np.linalg.norm(np.asarray(self.embeddings, dtype=np.float64), axis=1)

    @cached_property
    def not_lone(self) -> np.ndarray:
        """[Q] bool: queries with at least one relevant gallery item."""
        return self.n_relevant > 0

    @property
    def n_candidates(self) -> int:
        """The most neighbours every query can have: the gallery size, less one if some query is in it."""
        return max(0, len(self.gallery) - int(self.query_in_gallery.any()))

    def hits(self, geometry: str) -> np.ndarray:
        """bool [Q, k]: neighbour j of query i has the query's label (computed once, row chunks)."""
        if geometry not in self._hits:
            ids, y = self.neighbours[geometry], self.query_labels
            out = np.empty(ids.shape, dtype=bool)
            step = max(1, (1 << 22) // max(1, ids.shape[1]))  # bounds the int64 label temporaries
            for s in range(0, len(ids), step):
                out[s : s + step] = self.labels[ids[s : s + step]] == y[s : s + step, None]
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

    hits: bool [Q, K]; length: [Q] ranks considered; norm: [Q] positive normalisers.
    """
    q = len(hits)
    k = min(hits.shape[1], int(length.max(initial=0)))  # ranks past every query's length add nothing
    out = np.zeros(q, dtype=np.float64)
    ranks = np.arange(1, k + 1, dtype=np.float64)
    for s in range(0, q, chunk):
        rel = hits[s : s + chunk, :k] & (ranks[None, :] <= length[s : s + chunk, None])
        precision = np.cumsum(rel, axis=1, dtype=np.float64) / ranks
        out[s : s + chunk] = (precision * rel).sum(axis=1) / norm[s : s + chunk]
    return out


def mean_over_queries(values: np.ndarray) -> float:
    """Mean of per-query values (NaN if there are none, i.e. every query is lone)."""
    return float(values.mean()) if values.size else float("nan")
