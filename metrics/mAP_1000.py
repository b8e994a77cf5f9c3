"""mAP@1000: ``mAP_1000`` (Euclidean) and ``c_mAP_1000`` (cosine)."""

from __future__ import annotations

import numpy as np

from metrics import register
from metrics._base import Context, Metric, Requires, average_precision, mean_over_queries

PAPER = "Roth et al. 2020, Revisiting Training Strategies and Generalization Performance in Deep Metric Learning"
CUTOFF = 1000


@register("mAP_1000", paper=PAPER, geometry="euclidean", form="mAP_1000")
@register("c_mAP_1000", paper=PAPER, geometry="cosine", form="c_mAP_1000")
class MAP1000(Metric):
    """Average precision over the first K = min(1000, neighbours a query can have) neighbours.

    AP = (1 / min(K, R)) sum_{i <= K} P(i) rel(i), R = the query's relevant gallery items (class
    size - 1 in self retrieval), so a perfect ranking scores 1. (The Roth suite divides by the class size including the query,
    which caps a perfect ranking below 1; we use the standard normaliser.) Self excluded;
    lone queries left out.
    """

    def __init__(self, name: str, geometry: str, arg: None = None):
        self.name = name
        self.requires = Requires(geometry=geometry, k=CUTOFF)

    def __call__(self, ctx: Context) -> float:
        keep = ctx.not_lone
        hits = ctx.hits(self.requires.geometry)[keep, :CUTOFF]  # more may be stored for other metrics
        k = hits.shape[1]
        norm = np.minimum(ctx.n_relevant[keep], k)
        return mean_over_queries(average_precision(hits, np.full(len(hits), k), norm))
