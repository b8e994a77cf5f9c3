"""Semi-hard negative mining (Schroff et al. 2015, FaceNet; the Roth et al. 2020 suite's version)."""

from __future__ import annotations

import torch

from batch_mining import register
from batch_mining._base import Miner, label_masks, pdist, pick, pick_with_fallback


def triplet_margin(opt) -> float:
    """The margin of the active loss (``--loss_<loss>_margin``), as the Roth suite uses; for a loss with a
    base loss (``--loss_<loss>_base``, e.g. adversarial_separation) the base's; else the triplet one."""
    loss = getattr(opt, "loss", "")
    base = getattr(opt, f"loss_{loss}_base", "")
    for flag in (f"loss_{loss}_margin", f"loss_{base}_margin", "loss_triplet_margin"):
        if isinstance(getattr(opt, flag, None), int | float):
            return float(getattr(opt, flag))
    return 0.2


@register(
    "semihard",
    paper="Schroff et al. 2015, FaceNet: A Unified Embedding for Face Recognition and Clustering",
    margin="the loss's --loss_<loss>_margin (adversarial_separation: its base's; else --loss_triplet_margin)",
)
class SemihardMiner(Miner):
    """One triplet per anchor that has a positive and a negative in the batch: a random
    positive p, then a random negative n with d_ap < d_an < d_ap + margin (Euclidean
    distances; margin = the loss's margin flag ``--loss_<loss>_margin``, e.g. 0.2, or its base
    loss's for adversarial_separation, else ``--loss_triplet_margin``), or a random negative when
    none is semi-hard.
    """

    def __init__(self, opt):
        super().__init__(opt)
        self.margin = triplet_margin(opt)

    def mine(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        pos, neg = label_masks(y)
        anchors = torch.nonzero(pos.any(dim=1) & neg.any(dim=1)).squeeze(1)
        d = pdist(x)[anchors]
        pos, neg = pos[anchors], neg[anchors]
        p = pick(pos, self.generator)
        d_ap = d.gather(1, p[:, None])
        semihard = neg & (d > d_ap) & (d < d_ap + self.margin)
        n = pick_with_fallback(semihard, neg, self.generator)
        return torch.stack([anchors, p, n], dim=1)
