"""R-precision: ``r_precision`` (Euclidean) and ``c_r_precision`` (cosine)."""

from __future__ import annotations

import numpy as np

from metrics import register
from metrics._base import Context, Metric, Requires, mean_over_queries

PAPER = "Musgrave et al. 2020, A Metric Learning Reality Check"


@register("r_precision", paper=PAPER, geometry="euclidean", form="r_precision")
@register("c_r_precision", paper=PAPER, geometry="cosine", form="c_r_precision")
class RPrecision(Metric):
    """R-precision = mean over queries of (same-class items among the first R neighbours) / R.

    R = the query's relevant gallery items (class size - 1 in self retrieval). Self excluded; lone queries (R = 0) left out, as
    pytorch-metric-learning's ``r_precision``.
    """

    def __init__(self, name: str, geometry: str, arg: None = None):
        self.name = name
        self.requires = Requires(geometry=geometry, r_offset=0)

    def __call__(self, ctx: Context) -> float:
        keep = ctx.not_lone
        hits = ctx.hits(self.requires.geometry)[keep]
        r = ctx.n_relevant[keep]
        within_r = np.arange(hits.shape[1])[None, :] < r[:, None]
        return mean_over_queries((hits & within_r).sum(axis=1) / r)
