"""The Roth suite's ``mAP_lim`` (and cosine ``c_mAP_lim``): AP over the first 1023 neighbours."""

from __future__ import annotations

import numpy as np

from metrics import register
from metrics._base import Context, Metric, Requires, average_precision, mean_over_queries

PAPER = "Roth et al. 2020, Revisiting Training Strategies and Generalization Performance in Deep Metric Learning"
CUTOFF = 1023  # the Roth suite's limit (faiss-GPU's old k <= 1024 with self)


@register("mAP_lim", paper=PAPER, geometry="euclidean", form="mAP_lim")
@register("c_mAP_lim", paper=PAPER, geometry="cosine", form="c_mAP_lim")
class MAPLim(Metric):
    """Roth suite's mAP_lim: (1/n) sum_{i <= K} P(i) rel(i), K = min(1023, neighbours a query can have).

    Kept as the Roth suite defines it for comparability with its logs: n = R + 1 (the class size
    INCLUDING the query in self retrieval), so a perfect ranking scores (n - 1)/n when the class fits in K.
    Prefer ``map_at_r`` or ``mAP_1000``. Self excluded; lone queries left out.
    """

    def __init__(self, name: str, geometry: str, arg: None = None):
        self.name = name
        self.requires = Requires(geometry=geometry, k=CUTOFF)

    def __call__(self, ctx: Context) -> float:
        keep = ctx.not_lone
        hits = ctx.hits(self.requires.geometry)[keep, :CUTOFF]  # more may be stored for other metrics
        norm = (ctx.n_relevant[keep] + 1).astype(np.float64)
        return mean_over_queries(average_precision(hits, np.full(len(hits), hits.shape[1]), norm))
