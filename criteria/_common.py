"""Helpers shared by the tuple- and proxy-based criteria (not a component)."""

from __future__ import annotations

import torch

# Miners returning (anchor, positive, negative) triplets: every triplet/pair loss accepts
# all of them. A new triplet miner is added to this one tuple.
TRIPLET_MINERS: tuple[str, ...] = ("distance", "random", "semihard", "softhard", "parametric")
# Miners whose triplets deliberately break the label structure (the Roth paper's
# regularisers and controls); the triplet-based losses of the Roth suite accept them too.
REGULARISING_MINERS: tuple[str, ...] = ("intra_random", "rho_distance", "random_distance")
# Every miner a triplet/pair loss of the Roth suite accepts.
TUPLE_MINERS: tuple[str, ...] = TRIPLET_MINERS + REGULARISING_MINERS


def zero_loss(embeddings: torch.Tensor) -> torch.Tensor:
    """A zero that stays attached to the graph, so ``backward()`` works on an empty batch."""
    return embeddings.sum() * 0.0


def pair_distance(embeddings: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """Euclidean distances ``||x_i - x_j||``; the gradient is 0 (not NaN) for identical points."""
    return torch.linalg.vector_norm(embeddings[i] - embeddings[j], dim=-1)


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
