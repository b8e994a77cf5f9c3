"""Lifted-structure tuples (Oh Song et al. 2016) as mined by the Roth et al. 2020 suite.

Output structure (consumed by the ``lifted`` criterion)::

    LiftedTuples(anchors [A] long, positives [A, B] bool, negatives [A, B] bool)

one row per batch item a that has a positive: ``positives[i, j]`` is True iff j != a has
a's label (the Roth suite's positive set), ``negatives[i, j]`` iff j has another label
(its negative set: everything but the anchor and its positives). Unpacks as the Roth
suite's ``anchors, positives, negatives``, with boolean masks instead of index lists.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from batch_mining import register
from batch_mining._base import Miner, label_masks


class LiftedTuples(NamedTuple):
    anchors: torch.Tensor  # [A] long
    positives: torch.Tensor  # [A, B] bool mask over the batch
    negatives: torch.Tensor  # [A, B] bool mask over the batch

    def to(self, device) -> LiftedTuples:
        return LiftedTuples(*(t.to(device) for t in self))


@register("lifted", paper="Oh Song et al. 2016, Deep Metric Learning via Lifted Structured Feature Embedding")
class LiftedMiner(Miner):
    """Every item with a positive is an anchor with ALL its positives and ALL its
    negatives (deterministic; see the module docstring for the returned structure)."""

    output = "lifted"

    def __call__(self, embeddings: torch.Tensor, labels) -> LiftedTuples:
        y = torch.as_tensor(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels).long().reshape(-1)
        if len(y) != len(embeddings):
            raise ValueError(f"{len(embeddings)} embeddings but {len(y)} labels")
        pos, neg = label_masks(y)
        anchors = torch.nonzero(pos.any(dim=1)).squeeze(1)
        return LiftedTuples(anchors, pos[anchors], neg[anchors]).to(embeddings.device)
