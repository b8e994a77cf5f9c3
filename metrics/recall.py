"""Recall@k (DML hit rate): the Roth suite's ``e_recall@k``, the cosine ``c_recall@k`` and ``poincare_recall@k``."""

from __future__ import annotations

import numpy as np

from metrics import register
from metrics._base import Context, Metric, Requires, mean_over_queries

PAPER = "Jegou et al. 2011, Product Quantization for Nearest Neighbor Search (Recall@k as used in DML)"


@register("e_recall", paper=PAPER, geometry="euclidean", form="e_recall@<k>")
@register("c_recall", paper=PAPER, geometry="cosine", form="c_recall@<k>")
@register("poincare_recall", paper=PAPER, geometry="poincare", form="poincare_recall@<k>")
class Recall(Metric):
    """Recall@k = share of queries with at least one same-class item among their k nearest neighbours.

    ``e_recall`` ranks by Euclidean distance on the raw embeddings, ``c_recall`` by cosine
    similarity (L2-normalised embeddings), ``poincare_recall`` by the Poincare distance on the
    loss's ball (``hyperbolic_softmax``: the vMF paper's hyperbolic retrieval). Self excluded; lone queries (class of size 1)
    left out, as pytorch-metric-learning's ``precision_at_1`` (equal to Recall@1).
    """

    arg_kind = "int"

    def __init__(self, name: str, geometry: str, k: int):
        self.name, self.k = name, k
        self.requires = Requires(geometry=geometry, k=k)

    def __call__(self, ctx: Context) -> float:
        hits = ctx.hits(self.requires.geometry)[:, : self.k]
        return mean_over_queries(np.any(hits, axis=1)[ctx.not_lone].astype(np.float64))
