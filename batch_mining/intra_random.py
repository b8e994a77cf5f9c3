"""Random intra-class triplets (Roth et al. 2020 suite; the DiVA intra-class task)."""

from __future__ import annotations

import torch

from batch_mining import register
from batch_mining._base import Miner


@register(
    "intra_random",
    paper="Roth et al. 2020, Revisiting Training Strategies in DML; Milbich et al. 2020, DiVA",
)
class IntraRandomMiner(Miner):
    """B triplets (B = batch size), all three members from ONE class: for each triplet a
    class is drawn uniformly (with replacement) among the batch classes with at least two
    images, then (a, p, n) are distinct images of it (n = p when the class has only two
    images in the batch). The "negative" shares the anchor's label by design: these
    triplets train intra-class structure (DiVA), not class separation.

    The Roth suite draws a, p, n with replacement, so a == p == n happens; here a != p and
    a != n always.
    """

    output = "intra_triplet"

    def mine(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        classes, counts = torch.unique(y, return_counts=True)
        eligible = classes[counts >= 2]
        if len(eligible) == 0:
            return torch.zeros(0, 3, dtype=torch.long)
        n_triplets = len(y)
        drawn = eligible[torch.randint(len(eligible), (n_triplets,), generator=self.generator)]
        members = drawn[:, None] == y[None, :]  # [T, B]
        # A uniformly random order of each class's members: random scores, non-members last.
        scores = torch.rand(members.shape, generator=self.generator).masked_fill(~members, -1.0)
        order = scores.argsort(dim=1, descending=True)
        a, p = order[:, 0], order[:, 1]
        if order.shape[1] < 3:
            return torch.stack([a, p, p], dim=1)
        third = order[:, 2]
        n = torch.where(members.gather(1, third[:, None]).squeeze(1), third, p)
        return torch.stack([a, p, n], dim=1)
