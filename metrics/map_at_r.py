"""MAP@R (Musgrave et al. 2020): ``map_at_r`` (Euclidean), ``c_map_at_r`` (cosine), ``poincare_map_at_r`` (Poincare ball)."""

from __future__ import annotations

from metrics import register
from metrics._base import Context, Metric, Requires, average_precision, mean_over_queries

PAPER = "Musgrave et al. 2020, A Metric Learning Reality Check"


@register("map_at_r", paper=PAPER, geometry="euclidean", form="map_at_r")
@register("c_map_at_r", paper=PAPER, geometry="cosine", form="c_map_at_r")
@register("poincare_map_at_r", paper=PAPER, geometry="poincare", form="poincare_map_at_r")
class MAPatR(Metric):
    """MAP@R = mean over queries of (1/R) sum_{i <= R} P(i) rel(i).

    R = the query's relevant gallery items (class size - 1 in self retrieval), P(i) = precision at rank i, rel(i) = 1
    if the i-th neighbour shares the label. Self excluded; lone queries (R = 0) left out,
    as pytorch-metric-learning's ``mean_average_precision_at_r``.
    """

    def __init__(self, name: str, geometry: str, arg: None = None):
        self.name = name
        self.requires = Requires(geometry=geometry, r_offset=0)

    def __call__(self, ctx: Context) -> float:
        keep = ctx.not_lone
        r = ctx.n_relevant[keep]
        return mean_over_queries(average_precision(ctx.hits(self.requires.geometry)[keep], r, r))
