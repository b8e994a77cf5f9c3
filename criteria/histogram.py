"""Histogram loss (Ustinova & Lempitsky 2016)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from criteria import register
from criteria._base import Criterion
from criteria._common import zero_loss
from utilities.errors import UserError
from utilities.flag_types import Number


def add_args(parser) -> None:
    parser.add_argument("--loss_histogram_nbins", default=65, type=Number(int, low=2), help="histogram nodes R on [-1, 1]")


def soft_histogram(sims: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
    """Linearly interpolated histogram ``[R]`` of ``sims`` (paper eq. 2): each s adds
    max(0, 1 - |s - t_r| / Delta) to node t_r, i.e. (s - t_{r-1})/Delta or (t_{r+1} - s)/Delta
    to its two neighbouring nodes; normalised by the number of similarities."""
    delta = nodes[1] - nodes[0]
    weights = F.relu(1 - (sims[None, :] - nodes[:, None]).abs() / delta)  # [R, S]
    return weights.sum(dim=1) / max(len(sims), 1)


@register(
    "histogram",
    paper="Ustinova & Lempitsky 2016, Learning Deep Embeddings with Histogram Loss",
    flags="--loss_histogram_nbins",
)
class Histogram(Criterion):
    """L = sum_r h-_r Phi+_r with Phi+_r = sum_{q <= r} h+_q  (the probability that a random
    negative pair is more similar than a random positive one).

    h+ / h- are the linearly interpolated histograms (R nodes t_r evenly on [-1, 1], step
    Delta = 2/(R-1)) of the cosine similarities of the positive / negative pairs i < j of the
    batch. Embeddings are L2-normalised inside (the identity for a ``_normalize`` architecture).
    The Roth code assigns bins by float equality between ``int((s+1)/Delta)*Delta - 1`` and
    ``linspace`` nodes (minus Delta), which silently drops the upper-node share of many
    similarities for some bin counts (about 60% of them at R = 11, 34% at R = 101; the default
    65 happens to be exact): a bug; here the interpolation weights are computed directly (the same loss as
    pytorch-metric-learning's ``HistogramLoss(n_bins=R - 1)``). A batch without positive or negative pairs
    gives 0. Takes no miner.
    """

    def __init__(self, opt, batchminer=None, n_classes=None):
        super().__init__(opt, batchminer, n_classes)
        nbins = int(opt.loss_histogram_nbins)
        if nbins < 2:
            raise UserError(f"--loss_histogram_nbins must be at least 2, got {nbins}")
        self.register_buffer("nodes", torch.linspace(-1, 1, nbins, dtype=torch.float64), persistent=False)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = torch.as_tensor(labels, device=embeddings.device).long()
        x = F.normalize(embeddings, dim=1)
        i, j = torch.triu_indices(len(x), len(x), offset=1, device=x.device)
        sims = (x[i] * x[j]).sum(dim=1)
        same = labels[i] == labels[j]
        if not bool(same.any()) or bool(same.all()):
            return zero_loss(embeddings)
        nodes = self.nodes.to(x.dtype)
        h_pos = soft_histogram(sims[same], nodes)
        h_neg = soft_histogram(sims[~same], nodes)
        return (h_neg * torch.cumsum(h_pos, dim=0)).sum()
