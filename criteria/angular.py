"""Angular loss combined with N-pair (Wang et al. 2017), as in the Roth et al. 2020 suite."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from criteria import register
from criteria._base import Criterion
from criteria._common import logsumexp_add_one
from criteria._roth_utils import l2_norm_penalty, unpack_npair
from criteria.npair import npair_loss
from utilities.flag_types import Number, non_negative_float


def add_args(parser) -> None:
    parser.add_argument("--loss_angular_alpha", default=45.0, type=Number(float, low=0, high=90, low_open=True, high_open=True), help="angular margin alpha in degrees")
    parser.add_argument(
        "--loss_angular_npair_ang_weight",
        default=2.0,
        type=non_negative_float(),
        help="weight lambda of the angular term relative to the N-pair term",
    )
    parser.add_argument("--loss_angular_npair_l2", default=0.005, type=non_negative_float(),
                        help="weight of the embedding-norm penalty mean_i ||x_i|| (the N-pair term is unnormalised)")  # fmt: skip


def angular_terms(embeddings: torch.Tensor, anchors: torch.Tensor, positives: torch.Tensor, neg_mask: torch.Tensor,
                  tan2: float) -> torch.Tensor:  # fmt: skip
    """Per anchor ``log(1 + sum_n exp(4 tan^2(a) (x_a + x_p)^T x_n - 2 (1 + tan^2(a)) x_a^T x_p))``, ``[N]``,
    on L2-normalised embeddings."""
    x = F.normalize(embeddings, dim=1)
    xa, xp = x[anchors], x[positives]
    f = 4 * tan2 * (xa + xp) @ x.T - 2 * (1 + tan2) * (xa * xp).sum(dim=1, keepdim=True)  # [N, B]
    return logsumexp_add_one(f, neg_mask, dim=1)


@register(
    "angular",
    paper="Wang et al. 2017, Deep Metric Learning with Angular Loss",
    flags="--loss_angular_alpha, --loss_angular_npair_ang_weight, --loss_angular_npair_l2",
)
class Angular(Criterion):
    """L = L_npair + lambda * L_ang + l2 * mean_i ||x_i||  (the paper's N-pair & angular combination, eq. 10):

        L_ang   = mean_a log(1 + sum_{n in N_a} exp(4 tan^2(alpha) (x_a + x_p)^T x_n - 2 (1 + tan^2(alpha)) x_a^T x_p))
        L_npair = mean_a log(1 + sum_{n in N_a} exp(x_a^T (x_n - x_p)))

    As in the Roth suite: the angular term on L2-normalised embeddings, the N-pair term on the raw
    ones (hence the norm penalty). Tuples from the ``npair`` miner (see ``criteria.npair``). The Roth
    suite clamps the N-pair exponent to +-50 (zeroing its gradient there); here the log-sum-exp is
    computed stably instead, equal to the unclamped formula.
    """

    accepts = ("npair",)
    default_miner = "npair"

    def __init__(self, opt, batchminer=None, n_classes=None):
        super().__init__(opt, batchminer, n_classes)
        self.tan2 = math.tan(math.radians(float(opt.loss_angular_alpha))) ** 2
        self.ang_weight = float(opt.loss_angular_npair_ang_weight)
        self.l2_weight = float(opt.loss_angular_npair_l2)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, tuples=None) -> torch.Tensor:
        if tuples is None:
            tuples = self.batchminer(embeddings.detach(), labels)
        anchors, positives, neg_mask = unpack_npair(tuples, len(embeddings), embeddings.device)
        loss = self.l2_weight * l2_norm_penalty(embeddings)
        if len(anchors):
            loss = loss + npair_loss(embeddings, anchors, positives, neg_mask)
            loss = loss + self.ang_weight * angular_terms(embeddings, anchors, positives, neg_mask, self.tan2).mean()
        return loss
