"""Lifted structure loss (Oh Song et al. 2016) and its generalised per-anchor form (Hermans et al. 2017)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from criteria import register
from criteria._base import Criterion
from criteria._common import zero_loss
from criteria._roth_utils import l2_norm_penalty, unpack_sets
from utilities.distances import pairwise_distances
from utilities.flag_types import finite_float, non_negative_float


def add_args(parser) -> None:
    parser.add_argument("--loss_lifted_neg_margin", default=1.0, type=finite_float(), help="margin alpha on negative distances")
    parser.add_argument(
        "--loss_lifted_l2",
        default=0.005,
        type=non_negative_float(),
        help="weight of the embedding-norm penalty mean_i ||x_i|| (embeddings are not normalised)",
    )
    parser.add_argument("--loss_lifted_variant", default="original", choices=["original", "generalized"],
                        help="original: Oh Song et al. 2016 (per positive pair, squared hinge); "
                             "generalized: per anchor (Hermans et al. 2017), the structure of the Roth suite's code")  # fmt: skip


@register(
    "lifted",
    paper="Oh Song et al. 2016, Deep Metric Learning via Lifted Structured Feature Embedding",
    flags="--loss_lifted_neg_margin, --loss_lifted_l2, --loss_lifted_variant",
)
class Lifted(Criterion):
    """Euclidean D on the raw embeddings, margin alpha, P_a / N_a the positive / negative sets of anchor a.

    ``original`` (the paper, eq. 4), over ordered positive pairs (a, p), p in P_a:

        J_ap = D_ap + log( sum_{k in N_a} exp(alpha - D_ak) + sum_{l in N_p} exp(alpha - D_pl) )
        L    = 1 / (2 |pairs|) sum_{(a,p)} relu(J_ap)^2          (= the paper's 1/(2|P|) sum over unordered pairs)

    ``generalized`` (Hermans et al. 2017, "In Defense of the Triplet Loss", what the Roth code's
    per-anchor structure computes): L = mean_a relu(log sum_{p in P_a} exp(D_ap) + log sum_{n in N_a} exp(alpha - D_an)).

    Both add ``--loss_lifted_l2`` x mean_i ||x_i||, the Roth suite's penalty. The Roth code takes
    ``nn.PairwiseDistance`` over the wrong axis (a norm across the positive/negative samples per
    embedding dimension, then a log-sum-exp over dimensions): a bug, not reproduced.

    Tuples from the ``lifted`` miner: ``(anchors [N], positives, negatives)``, per anchor a
    positive and a negative index set (a list of arrays, a -1-padded ``[N, M]`` LongTensor or a
    bool mask ``[N, B]``). N_p for a positive p that is not itself an anchor: all other-class samples.
    """

    accepts = ("lifted",)
    default_miner = "lifted"

    def __init__(self, opt, batchminer=None, n_classes=None):
        super().__init__(opt, batchminer, n_classes)
        self.margin = float(opt.loss_lifted_neg_margin)
        self.l2_weight = float(opt.loss_lifted_l2)
        self.variant = str(opt.loss_lifted_variant)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, tuples=None) -> torch.Tensor:
        if tuples is None:
            tuples = self.batchminer(embeddings.detach(), labels)
        b = len(embeddings)
        anchors, pos_mask, neg_mask = unpack_sets(tuples, b, embeddings.device)
        penalty = self.l2_weight * l2_norm_penalty(embeddings)
        if not bool(pos_mask.any()):
            return zero_loss(embeddings) + penalty
        dist = pairwise_distances(embeddings)
        neg_logits = self.margin - dist  # [B, B]
        if self.variant == "generalized":
            # Rows without positives or negatives are dropped BEFORE the log-sum-exp: an all -inf
            # row would give a NaN gradient even when masked out afterwards.
            keep = pos_mask.any(dim=1) & neg_mask.any(dim=1)
            if not bool(keep.any()):
                return zero_loss(embeddings) + penalty
            a, pos, neg = anchors[keep], pos_mask[keep], neg_mask[keep]
            pos_term = torch.logsumexp(dist[a].masked_fill(~pos, float("-inf")), dim=1)
            neg_term = torch.logsumexp(neg_logits[a].masked_fill(~neg, float("-inf")), dim=1)
            return F.relu(pos_term + neg_term).mean() + penalty
        # Negative sets of every batch row: the miner's where given, otherwise all other-class samples.
        labels = torch.as_tensor(labels, device=embeddings.device).long()
        row_neg = labels[:, None] != labels[None, :]
        row_neg[anchors] = neg_mask
        pair_rows, p = pos_mask.nonzero(as_tuple=True)
        a = anchors[pair_rows]
        has_neg = row_neg[a].any(dim=1) | row_neg[p].any(dim=1)
        if not bool(has_neg.any()):
            return zero_loss(embeddings) + penalty
        # A pair with no negative at all has J = -inf, i.e. relu(J) = 0: it only counts in |pairs|.
        n_pairs = len(a)
        a, p = a[has_neg], p[has_neg]
        logits = torch.cat([neg_logits[a].masked_fill(~row_neg[a], float("-inf")),
                            neg_logits[p].masked_fill(~row_neg[p], float("-inf"))], dim=1)  # fmt: skip
        j = dist[a, p] + torch.logsumexp(logits, dim=1)
        return F.relu(j).pow(2).sum() / (2 * n_pairs) + penalty
