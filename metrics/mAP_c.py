"""The Roth suite's ``mAP_c`` (and cosine ``c_mAP_c``): AP over the first n neighbours, n = class size."""

from __future__ import annotations

from metrics import register
from metrics._base import Context, Metric, Requires, average_precision, mean_over_queries

PAPER = "Roth et al. 2020, Revisiting Training Strategies and Generalization Performance in Deep Metric Learning"


@register("mAP_c", paper=PAPER, geometry="euclidean", form="mAP_c")
@register("c_mAP_c", paper=PAPER, geometry="cosine", form="c_mAP_c")
class MAPc(Metric):
    """Roth suite's mAP_c: (1/n) sum_{i <= n} P(i) rel(i), n = R + 1 (the class size INCLUDING the query in
    self retrieval).

    Kept as the Roth suite defines it for comparability with its logs: it reads one rank
    past R = n - 1 and divides by n, so it is a slightly deflated MAP@R (a perfect ranking
    scores (n - 1)/n). Prefer ``map_at_r``. Self excluded; lone queries left out.
    """

    def __init__(self, name: str, geometry: str, arg: None = None):
        self.name = name
        self.requires = Requires(geometry=geometry, r_offset=1)

    def __call__(self, ctx: Context) -> float:
        keep = ctx.not_lone
        n = ctx.n_relevant[keep] + 1
        return mean_over_queries(average_precision(ctx.hits(self.requires.geometry)[keep], n, n.astype(float)))
