"""Multi-Similarity loss with its built-in pair mining (Wang et al. 2019)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from criteria import register
from criteria._base import Criterion
from criteria._common import logsumexp_add_one
from utilities.flag_types import finite_float, non_negative_float, positive_float


def add_args(parser) -> None:
    parser.add_argument("--loss_multisimilarity_pos_weight", default=2.0, type=positive_float(), help="scale alpha of positives")
    parser.add_argument("--loss_multisimilarity_neg_weight", default=40.0, type=positive_float(), help="scale beta of negatives")
    parser.add_argument(
        "--loss_multisimilarity_margin", default=0.1, type=non_negative_float(), help="mining margin epsilon on the similarities"
    )
    parser.add_argument("--loss_multisimilarity_thresh", default=0.5, type=finite_float(),
                        help="similarity offset lambda in the exponents")  # fmt: skip


@register(
    "multisimilarity",
    paper="Wang et al. 2019, Multi-Similarity Loss with General Pair Weighting for Deep Metric Learning",
    flags="--loss_multisimilarity_pos_weight, --loss_multisimilarity_neg_weight, "
    "--loss_multisimilarity_margin, --loss_multisimilarity_thresh",
)
class MultiSimilarity(Criterion):
    """Cosine similarities S (embeddings L2-normalised inside). For each anchor i, mine

        N_i = {j: y_j != y_i, S_ij + eps > min_{k in P(i)} S_ik},
        P_i = {j != i: y_j = y_i, S_ij - eps < max_{k in N(i)} S_ik}

    and L = (1/B) sum_i [1/alpha log(1 + sum_{P_i} e^{-alpha (S_ij - lambda)})
                         + 1/beta log(1 + sum_{N_i} e^{beta (S_ij - lambda)})],

    skipping anchors whose P_i or N_i is empty, and dividing by the batch size B, as the
    authors' code does. (The Roth suite divides by the number of anchors kept instead;
    pytorch-metric-learning keeps one-sided anchors.) Takes no external miner.
    """

    def __init__(self, opt, batchminer=None, n_classes=None):
        super().__init__(opt, batchminer, n_classes)
        self.alpha = float(opt.loss_multisimilarity_pos_weight)
        self.beta = float(opt.loss_multisimilarity_neg_weight)
        self.margin = float(opt.loss_multisimilarity_margin)
        self.thresh = float(opt.loss_multisimilarity_thresh)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = torch.as_tensor(labels, device=embeddings.device).long()
        x = F.normalize(embeddings, dim=1)
        sim = x @ x.T
        same = labels[:, None] == labels[None, :]
        pos = same & ~torch.eye(len(labels), dtype=torch.bool, device=sim.device)
        neg = ~same
        with torch.no_grad():  # mining only compares similarities
            s = sim.detach()
            min_pos = s.masked_fill(~pos, float("inf")).amin(dim=1)
            max_neg = s.masked_fill(~neg, float("-inf")).amax(dim=1)
            mined_neg = neg & (s + self.margin > min_pos[:, None])
            mined_pos = pos & (s - self.margin < max_neg[:, None])
            keep = mined_pos.any(dim=1) & mined_neg.any(dim=1)
        pos_loss = logsumexp_add_one(-self.alpha * (sim - self.thresh), mined_pos, dim=1) / self.alpha
        neg_loss = logsumexp_add_one(self.beta * (sim - self.thresh), mined_neg, dim=1) / self.beta
        return ((pos_loss + neg_loss) * keep).sum() / len(labels)
