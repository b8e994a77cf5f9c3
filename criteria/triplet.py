"""Triplet loss on squared Euclidean distances (the Roth et al. 2020 suite's variant)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from criteria import register
from criteria._base import Criterion
from criteria._common import TUPLE_OUTPUTS, mine_triplets, zero_loss
from utilities.flag_types import non_negative_float


def add_args(parser) -> None:
    parser.add_argument("--loss_triplet_margin", default=0.2, type=non_negative_float(), help="triplet margin (squared distances)")


@register(
    "triplet",
    paper="Schroff et al. 2015, FaceNet; variant of Roth et al. 2020, Revisiting Training Strategies in DML",
    flags="--loss_triplet_margin",
)
class Triplet(Criterion):
    """L = mean_{(a,p,n)} relu(||x_a - x_p||^2 - ||x_a - x_n||^2 + margin).

    As in the Roth suite (whose published numbers use it): SQUARED Euclidean distances,
    averaged over ALL mined triplets, zero-loss ones included (pytorch-metric-learning
    averages over the non-zero ones only). Expects L2-normalised embeddings (a
    ``_normalize`` architecture); it does not normalise them itself.
    """

    accepts = TUPLE_OUTPUTS
    default_miner = "distance"

    def __init__(self, opt, batchminer=None, n_classes=None):
        super().__init__(opt, batchminer, n_classes)
        self.margin = float(opt.loss_triplet_margin)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, triplets=None) -> torch.Tensor:
        t = mine_triplets(self, embeddings, labels, triplets)
        if len(t) == 0:
            return zero_loss(embeddings)
        a, p, n = embeddings[t[:, 0]], embeddings[t[:, 1]], embeddings[t[:, 2]]
        d_ap2 = (a - p).pow(2).sum(-1)
        d_an2 = (a - n).pow(2).sum(-1)
        return F.relu(d_ap2 - d_an2 + self.margin).mean()
