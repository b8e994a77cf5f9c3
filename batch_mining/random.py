"""Random triplets: a uniform draw from all valid triplets of the batch (Roth et al. 2020 suite)."""

from __future__ import annotations

import torch

from batch_mining import register
from batch_mining._base import Miner, label_masks


@register("random", paper="Roth et al. 2020, Revisiting Training Strategies and Generalization Performance in DML")
class RandomMiner(Miner):
    """B triplets (B = batch size) drawn uniformly without replacement from all valid
    (a, p, n): y_a = y_p, a != p, y_n != y_a. All of them when there are fewer than B
    (the Roth suite fails then). Distances play no role.
    """

    def mine(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        pos, neg = label_masks(y)
        pairs = pos.nonzero()  # (a, p), one row per positive pair
        n_neg = neg.sum(dim=1)
        counts = n_neg[pairs[:, 0]]  # triplets per positive pair
        total = int(counts.sum())
        if total == 0:
            return torch.zeros(0, 3, dtype=torch.long)
        # Index the flat list of all triplets without building it: pair by cumulative count,
        # then the rank-th negative of the anchor.
        flat = torch.randperm(total, generator=self.generator)[: len(y)]
        ends = counts.cumsum(0)
        pair_idx = torch.searchsorted(ends, flat, right=True)
        rank = flat - (ends[pair_idx] - counts[pair_idx])
        neg_order = torch.argsort((~neg).to(torch.int8), dim=1, stable=True)  # negatives first, by index
        a, p = pairs[pair_idx, 0], pairs[pair_idx, 1]
        return torch.stack([a, p, neg_order[a, rank]], dim=1)
