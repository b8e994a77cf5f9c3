"""Negatives drawn from a fixed distance distribution (the Roth et al. 2020 suite's ``parametric``)."""

from __future__ import annotations

import numpy as np
import torch

from batch_mining import register
from batch_mining._base import Miner, label_masks, pick
from utilities.distances import distance_matrix
from utilities.errors import UserError
from utilities.flag_types import finite_float, positive_int

MODES = ("uniform", "hards", "semihards", "veryhards")


def add_args(parser) -> None:
    parser.add_argument(
        "--miner_parametric_mode",
        default="uniform",
        choices=MODES,
        help="parametric: target distribution of anchor-negative distances",
    )
    parser.add_argument(
        "--miner_parametric_n_support",
        default=100,
        type=positive_int(),
        help="parametric: number of support points (n - 1 histogram bins) on the distance range",
    )
    parser.add_argument(
        "--miner_parametric_support_lim",
        default=[0.0, 2.0],
        nargs=2,
        type=finite_float(),
        help="parametric: distance range [low high] of the support; negatives outside it are not drawn",
    )


def bin_weights(mode: str, centers: np.ndarray) -> np.ndarray:
    """Normalised sampling mass per distance bin (bins given by their centres)."""
    if mode == "uniform":
        w = np.ones_like(centers)
    elif mode == "hards":
        w = (centers <= 0.5).astype(float)
    elif mode == "semihards":
        w = ((centers >= 0.3) & (centers <= 0.7)).astype(float)
    elif mode == "veryhards":
        w = (centers <= 0.3).astype(float)
    else:
        raise UserError(f"--miner_parametric_mode {mode} is unknown; choose one of: {', '.join(MODES)}")
    w = np.clip(w, 1e-15, 1.0)  # as the original: every bin keeps a tiny mass
    return w / w.sum()


@register(
    "parametric",
    paper="Roth et al. 2020, Revisiting Training Strategies and Generalization Performance in DML",
    flags="--miner_parametric_mode, --miner_parametric_n_support, --miner_parametric_support_lim",
)
class ParametricMiner(Miner):
    """One triplet per anchor with a positive and a negative: a uniformly random positive,
    and a negative drawn with probability proportional to w(bin(d_an)), w a fixed
    distribution over n_support - 1 equal bins of [low, high] (Euclidean d):

    * uniform: w = 1;  hards: w = 1 for d <= 0.5;  semihards: 0.3 <= d <= 0.7;
      veryhards: d <= 0.3 (bins by their centre; other bins keep mass 1e-15).

    Negatives outside [low, high] get probability 0; an anchor with no negative inside
    falls back to a uniform negative. Fixes of the Roth suite's version: its flags were
    never declared, ``semihards`` stopped in an IPython shell, and its out-of-range test
    (``d < low AND d > high``) never fired.
    """

    def __init__(self, opt):
        super().__init__(opt)
        self.mode = str(opt.miner_parametric_mode)
        n_support = int(opt.miner_parametric_n_support)
        low, high = (float(v) for v in opt.miner_parametric_support_lim)
        if n_support < 2 or not high > low:
            raise UserError("--miner_parametric_n_support must be >= 2 and --miner_parametric_support_lim low < high")
        self.low, self.high = low, high
        self.support = torch.linspace(low, high, n_support, dtype=torch.float64)
        centers = (self.support[1:] + self.support[:-1]).numpy() / 2
        self.bin_w = torch.as_tensor(bin_weights(self.mode, centers))

    def negative_weights(self, d: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """Unnormalised probability ``[A, B]`` of each negative given anchor distances ``d``."""
        n_bins = len(self.bin_w)
        # Equal-width bins: bin k holds support[k] <= d < support[k+1] (the last one includes high).
        bins = ((d - self.low) / (self.high - self.low) * n_bins).floor().clamp(0, n_bins - 1).long()
        w = self.bin_w[bins]
        inside = (d >= self.low) & (d <= self.high)
        w = torch.where(neg & inside, w, torch.zeros_like(w))
        return torch.where(w.sum(dim=1, keepdim=True) > 0, w, neg.double())

    def mine(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        pos, neg = label_masks(y)
        anchors = torch.nonzero(pos.any(dim=1) & neg.any(dim=1)).squeeze(1)
        if len(anchors) == 0:
            return torch.zeros(0, 3, dtype=torch.long)
        d = distance_matrix(x.double())[anchors]
        w = self.negative_weights(d, neg[anchors])
        n = torch.multinomial(w, 1, generator=self.generator).squeeze(1)
        p = pick(pos[anchors], self.generator)
        return torch.stack([anchors, p, n], dim=1)
