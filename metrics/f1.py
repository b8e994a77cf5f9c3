"""Clustering F1 (pair counting): ``f1`` (Euclidean k-means) and ``c_f1`` (spherical k-means)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics.cluster import contingency_matrix

from metrics import register
from metrics._base import Context, Metric, Requires

PAPER = "Manning et al. 2008, Introduction to Information Retrieval (pair-counting F); Roth et al. 2020 (protocol)"


def _pairs(counts: np.ndarray) -> float:
    counts = np.asarray(counts, dtype=np.float64)
    return float((counts * (counts - 1) / 2).sum())


@register("f1", paper=PAPER, geometry="euclidean", form="f1")
@register("c_f1", paper=PAPER, geometry="cosine", form="c_f1")
class F1(Metric):
    """Pair-counting F1 of the k-means clustering against the labels, as in the Roth suite.

    Over all unordered pairs of items: TP = pairs in the same class and the same cluster,
    P = TP / (pairs in the same cluster), R = TP / (pairs in the same class),
    F1 = 2PR / (P + R) = 2 TP / (same-cluster pairs + same-class pairs). Computed from the
    sparse contingency matrix n_ij: TP = sum_ij C(n_ij, 2). (The Roth suite relabels each
    cluster by its most central item first; that is a renaming and leaves F1 unchanged.)
    NaN when no pair shares a class or a cluster.
    """

    def __init__(self, name: str, geometry: str, arg: None = None):
        self.name = name
        self.requires = Requires(geometry=geometry, kmeans=True)

    def __call__(self, ctx: Context) -> float:
        table = contingency_matrix(ctx.labels, ctx.clusters[self.requires.geometry], sparse=True)
        tp = _pairs(table.data)
        same_class = _pairs(np.asarray(table.sum(axis=1)).ravel())
        same_cluster = _pairs(np.asarray(table.sum(axis=0)).ravel())
        denominator = same_class + same_cluster
        return 2.0 * tp / denominator if denominator > 0 else float("nan")
