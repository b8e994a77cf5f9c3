"""Exact k-nearest-neighbour search of a set against itself, self excluded.

One search serves every neighbour-based metric of a geometry. ``knn_poincare`` searches points of a Poincare
ball (the hyperbolic softmax's geometry). CPU: faiss brute force
(``faiss.knn``, the search of IndexFlatL2 / IndexFlatIP without copying the data into an
index). CUDA: torch, chunked matmul + topk in float32 (TF32 switched off for the call).
Memory: the embeddings, one [chunk, N] score block and the [N, k] outputs; never N x N.
"""

from __future__ import annotations

import contextlib
import math

import faiss
import numpy as np
import torch

from metrics import GEOMETRIES
from utilities.distances import l2_normalize


def as_numpy_float32(embeddings) -> np.ndarray:
    """[N, D] float32 C-contiguous numpy copy/view of a tensor or array."""
    if isinstance(embeddings, torch.Tensor):
        embeddings = embeddings.detach().to("cpu", torch.float32).numpy()
    return np.ascontiguousarray(embeddings, dtype=np.float32)


def drop_self(dists: np.ndarray, ids: np.ndarray, first_row: int | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Remove each query's own index from its k+1 neighbours (the last one if self is absent).

    The queries are the rows ``first_row, first_row + 1, ...`` (an int) or the given row indices (an array).
    Dropping the index, not column 0, keeps exact duplicates of the query as neighbours
    even when the search returns one of them before the query itself.
    """
    n, k1 = ids.shape
    own = np.arange(first_row, first_row + n) if np.isscalar(first_row) else np.asarray(first_row)
    is_self = ids == own[:, None]
    is_self[~is_self.any(axis=1), -1] = True
    keep = ~is_self
    return dists[keep].reshape(n, k1 - 1), ids[keep].reshape(n, k1 - 1)


@contextlib.contextmanager
def _exact_float32_matmul():
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def _knn_faiss(x: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    n = len(x)
    dists = np.empty((n, k), dtype=np.float32)
    ids = np.empty((n, k), dtype=np.int64)
    faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
    rows = max(256, (1 << 22) // (k + 1))  # bounds the [rows, k+1] faiss outputs
    for s in range(0, n, rows):
        d, i = faiss.knn(x[s : s + rows], x, k + 1, metric=faiss_metric)
        d = 1.0 - d if metric == "cosine" else np.maximum(d, 0.0)
        dists[s : s + rows], ids[s : s + rows] = drop_self(d, i, s)
    return dists, ids


def _knn_torch(x: np.ndarray, k: int, metric: str, device: torch.device, chunk_size: int | None):
    n = len(x)
    dists = np.empty((n, k), dtype=np.float32)
    ids = np.empty((n, k), dtype=np.int64)
    xt = torch.from_numpy(x).to(device)
    sq = None if metric == "cosine" else (xt * xt).sum(dim=1)
    budget = (1 << 26) if device.type == "cuda" else (1 << 24)  # elements of one score block
    rows = chunk_size or max(1, min(n, budget // n))
    with torch.no_grad(), _exact_float32_matmul():
        for s in range(0, n, rows):
            scores = xt[s : s + rows] @ xt.T
            if metric == "cosine":
                top = torch.topk(scores, k + 1, dim=1, largest=True)
                d = 1.0 - top.values
            else:
                scores.mul_(-2.0).add_(sq[s : s + rows, None]).add_(sq[None, :]).clamp_(min=0.0)
                top = torch.topk(scores, k + 1, dim=1, largest=False)
                d = top.values
            dists[s : s + rows], ids[s : s + rows] = drop_self(d.cpu().numpy(), top.indices.cpu().numpy(), s)
    return dists, ids


def knn(
    embeddings,
    k: int,
    metric: str = "euclidean",
    device: str | torch.device = "cpu",
    *,
    backend: str | None = None,
    chunk_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """k nearest neighbours of every row among the other rows.

    embeddings: [N, D] tensor or array. metric: 'euclidean' (raw vectors) or 'cosine'
    (L2-normalised vectors). backend: 'faiss' or 'torch'; default torch on CUDA, faiss
    otherwise (tests run the torch path on CPU to compare). chunk_size: query rows per
    torch block (default: a ~64 MB block on CPU, ~256 MB on CUDA).

    Returns (dists float32 [N, k], ids int64 [N, k]), nearest first, self excluded:
    squared Euclidean distances for 'euclidean', cosine distances 1 - cos for 'cosine'.
    """
    if metric not in GEOMETRIES:
        raise ValueError(f"metric must be one of {GEOMETRIES}, got {metric!r}")
    x = as_numpy_float32(embeddings)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be [N, D], got shape {x.shape}")
    if not 0 <= k < len(x):
        raise ValueError(f"k must be in [0, N-1] = [0, {len(x) - 1}], got {k}")
    if metric == "cosine":
        x = l2_normalize(x)
    device = torch.device(device)
    backend = backend or ("torch" if device.type == "cuda" else "faiss")
    if k == 0:
        return np.empty((len(x), 0), np.float32), np.empty((len(x), 0), np.int64)
    if backend == "faiss":
        return _knn_faiss(x, k, metric)
    if backend == "torch":
        return _knn_torch(x, k, metric, device, chunk_size)
    raise ValueError(f"backend must be 'faiss' or 'torch', got {backend!r}")


def query_neighbours(embeddings, queries, k: int, metric: str = "euclidean") -> np.ndarray:
    """[len(queries), k] ids of the k nearest neighbours (self excluded) of the rows ``queries`` among all rows
    (exact faiss search; 'euclidean' on the raw, 'cosine' on the L2-normalised embeddings)."""
    if metric not in GEOMETRIES:
        raise ValueError(f"metric must be one of {GEOMETRIES}, got {metric!r}")
    x = as_numpy_float32(embeddings)
    if metric == "cosine":
        x = l2_normalize(x)
    queries = np.asarray(queries, dtype=np.int64)
    faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
    d, i = faiss.knn(np.ascontiguousarray(x[queries]), x, min(k + 1, len(x)), metric=faiss_metric)
    return drop_self(d, i, queries)[1]


def knn_poincare(points: torch.Tensor, k: int, c: float, chunk: int | None = None, queries=None) -> np.ndarray:
    """[N, k] indices of each ball point's k nearest others (self excluded) in the Poincare distance
    d(x, y) = 2/sqrt(c) artanh(sqrt(c) ||(-x) (+)_c y||), ranked by ||(-x) (+)_c y||^2 from the Gram matrix:
    with u = -x, v = y, ||(1 + 2c<u,v> + c||v||^2) u + (1 - c||u||^2) v||^2 / (1 + 2c<u,v> + c^2||u||^2||v||^2)^2.

    points: [N, d] inside the ball of curvature c (computed in float64). ``queries``: only these rows (their
    neighbours among all points), in that order. Memory: a few [chunk, N] blocks.
    """
    x = torch.as_tensor(points).detach().cpu().double()
    n = len(x)
    rows = torch.arange(n) if queries is None else torch.as_tensor(np.asarray(queries), dtype=torch.long)
    chunk = chunk or max(1, (1 << 21) // max(n, 1))  # rows per block: a few [chunk, N] float64 temporaries, ~16 MB each
    sq = (x * x).sum(1)
    out = np.empty((len(rows), k), dtype=np.int64)
    with torch.no_grad():
        for s in range(0, len(rows), chunk):
            block = rows[s : s + chunk]
            xy = x[block] @ x.T  # [b, N]
            x2, y2 = sq[block, None], sq[None, :]
            a = 1 - 2 * c * xy + c * y2
            b = 1 - c * x2
            num = a * a * x2 - 2 * a * b * xy + b * b * y2
            den = 1 - 2 * c * xy + c * c * x2 * y2
            dist = num.clamp_min(0) / (den * den)
            dist[torch.arange(len(block)), block] = math.inf
            out[s : s + chunk] = torch.topk(dist, k, dim=1, largest=False).indices.numpy()
    return out
