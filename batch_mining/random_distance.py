"""Distance-weighted sampling on randomly permuted labels (a control of the Roth et al. 2020 suite)."""

from __future__ import annotations

import torch

from batch_mining import register
from batch_mining.distance import DistanceMiner


@register(
    "random_distance",
    paper="Roth et al. 2020, Revisiting Training Strategies and Generalization Performance in DML",
    flags="--miner_distance_lower_cutoff, --miner_distance_upper_cutoff",
)
class RandomDistanceMiner(DistanceMiner):
    """The ``distance`` miner run on a random permutation of the batch's labels, as the
    Roth suite's ``random_distance``: the batch keeps its class structure (same label
    counts), but which image carries which label is shuffled, so positives and negatives
    are random with respect to the true classes while negatives are still drawn with
    probability ~ 1/q(d). A control separating distance weighting from label information;
    it does NOT train a class-discriminative embedding. Tuples are valid with respect to
    the permuted labels, kept in ``self.last_labels`` after each call. Uses the
    ``--miner_distance_*`` cutoffs (as the original).
    """

    output = "shuffled_triplet"

    def __init__(self, opt):
        super().__init__(opt)
        self.last_labels: torch.Tensor | None = None

    def mine(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shuffled = y[torch.randperm(len(y), generator=self.generator)]
        self.last_labels = shuffled
        return super().mine(x, shuffled)
