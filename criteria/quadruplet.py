"""Quadruplet loss (Chen et al. 2017) on mined triplets, the Roth et al. 2020 suite's form."""

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
        "--loss_quadruplet_margin_alpha_1",
        default=0.2,
        type=non_negative_float(),
        help="margin alpha_1 of the triplet term d(a,p) < d(a,n)",
    )
    parser.add_argument("--loss_quadruplet_margin_alpha_2", default=0.2, type=non_negative_float(),
                        help="margin alpha_2 of the quadruplet term d(a,p) < d(n,k)")  # fmt: skip


@register(
    "quadruplet",
    paper="Chen et al. 2017, Beyond Triplet Loss: a Deep Quadruplet Network for Person Re-identification",
    flags="--loss_quadruplet_margin_alpha_1, --loss_quadruplet_margin_alpha_2",
)
class Quadruplet(Criterion):
    """L = mean_t relu(d_ap - d_an + alpha_1) + mean_{t with a k} relu(d_ap - d_nk + alpha_2)

    over mined triplets t = (a, p, n), each extended by a fourth sample k drawn uniformly from
    the batch samples whose class differs from both y_a and y_n (the paper's condition
    s_k != s_a, s_k != s_n); triplets without such a k only enter the first term. Euclidean
    distances, unsquared, as in the Roth suite (the paper squares a learned metric). The Roth
    code draws k by comparing negatives of *other triplets* and indexes the batch with it, so k
    can share the negative's or the anchor's class (and it crashes unless #triplets = batch
    size): a bug, not reproduced. Draws use ``self.generator`` (None: torch's global RNG).

    Takes the triplet miners and the Roth suite's regularising ones (``REGULARISING_MINERS``). With
    ``random_distance`` the triplets are valid for the miner's shuffled labels (``last_labels``), and
    k is drawn against those labels too, so the whole quadruplet stays label-shuffled.
    """

    accepts = TUPLE_OUTPUTS
    default_miner = "distance"

    def __init__(self, opt, batchminer=None, n_classes=None):
        super().__init__(opt, batchminer, n_classes)
        self.alpha_1 = float(opt.loss_quadruplet_margin_alpha_1)
        self.alpha_2 = float(opt.loss_quadruplet_margin_alpha_2)
        self.generator: torch.Generator | None = None

    def draw_fourth(self, labels: torch.Tensor, triplets: torch.Tensor) -> torch.Tensor:
        """Per triplet a batch index k with y_k != y_a and y_k != y_n, or -1 where there is none."""
        y = labels.cpu()
        t = triplets.cpu()
        valid = (y[None, :] != y[t[:, 0], None]) & (y[None, :] != y[t[:, 2], None])  # [T, B]
        fourth = torch.full((len(t),), -1, dtype=torch.long)
        rows = valid.any(dim=1)
        if bool(rows.any()):
            fourth[rows] = torch.multinomial(valid[rows].double(), 1, generator=self.generator).squeeze(1)
        return fourth.to(triplets.device)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, triplets=None, fourth=None) -> torch.Tensor:
        labels = torch.as_tensor(labels, device=embeddings.device).long()
        t = mine_triplets(self, embeddings, labels, triplets)
        if len(t) == 0:
            return zero_loss(embeddings)
        if fourth is None:
            tuple_labels = getattr(self.batchminer, "last_labels", None) if triplets is None else None
            k = self.draw_fourth(labels if tuple_labels is None else tuple_labels, t)
        else:
            k = torch.as_tensor(fourth, device=t.device).long().reshape(-1)
        d_ap = pair_distance(embeddings, t[:, 0], t[:, 1])
        loss = F.relu(d_ap - pair_distance(embeddings, t[:, 0], t[:, 2]) + self.alpha_1).mean()
        has_k = k >= 0
        if bool(has_k.any()):
            d_nk = pair_distance(embeddings, t[has_k, 2], k[has_k])
            loss = loss + F.relu(d_ap[has_k] - d_nk + self.alpha_2).mean()
        return loss
