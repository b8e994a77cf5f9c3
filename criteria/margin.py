"""Margin loss with learnable per-class boundary beta (Wu et al. 2017)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from criteria import register
from criteria._base import Criterion
from criteria._common import TUPLE_OUTPUTS, mine_triplets, zero_loss
from utilities.distances import pair_distance
from utilities.flag_types import finite_float, non_negative_float, positive_float


def add_args(parser) -> None:
    parser.add_argument("--loss_margin_margin", default=0.2, type=non_negative_float(), help="margin alpha around the boundary beta")
    parser.add_argument("--loss_margin_beta_lr", default=0.0005, type=positive_float(), help="learning rate of the class betas")
    parser.add_argument("--loss_margin_beta", default=1.2, type=finite_float(), help="initial class boundary beta")
    parser.add_argument("--loss_margin_nu", default=0.0, type=non_negative_float(), help="regularisation weight nu on the betas")
    parser.add_argument("--loss_margin_beta_constant", action="store_true", help="keep the betas fixed (untrained)")


@register(
    "margin",
    paper="Wu et al. 2017, Sampling Matters in Deep Embedding Learning",
    flags="--loss_margin_margin, --loss_margin_beta_lr, --loss_margin_beta, --loss_margin_nu, --loss_margin_beta_constant",
)
class Margin(Criterion):
    """Margin loss over mined triplets (a, p, n), beta = beta_{y_a} learned per class:

        L = [sum_t relu(d_ap - beta + alpha) + relu(beta - d_an + alpha) + nu * sum_t beta] / N_active

    with Euclidean d and N_active the number of non-zero pair terms (1 if there are none).
    The nu term is divided by N_active as in the paper's reference code; the Roth suite adds
    ``nu * sum(beta)`` undivided after the division (a slip; its default nu = 0 hides it).
    The betas have their own learning rate (``--loss_margin_beta_lr``) and no weight decay.
    Expects L2-normalised embeddings (a ``_normalize`` architecture).
    """

    accepts = TUPLE_OUTPUTS
    default_miner = "distance"

    @classmethod
    def miner_margin(cls, opt) -> float:
        return float(opt.loss_margin_margin)

    def __init__(self, opt, batchminer=None, n_classes=None):
        super().__init__(opt, batchminer, n_classes)
        self.margin = float(opt.loss_margin_margin)
        self.nu = float(opt.loss_margin_nu)
        self.beta_lr = float(opt.loss_margin_beta_lr)
        beta = torch.full((self.classes(),), float(opt.loss_margin_beta))
        self.learn_beta = not opt.loss_margin_beta_constant
        if self.learn_beta:
            self.beta = nn.Parameter(beta)
        else:
            self.register_buffer("beta", beta)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, triplets=None) -> torch.Tensor:
        t = mine_triplets(self, embeddings, labels, triplets)
        if len(t) == 0:
            return zero_loss(embeddings) + 0.0 * self.beta.sum()
        labels = torch.as_tensor(labels, device=embeddings.device).long()
        d_ap = pair_distance(embeddings, t[:, 0], t[:, 1])
        d_an = pair_distance(embeddings, t[:, 0], t[:, 2])
        beta = self.beta.to(embeddings.dtype)[labels[t[:, 0]]]
        pos_loss = F.relu(d_ap - beta + self.margin)
        neg_loss = F.relu(beta - d_an + self.margin)
        n_active = ((pos_loss > 0).sum() + (neg_loss > 0).sum()).clamp_min(1).to(embeddings.dtype)
        total = (pos_loss + neg_loss).sum()
        if self.learn_beta and self.nu:
            total = total + self.nu * beta.sum()
        return total / n_active

    def param_groups(self) -> list[dict]:
        if not self.learn_beta:
            return []
        return [{"params": [self.beta], "lr": self.beta_lr, "weight_decay": 0.0, "name": "margin_beta"}]

    def export(self) -> dict[str, np.ndarray]:
        return {"beta": self.beta.detach().cpu().numpy()}
