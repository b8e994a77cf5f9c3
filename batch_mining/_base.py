"""Shared machinery of the triplet miners (not a component).

Mining runs on detached CPU copies of the batch (a B x B problem) with torch's random
functions, so results are identical across devices and reproducible with
``torch.manual_seed`` or a ``torch.Generator`` set on ``miner.generator``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch CPU ops on one thread: a B x B mining problem gains nothing from intra-op
    threads, and their synchronisation makes it ~20x slower when data-loader workers load the CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


class Miner:
    """Base of the (anchor, positive, negative) miners: ``miner(embeddings, labels) -> LongTensor [T, 3]``."""

    name = ""
    output = "triplet"  # what the miner returns: a key of batch_mining.OUTPUTS
    uses_margin = False  # True: ``__init__`` takes the ``margin`` of the loss it serves (see batch_mining.select)

    def __init__(self, opt):
        self.generator: torch.Generator | None = None  # None: torch's global RNG

    def __call__(self, embeddings: torch.Tensor, labels) -> torch.Tensor:
        x = embeddings.detach().cpu()
        if x.dtype in (torch.float16, torch.bfloat16):  # autocast outputs: CPU distance kernels want float32
            x = x.float()
        y = labels.detach().cpu() if isinstance(labels, torch.Tensor) else torch.as_tensor(np.asarray(labels))
        y = y.long().reshape(-1)
        if len(y) != len(x):
            raise ValueError(f"{len(x)} embeddings but {len(y)} labels")
        with single_thread():
            triplets = self.mine(x, y).reshape(-1, 3).long()
        return triplets.to(embeddings.device)

    def mine(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def label_masks(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(positive mask without the diagonal, negative mask), both ``[B, B]`` bool."""
    same = y[:, None] == y[None, :]
    return same & ~torch.eye(len(y), dtype=torch.bool), ~same


def pick(mask: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """For each row of ``mask`` (each with at least one True), one True column uniformly at random.

    One uniform draw per row picks a rank r in 1..k (k: the row's True entries), then the column where the row's
    running count of True entries reaches r. ``torch.multinomial`` would draw an exponential variate per entry:
    about 10x slower on a 112 x 112 batch mask (0.3 ms per call), a large part of a mined loss's step.
    """
    if len(mask) == 0:
        return torch.zeros(0, dtype=torch.long)
    counts = mask.cumsum(dim=1)  # [R, B] int64; the last column holds each row's k
    k = counts[:, -1:]
    if not bool((k > 0).all()):
        raise ValueError("pick: a row of the mask has no True entry")
    u = torch.rand(k.shape, generator=generator, dtype=torch.float64)
    rank = torch.minimum((u * k).long(), k - 1) + 1  # uniform on 1..k
    return torch.searchsorted(counts, rank).squeeze(1)


def pick_weighted(weights: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """For each row of ``weights`` (non-negative, each with a positive entry), one column with probability
    proportional to its weight: the first column whose running sum exceeds u times the row's sum, u ~ U[0, 1).
    Same distribution as ``torch.multinomial(weights, 1)`` at a tenth of its cost on a 112 x 112 batch."""
    if len(weights) == 0:
        return torch.zeros(0, dtype=torch.long)
    cum = weights.double().cumsum(dim=1)
    target = torch.rand((len(cum), 1), generator=generator, dtype=torch.float64) * cum[:, -1:]
    return torch.searchsorted(cum, target, right=True).clamp_max_(cum.shape[1] - 1).squeeze(1)


def pick_with_fallback(
    preferred: torch.Tensor, fallback: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """Uniform pick among ``preferred`` where a row has any, else among ``fallback``."""
    return pick(torch.where(preferred.any(dim=1, keepdim=True), preferred, fallback), generator)
