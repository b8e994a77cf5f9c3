"""Distance-weighted negative sampling (Wu et al. 2017), as in the Roth et al. 2020 suite."""

from __future__ import annotations

import torch

from batch_mining import register
from batch_mining._base import Miner, label_masks, pick, pick_weighted
from utilities.distances import distance_matrix
from utilities.flag_types import non_negative_float


def add_args(parser) -> None:
    parser.add_argument(
        "--miner_distance_lower_cutoff",
        default=0.5,
        type=non_negative_float(),
        help="distances below this are raised to it (equal weight for very close negatives)",
    )
    parser.add_argument("--miner_distance_upper_cutoff", default=1.4, type=non_negative_float(),
                        help="negatives at or beyond this distance are not sampled (unless no negative is closer)")  # fmt: skip


def log_inverse_sphere_density(d: torch.Tensor, dim: int) -> torch.Tensor:
    """log 1/q(d) up to a constant, q(d) ~ d^(dim-2) (1 - d^2/4)^((dim-3)/2) the density of
    pairwise distances of points uniform on the unit sphere S^(dim-1).
    """
    one_minus = (1.0 - 0.25 * d.pow(2)).clamp_min(1e-8)  # d >= 2 only happens off the unit sphere
    return (2.0 - dim) * torch.log(d) - (dim - 3) / 2.0 * torch.log(one_minus)


@register(
    "distance",
    paper="Wu et al. 2017, Sampling Matters in Deep Embedding Learning",
    flags="--miner_distance_lower_cutoff, --miner_distance_upper_cutoff",
)
class DistanceMiner(Miner):
    """One triplet per anchor that has a positive and a negative in the batch, as the Roth
    suite samples: a uniformly random positive, and ONE negative n drawn with probability
    proportional to 1/q(max(d_an, lower_cutoff)) among the negatives with d_an <
    upper_cutoff (Euclidean d, dim = embedding size; meant for unit-norm embeddings).

    The upper cutoff follows Wu et al.'s code; the Roth suite left it commented out. Where
    an anchor has no negative under the cutoff, all its negatives are weighted (the Roth
    suite's behaviour); ``--miner_distance_upper_cutoff 4`` reproduces the Roth suite for
    unit-norm embeddings, whose distances never exceed 2.
    """

    def __init__(self, opt):
        super().__init__(opt)
        self.lower_cutoff = float(opt.miner_distance_lower_cutoff)
        self.upper_cutoff = float(opt.miner_distance_upper_cutoff)

    def negative_probabilities(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``[B, B]`` sampling probabilities of each negative per anchor (rows without negatives are 0)."""
        _, neg = label_masks(y)
        d = distance_matrix(x).double().clamp_min(self.lower_cutoff)
        allowed = neg & (d < self.upper_cutoff)
        allowed = torch.where(allowed.any(dim=1, keepdim=True), allowed, neg)
        log_w = log_inverse_sphere_density(d, x.shape[1]).masked_fill(~allowed, float("-inf"))
        # softmax by hand: rows whose weights are all masked must come out 0, not NaN
        w = torch.exp(log_w - log_w.amax(dim=1, keepdim=True))
        return torch.nan_to_num(w / w.sum(dim=1, keepdim=True), nan=0.0)  # rows without negatives: 0

    def mine(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        pos, neg = label_masks(y)
        anchors = torch.nonzero(pos.any(dim=1) & neg.any(dim=1)).squeeze(1)
        probs = self.negative_probabilities(x, y)[anchors]
        n = pick_weighted(probs, self.generator) if len(anchors) else anchors
        p = pick(pos[anchors], self.generator)
        return torch.stack([anchors, p, n], dim=1)
