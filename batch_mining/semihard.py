"""Semi-hard negative mining (Schroff et al. 2015, FaceNet; the Roth et al. 2020 suite's version)."""

from __future__ import annotations

import torch

from batch_mining import register
from batch_mining._base import Miner, label_masks, pick, pick_with_fallback
from utilities.distances import distance_matrix


@register(
    "semihard",
    paper="Schroff et al. 2015, FaceNet: A Unified Embedding for Face Recognition and Clustering",
    margin="the loss's own (Criterion.miner_margin: --loss_<loss>_margin where the loss has one, "
    "adversarial_separation: its base's, else --loss_triplet_margin)",
)
class SemihardMiner(Miner):
    """One triplet per anchor that has a positive and a negative in the batch: a random
    positive p, then a random negative n with d_ap < d_an < d_ap + margin (Euclidean
    distances; ``margin`` = the margin of the loss it serves, ``Criterion.miner_margin``), or a random
    negative when none is semi-hard.
    """

    uses_margin = True

    def __init__(self, opt, margin: float):
        super().__init__(opt)
        self.margin = float(margin)

    def mine(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        pos, neg = label_masks(y)
        anchors = torch.nonzero(pos.any(dim=1) & neg.any(dim=1)).squeeze(1)
        d = distance_matrix(x)[anchors]
        pos, neg = pos[anchors], neg[anchors]
        p = pick(pos, self.generator)
        d_ap = d.gather(1, p[:, None])
        semihard = neg & (d > d_ap) & (d < d_ap + self.margin)
        n = pick_with_fallback(semihard, neg, self.generator)
        return torch.stack([anchors, p, n], dim=1)
