"""N-pair tuples (Sohn 2016) as mined by the Roth et al. 2020 suite.

Output structure (consumed by the ``npair`` and ``angular`` criteria)::

    NPairTuples(anchors [A] long, positives [A] long, negatives [A, B] bool)

one row per batch item a that has a positive: ``positives[i]`` is a uniformly random
other image of ``anchors[i]``'s class, and ``negatives[i, j]`` is True iff batch item j
has a different label (all of them, as the Roth suite; a row may be all False when the
batch holds one class). Unpacks as the Roth suite's ``anchors, positives, negatives``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from batch_mining import register
from batch_mining._base import Miner, label_masks, pick


class NPairTuples(NamedTuple):
    anchors: torch.Tensor  # [A] long
    positives: torch.Tensor  # [A] long
    negatives: torch.Tensor  # [A, B] bool mask over the batch

    def to(self, device) -> NPairTuples:
        return NPairTuples(*(t.to(device) for t in self))


@register("npair", paper="Sohn 2016, Improved Deep Metric Learning with Multi-class N-pair Loss Objective")
class NPairMiner(Miner):
    """Every item with a positive is an anchor; one random positive each; all other-class
    items are its negatives (see the module docstring for the returned structure)."""

    output = "npair"

    def __call__(self, embeddings: torch.Tensor, labels) -> NPairTuples:
        y = torch.as_tensor(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels).long().reshape(-1)
        if len(y) != len(embeddings):
            raise ValueError(f"{len(embeddings)} embeddings but {len(y)} labels")
        pos, neg = label_masks(y)
        has_positive = pos.any(dim=1)
        if bool(has_positive.all()):  # the class-balanced batch: no row gathers
            anchors = torch.arange(len(y))
        else:
            anchors = torch.nonzero(has_positive).squeeze(1)
            pos, neg = pos[anchors], neg[anchors]
        return NPairTuples(anchors, pick(pos, self.generator), neg).to(embeddings.device)
