"""Contrastive loss on mined pairs (Hadsell et al. 2006; the Roth et al. 2020 suite's form)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from criteria import register
from criteria._base import Criterion
from criteria._common import TUPLE_OUTPUTS, mine_triplets, zero_loss
from utilities.distances import pair_distance
from utilities.flag_types import non_negative_float


def add_args(parser) -> None:
    parser.add_argument(
        "--loss_contrastive_pos_margin",
        default=0.0,
        type=non_negative_float(),
        help="positive pairs are pulled until their distance is below this",
    )
    parser.add_argument("--loss_contrastive_neg_margin", default=1.0, type=non_negative_float(),
                        help="negative pairs are pushed until their distance exceeds this")  # fmt: skip


@register(
    "contrastive",
    paper="Hadsell et al. 2006, Dimensionality Reduction by Learning an Invariant Mapping",
    flags="--loss_contrastive_pos_margin, --loss_contrastive_neg_margin",
)
class Contrastive(Criterion):
    """L = mean_{(a,p)} relu(d_ap - m_pos) + mean_{(a,n)} relu(m_neg - d_an).

    Pairs come from the mined triplets (a, p, n): (a, p) positive, (a, n) negative, each
    mean over all mined pairs. Plain (not squared) Euclidean distances, as in the Roth
    suite. Expects L2-normalised embeddings (a ``_normalize`` architecture). Takes the triplet
    miners and, as every tuple loss of the Roth suite, its regularising ones (``rho_distance``,
    ``intra_random``, ``random_distance``), whose "negative" may share the anchor's class.
    """

    accepts = TUPLE_OUTPUTS
    default_miner = "distance"

    def __init__(self, opt, batchminer=None, n_classes=None):
        super().__init__(opt, batchminer, n_classes)
        self.pos_margin = float(opt.loss_contrastive_pos_margin)
        self.neg_margin = float(opt.loss_contrastive_neg_margin)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, triplets=None) -> torch.Tensor:
        t = mine_triplets(self, embeddings, labels, triplets)
        if len(t) == 0:
            return zero_loss(embeddings)
        d_ap = pair_distance(embeddings, t[:, 0], t[:, 1])
        d_an = pair_distance(embeddings, t[:, 0], t[:, 2])
        return F.relu(d_ap - self.pos_margin).mean() + F.relu(self.neg_margin - d_an).mean()
