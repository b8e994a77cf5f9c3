"""Helpers of the set-based Roth-suite criteria (npair, angular, lifted, adversarial separation); not a component.

The npair and lifted miners return per-anchor index *sets* (the Roth suite's structure,
``batch_mining.npair.NPairTuples`` / ``batch_mining.lifted.LiftedTuples``):

* npair:  ``(anchors [N], positives [N], negatives)``, one positive per anchor;
* lifted: ``(anchors [N], positives, negatives)``, a positive set per anchor;

where a set-valued entry is a bool mask ``[N, B]`` (what this suite's miners return), a
-1-padded LongTensor ``[N, M]``, or a list of N index arrays of any lengths (the Roth code's
form). ``unpack_sets`` turns any of these into bool masks so the losses run as masked matrix ops.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def as_index(x, device: torch.device) -> torch.Tensor:
    """A 1-D LongTensor of batch indices from an int, list, array or tensor."""
    if isinstance(x, torch.Tensor):
        return x.to(device=device, dtype=torch.long).reshape(-1)
    return torch.as_tensor(np.asarray(x), dtype=torch.long, device=device).reshape(-1)


def sets_to_mask(sets, n_rows: int, batch_size: int, device: torch.device) -> torch.Tensor:
    """Bool mask ``[n_rows, batch_size]``: row r marks the batch indices of set r.

    ``sets``: a bool mask ``[n_rows, B]``, a padded LongTensor ``[n_rows, M]`` (-1 = padding),
    or a sequence of ``n_rows`` index arrays of any lengths.
    """
    if isinstance(sets, np.ndarray):
        sets = torch.from_numpy(sets)
    if isinstance(sets, torch.Tensor) and sets.ndim == 2:
        if sets.dtype == torch.bool:
            if sets.shape != (n_rows, batch_size):
                raise ValueError(f"expected a [{n_rows}, {batch_size}] mask, got {list(sets.shape)}")
            return sets.to(device)
        t = sets.to(device=device, dtype=torch.long)
        mask = torch.zeros(n_rows, batch_size, dtype=torch.bool, device=device)
        rows = torch.arange(n_rows, device=device)[:, None].expand_as(t)
        keep = t >= 0
        mask[rows[keep], t[keep]] = True
        return mask
    if not isinstance(sets, Sequence | torch.Tensor | np.ndarray) or len(sets) != n_rows:
        raise ValueError(f"expected {n_rows} index sets, got {type(sets).__name__}")
    mask = torch.zeros(n_rows, batch_size, dtype=torch.bool, device=device)
    for r, s in enumerate(sets):
        idx = as_index(s, device)
        if len(idx):
            mask[r, idx] = True
    return mask


def unpack_sets(tuples, batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(anchors, positives, negatives)`` of an npair/lifted miner -> (anchors [N], pos mask [N, B], neg mask [N, B]).

    A single positive per anchor (npair) becomes a one-hot row of the positive mask.
    """
    anchors, positives, negatives = tuples
    a = as_index(anchors, device)
    n = len(a)
    if isinstance(positives, torch.Tensor | np.ndarray) and positives.ndim == 1:
        pos = torch.zeros(n, batch_size, dtype=torch.bool, device=device)
        pos[torch.arange(n, device=device), as_index(positives, device)] = True
    else:
        pos = sets_to_mask(positives, n, batch_size, device)
    return a, pos, sets_to_mask(negatives, n, batch_size, device)


def unpack_npair(tuples, batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(anchors, positives, negatives)`` of the npair miner -> (anchors [N], positives [N], neg mask [N, B]).

    A 1-D ``positives`` is used as is (no one-hot mask and argmax round trip on the hot path); any other
    form goes through ``unpack_sets`` and must hold exactly one positive per anchor.
    """
    anchors, positives, negatives = tuples
    if isinstance(positives, torch.Tensor | np.ndarray) and positives.ndim == 1:
        a, p = as_index(anchors, device), as_index(positives, device)
        if len(p) != len(a):
            raise ValueError(f"npair tuples: {len(a)} anchors but {len(p)} positives")
        return a, p, sets_to_mask(negatives, len(a), batch_size, device)
    a, pos_mask, neg_mask = unpack_sets(tuples, batch_size, device)
    return a, single_positive(pos_mask), neg_mask


def single_positive(pos_mask: torch.Tensor) -> torch.Tensor:
    """The one positive index per row of an npair positive mask; fails if a row has not exactly one."""
    counts = pos_mask.sum(dim=1)
    if len(counts) and not bool((counts == 1).all()):
        raise ValueError("npair tuples need exactly one positive per anchor")
    return pos_mask.long().argmax(dim=1)


def l2_norm_penalty(embeddings: torch.Tensor) -> torch.Tensor:
    """mean_i ||x_i||_2: the Roth suite's embedding-norm penalty of npair, angular and lifted."""
    return torch.linalg.vector_norm(embeddings, dim=1).mean()


class GradReverse(torch.autograd.Function):
    """Identity forward, negated gradient backward (Ganin & Lempitsky 2015)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        return -grad_output


def grad_reverse(x: torch.Tensor) -> torch.Tensor:
    return GradReverse.apply(x)
