"""Distances and normalisation shared by losses, miners, samplers, metrics and the k-NN search (one place each).

numpy: ``l2_normalize`` (rows to unit norm), ``squared_distances`` (the matrix by the Gram expansion).
torch: ``distance_matrix`` (fast, no gradients needed: mining), ``pair_distance`` / ``pairwise_distances``
(exact differences, safe gradients: losses).
"""

from __future__ import annotations

import numpy as np
import torch

EPS = 1e-12  # norms below this count as zero (a zero row stays zero when normalised)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit Euclidean norm, in the input's dtype; zero rows stay zero."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), EPS)


def squared_distances(x: np.ndarray) -> np.ndarray:
    """[N, N] squared Euclidean distances ||x_i||^2 + ||x_j||^2 - 2 x_i.x_j, clipped at 0 (round-off)."""
    sq = np.einsum("ij,ij->i", x, x)
    return np.clip(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0, None)


def distance_matrix(x: torch.Tensor) -> torch.Tensor:
    """[B, B] Euclidean distances (``torch.cdist``) with an exact zero diagonal; for mining (no gradients)."""
    return torch.cdist(x, x).fill_diagonal_(0.0)


def pair_distance(embeddings: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """Euclidean distances ``||x_i - x_j||`` of index pairs (broadcasting); the gradient is 0 (not NaN) for
    identical points."""
    return torch.linalg.vector_norm(embeddings[i] - embeddings[j], dim=-1)


def pairwise_distances(x: torch.Tensor) -> torch.Tensor:
    """[B, B] Euclidean distances from exact differences (no sqrt of a clamped expansion), with a zero (not NaN)
    gradient on the diagonal, so masked-out self pairs cannot poison backward."""
    idx = torch.arange(len(x), device=x.device)
    return pair_distance(x, idx[:, None], idx[None, :])
