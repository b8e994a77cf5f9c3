"""Sampled retrieval of vMF embeddings (Scott et al. 2021, ``compute_vmf_performance_metrics.py``).

They read the ``samples`` view: ``SAMPLED_SETS`` embedding sets, each holding one draw z_i ~ vMF(mu_i, kappa_i)
per image; the evaluation searches the cosine neighbours of every set (self excluded).

* ``vmf_recall@1``: per query and set, whether its nearest neighbour has its label; a query counts as correct when
  more than half of the sets are correct (the original's ``scipy.stats.mode`` over the per-set correctness, whose
  tie goes to False: a tie counts wrong). Averaged over all queries (lone ones included, as the original).

With a query/gallery split (``compute_metrics(..., queries=, gallery=)``) every set ranks its gallery items for
its queries.
* ``vmf_map_at_r``: MAP@R (cosine, lone queries left out) averaged over the sets.
* ``vmf_mean_kappa``: mean per-image concentration (the ``kappa`` view, ||s f(x)|| for vMF softmax).

Example: ``--loss vmf_softmax --storage_metrics vmf_recall@1`` (the paper's selection on CUB200 / CARS196 / SOP).
"""

from __future__ import annotations

import numpy as np

from metrics import register
from metrics._base import Context, Metric, Requires
from metrics.map_at_r import MAPatR

PAPER = "Scott et al. 2021, von Mises-Fisher Loss: An Exploration of Embedding Geometries for Supervised Learning"
SAMPLED_SETS = 10  # embedding sets drawn per split, as the original evaluation


@register("vmf_recall", paper=PAPER, form="vmf_recall@1")
class SampledRecallAt1(Metric):
    """Recall@1 by majority vote over the sampled sets (a tie counts as wrong)."""

    arg_kind = ("1",)

    def __init__(self, name: str, geometry: None = None, arg: str = "1"):
        self.name = name
        self.requires = Requires(view="samples", geometry="cosine", k=1)

    def __call__(self, ctx: Context) -> float:
        correct = np.stack([s.hits("cosine")[:, 0] for s in ctx.sampled])  # [sets, Q]
        return float((2 * correct.sum(axis=0) > len(ctx.sampled)).mean())


@register("vmf_map_at_r", paper=PAPER)
class SampledMAPatR(Metric):
    """MAP@R (cosine) of each sampled set, averaged over the sets."""

    def __init__(self, name: str, geometry: None = None, arg: None = None):
        self.name = name
        self.requires = Requires(view="samples", geometry="cosine", r_offset=0)
        self.per_set = MAPatR("c_map_at_r", "cosine")

    def __call__(self, ctx: Context) -> float:
        return float(np.mean([self.per_set(s) for s in ctx.sampled]))


@register("vmf_mean_kappa", paper=PAPER)
class MeanConcentration(Metric):
    """Mean of the per-image concentrations (``kappa`` view)."""

    def __init__(self, name: str, geometry: None = None, arg: None = None):
        self.name = name
        self.requires = Requires(view="kappa")

    def __call__(self, ctx: Context) -> float:
        return float(np.mean(np.asarray(ctx.views["kappa"], dtype=np.float64)))
