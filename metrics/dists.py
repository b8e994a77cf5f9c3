"""Roth suite's embedding-space distance statistics: ``dists@intra``, ``dists@inter``, ``dists@intra_over_inter``."""

from __future__ import annotations

import numpy as np

from metrics import register
from metrics._base import Context, Metric, Requires
from utilities.distances import l2_normalize

PAPER = "Roth et al. 2020, Revisiting Training Strategies and Generalization Performance in Deep Metric Learning"
MODES = ("intra", "inter", "intra_over_inter")


def _mean_offdiagonal_cosine_distance(unit_sum_sq: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Mean of 1 - u_i.u_j over ordered pairs i != j of n unit vectors with ||sum u||^2 given."""
    return 1.0 - (unit_sum_sq - n) / (n * n - n)


def intra_class_distance(x: np.ndarray, labels: np.ndarray) -> float:
    """Mean over classes with >= 2 items of the mean pairwise cosine distance within the class."""
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    sums = np.zeros((len(counts), x.shape[1]))
    np.add.at(sums, inverse.reshape(-1), l2_normalize(x.astype(np.float64)))
    keep = counts > 1
    per_class = _mean_offdiagonal_cosine_distance((sums[keep] ** 2).sum(1), counts[keep].astype(np.float64))
    return float(per_class.mean()) if per_class.size else float("nan")


def inter_class_distance(x: np.ndarray, labels: np.ndarray) -> float:
    """Mean pairwise cosine distance between the (raw) class means."""
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    means = np.zeros((len(counts), x.shape[1]))
    np.add.at(means, inverse.reshape(-1), x.astype(np.float64))
    c = float(len(counts))
    if c < 2:
        return float("nan")
    s = l2_normalize(means).sum(0)
    return float(_mean_offdiagonal_cosine_distance(s @ s, c))


@register("dists", paper=PAPER, form="dists@{" + ",".join(MODES) + "}")
class Dists(Metric):
    """Cosine-distance statistics of the embedding space (Roth et al. 2020).

    intra = mean over classes of the mean pairwise cosine distance 1 - cos(x_i, x_j) over
    pairs i != j of the class; classes of size 1 have no pair and are skipped (the Roth code
    meant to fill them with the largest class value, but its fill line fails on current numpy).
    inter = mean over pairs of distinct classes of the cosine distance between class means.
    intra_over_inter = intra / max(inter, 1e-8). Vectorised via ||sum of unit vectors||^2.
    """

    arg_kind = MODES

    def __init__(self, name: str, geometry: None, arg: str):
        self.name, self.mode = name, arg
        self.requires = Requires(embeddings=True)

    def __call__(self, ctx: Context) -> float:
        x, y = ctx.embeddings, ctx.labels
        if self.mode == "intra":
            return intra_class_distance(x, y)
        if self.mode == "inter":
            return inter_class_distance(x, y)
        return intra_class_distance(x, y) / max(inter_class_distance(x, y), 1e-8)
