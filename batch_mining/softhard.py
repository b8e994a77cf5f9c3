"""Soft-hard mining: random hard positive and hard negative per anchor (Roth et al. 2020 suite)."""

from __future__ import annotations

import torch

from batch_mining import register
from batch_mining._base import Miner, label_masks, pick_with_fallback
from utilities.distances import distance_matrix


@register("softhard", paper="Roth et al. 2020, Revisiting Training Strategies and Generalization Performance in DML")
class SofthardMiner(Miner):
    """One triplet per anchor that has a positive and a negative in the batch: a random
    positive farther than the closest negative (else any positive) and a random negative
    closer than the farthest positive (else any negative); Euclidean distances.
    """

    def mine(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        pos, neg = label_masks(y)
        anchors = torch.nonzero(pos.any(dim=1) & neg.any(dim=1)).squeeze(1)
        d = distance_matrix(x)[anchors]
        pos, neg = pos[anchors], neg[anchors]
        max_pos = d.masked_fill(~pos, float("-inf")).amax(dim=1, keepdim=True)
        min_neg = d.masked_fill(~neg, float("inf")).amin(dim=1, keepdim=True)
        p = pick_with_fallback(pos & (d > min_neg), pos, self.generator)
        n = pick_with_fallback(neg & (d < max_pos), neg, self.generator)
        return torch.stack([anchors, p, n], dim=1)
