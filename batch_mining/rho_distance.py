"""Rho-regularised distance sampling: the Roth et al. 2020 paper's spectral regulariser."""

from __future__ import annotations

import torch

from batch_mining import register
from batch_mining._base import label_masks, pick
from batch_mining.distance import DistanceMiner
from utilities.errors import UserError
from utilities.flag_types import fraction, non_negative_float


def add_args(parser) -> None:
    parser.add_argument(
        "--miner_rho_distance_lower_cutoff",
        default=0.5,
        type=non_negative_float(),
        help="rho_distance: distances below this are raised to it (equal weight for very close negatives)",
    )
    parser.add_argument(
        "--miner_rho_distance_upper_cutoff",
        default=1.4,
        type=non_negative_float(),
        help="rho_distance: negatives at or beyond this distance are not sampled (unless none is closer)",
    )
    parser.add_argument(
        "--miner_rho_distance_cp",
        default=0.2,
        type=fraction(),
        help="rho_distance: probability p_rho that an anchor's triplet pushes a positive away instead",
    )


@register(
    "rho_distance",
    paper="Roth et al. 2020, Revisiting Training Strategies and Generalization Performance in DML (rho-regularisation)",
    flags="--miner_rho_distance_lower_cutoff, --miner_rho_distance_upper_cutoff, --miner_rho_distance_cp",
)
class RhoDistanceMiner(DistanceMiner):
    """Distance-weighted sampling (see ``distance``) where, for each anchor a independently
    with probability p_rho (``--miner_rho_distance_cp``), the triplet is replaced by

        (a, a, p)  with p a uniformly random positive of a (p != a),

    exactly as the Roth suite: the positive slot holds the anchor itself and the negative
    slot a same-class sample, so a triplet/margin loss pushes that positive AWAY from the
    anchor. This flattens the embedding's singular-value spectrum (lower rho), which the
    paper links to better generalisation. Only anchors with a positive and a negative in
    the batch yield a triplet. ``self.n_swapped`` holds the number of swapped triplets of
    the last call (the Roth suite's ``push_triplets``). Cutoffs as in ``distance``, from
    the ``--miner_rho_distance_*`` flags.
    """

    output = "push_triplet"

    def __init__(self, opt):
        super().__init__(opt)
        self.lower_cutoff = float(opt.miner_rho_distance_lower_cutoff)
        self.upper_cutoff = float(opt.miner_rho_distance_upper_cutoff)
        self.swap_p = float(opt.miner_rho_distance_cp)
        if not 0.0 <= self.swap_p <= 1.0:
            raise UserError(f"--miner_rho_distance_cp must lie in [0, 1], got {self.swap_p}")
        self.n_swapped = 0

    def mine(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        triplets = super().mine(x, y)
        anchors = triplets[:, 0]
        swap = torch.rand(len(anchors), generator=self.generator) < self.swap_p
        pos, _ = label_masks(y)
        other_pos = pick(pos[anchors], self.generator)  # independent of the triplet's own positive
        triplets[swap, 1] = anchors[swap]
        triplets[swap, 2] = other_pos[swap]
        self.n_swapped = int(swap.sum())
        return triplets
