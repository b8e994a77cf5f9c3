"""Helpers shared by the tuple- and proxy-based criteria (not a component)."""

from __future__ import annotations

import torch

# Miner outputs (``batch_mining.OUTPUTS`` tags) the triplet/pair losses of the Roth suite consume: valid
# (anchor, positive, negative) triplets, and the triplets of the Roth paper's regularisers and controls, which
# deliberately break the label structure. A new miner declaring one of these outputs fits every such loss.
TRIPLET_OUTPUTS: tuple[str, ...] = ("triplet",)
REGULARISING_OUTPUTS: tuple[str, ...] = ("push_triplet", "intra_triplet", "shuffled_triplet")
TUPLE_OUTPUTS: tuple[str, ...] = TRIPLET_OUTPUTS + REGULARISING_OUTPUTS


def zero_loss(embeddings: torch.Tensor) -> torch.Tensor:
    """A zero that stays attached to the graph, so ``backward()`` works on an empty batch."""
    return embeddings.sum() * 0.0


def mine_triplets(criterion, embeddings: torch.Tensor, labels: torch.Tensor, triplets) -> torch.Tensor:
    """``triplets`` if given (tests, precomputed tuples), else the criterion's miner on detached inputs."""
    if triplets is None:
        if criterion.batchminer is None:
            raise ValueError(f"{type(criterion).__name__} needs a batch miner: build it with criteria.select")
        triplets = criterion.batchminer(embeddings.detach(), labels)
    return torch.as_tensor(triplets, dtype=torch.long, device=embeddings.device).reshape(-1, 3)


def logsumexp_add_one(x: torch.Tensor, keep: torch.Tensor, dim: int) -> torch.Tensor:
    """Stable ``log(1 + sum_{keep} exp(x))`` along ``dim``; an empty selection gives 0."""
    x = x.masked_fill(~keep, float("-inf"))
    zeros = torch.zeros_like(x.narrow(dim, 0, 1))
    return torch.logsumexp(torch.cat([x, zeros], dim=dim), dim=dim)
