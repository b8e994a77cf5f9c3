"""Triplet loss on the signal-to-noise-ratio distance (Yuan et al. 2019), the Roth et al. 2020 suite's form."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from criteria import register
from criteria._base import Criterion
from criteria._common import TUPLE_OUTPUTS, mine_triplets, zero_loss
from utilities.flag_types import non_negative_float


def add_args(parser) -> None:
    parser.add_argument("--loss_snr_margin", default=0.2, type=non_negative_float(), help="triplet margin on SNR distances")
    parser.add_argument("--loss_snr_reg_lambda", default=0.005, type=non_negative_float(),
                        help="weight of the zero-mean regulariser mean_i |sum_d x_id| (off with the distance miner, as in the Roth suite)")  # fmt: skip


# Miners with which the zero-mean regulariser is off, as in the Roth suite (whose random_distance
# miner sets ``name = 'distance'``).
REG_OFF_MINERS = ("distance", "random_distance")


def snr_distance(anchor: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """d_S(a, x) = var(x - a) / var(a), variances over the embedding dimensions (the 1/(D-1) cancels)."""
    return torch.var(other - anchor, dim=-1) / torch.var(anchor, dim=-1)


@register(
    "snr",
    paper="Yuan et al. 2019, Signal-to-Noise Ratio: A Robust Distance Metric for Deep Metric Learning",
    flags="--loss_snr_margin, --loss_snr_reg_lambda",
)
class SNR(Criterion):
    """L = sum_t relu(d_S(a, p) - d_S(a, n) + m) / #{t: term > 0} + lambda * mean_i |sum_d x_id|

    over mined triplets t = (a, p, n), d_S the SNR distance (noise variance over anchor-signal
    variance). As the Roth suite: the triplet form, averaged over the non-zero terms (0 when none;
    the Roth code divides 0 by 0 then) and the regulariser switched off with the ``distance`` miner
    and with ``random_distance`` (the Roth suite's ``random_distance`` miner names itself ``distance``).
    Takes the triplet miners and the Roth suite's regularising ones (``REGULARISING_MINERS``).
    The zero-mean regulariser averages over the whole batch, as in the paper; the Roth code
    averages over the mined anchors (the same when each sample anchors one triplet).
    """

    accepts = TUPLE_OUTPUTS
    default_miner = "distance"

    @classmethod
    def miner_margin(cls, opt) -> float:
        return float(opt.loss_snr_margin)

    def __init__(self, opt, batchminer=None, n_classes=None):
        super().__init__(opt, batchminer, n_classes)
        self.margin = float(opt.loss_snr_margin)
        self.reg_lambda = float(opt.loss_snr_reg_lambda)
        if getattr(batchminer, "name", None) in REG_OFF_MINERS:
            self.reg_lambda = 0.0

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, triplets=None) -> torch.Tensor:
        t = mine_triplets(self, embeddings, labels, triplets)
        reg = self.reg_lambda * embeddings.sum(dim=1).abs().mean()
        if len(t) == 0:
            return zero_loss(embeddings) + reg
        a = embeddings[t[:, 0]]
        terms = F.relu(snr_distance(a, embeddings[t[:, 1]]) - snr_distance(a, embeddings[t[:, 2]]) + self.margin)
        return terms.sum() / (terms > 0).sum().clamp_min(1) + reg
