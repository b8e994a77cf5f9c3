"""k-means cluster ids for NMI / F1 (faiss, 20 iterations, seeded), as the Roth suite.

faiss is imported when first needed: where it is not installed (e.g. a GPU machine with only torch), k-means runs
in torch instead (k-means++ seeding, the same iterations; not faiss's exact clusters), with a warning once.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from evaluation.knn import as_numpy_float32
from metrics import GEOMETRIES
from utilities.distances import l2_normalize

N_ITER = 20


def kmeans(embeddings, n_clusters: int, metric: str = "euclidean", seed: int = 0) -> np.ndarray:
    """Cluster id in [0, n_clusters) of every row (int64 [N]).

    'euclidean': faiss k-means on the raw embeddings. 'cosine': spherical k-means on the
    L2-normalised embeddings (centroids renormalised each iteration; assignment by largest
    cosine). 20 iterations, one run, seeded; every point is used (no subsampling) and
    centroids may have a single point, as the Roth suite configures faiss. Uses faiss's GPU
    k-means when the installed faiss has GPUs.
    """
    if metric not in GEOMETRIES:
        raise ValueError(f"metric must be one of {GEOMETRIES}, got {metric!r}")
    x = as_numpy_float32(embeddings)
    if metric == "cosine":
        x = l2_normalize(x)
    n, d = x.shape
    if not 1 <= n_clusters <= n:
        raise ValueError(f"n_clusters must be in [1, N={n}], got {n_clusters}")
    try:
        import faiss
    except ImportError:
        return _kmeans_torch(x, n_clusters, metric == "cosine", seed)
    km = faiss.Kmeans(
        d,
        n_clusters,
        niter=N_ITER,
        seed=seed,
        spherical=metric == "cosine",
        min_points_per_centroid=1,
        max_points_per_centroid=max(1, -(-n // n_clusters)),  # >= N / k: no subsampling
        gpu=faiss.get_num_gpus() > 0,
        verbose=False,
    )
    km.train(x)
    _, ids = km.index.search(x, 1)
    return ids[:, 0].astype(np.int64)


_warned = False


def _kmeans_torch(x: np.ndarray, n_clusters: int, spherical: bool, seed: int) -> np.ndarray:
    """Lloyd's k-means without faiss: k-means++ seeding (Arthur & Vassilvitskii 2007) drawn with ``seed``, then
    N_ITER iterations of nearest-centroid assignment (squared Euclidean; with unit rows and renormalised centroids
    that is the largest cosine) and mean update; an emptied centroid keeps its place."""
    global _warned
    if not _warned:
        warnings.warn("faiss is not installed: k-means (NMI, F1) runs in torch; values differ slightly from "
                      "faiss's (pip install faiss-cpu for the Roth suite's exact clustering)", stacklevel=3)  # fmt: skip
        _warned = True
    device = "cuda" if torch.cuda.is_available() else "cpu"
    pts = torch.from_numpy(x).to(device)
    gen = torch.Generator().manual_seed(seed)
    chosen = [int(torch.randint(len(pts), (1,), generator=gen))]
    nearest = torch.cdist(pts, pts[chosen]).squeeze(1) ** 2
    for _ in range(1, n_clusters):  # the next centre with probability proportional to its squared distance
        weights = nearest.cpu().double() if float(nearest.sum()) > 0 else torch.ones(len(pts), dtype=torch.float64)
        chosen.append(int(torch.multinomial(weights, 1, generator=gen)))
        nearest = torch.minimum(nearest, torch.cdist(pts, pts[chosen[-1:]]).squeeze(1) ** 2)
    centroids = pts[chosen].clone()
    for _ in range(N_ITER + 1):  # the last pass only assigns
        ids = torch.cdist(pts, centroids).argmin(dim=1)
        sums = torch.zeros_like(centroids).index_add_(0, ids, pts)
        counts = torch.bincount(ids, minlength=n_clusters).unsqueeze(1)
        centroids = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
        if spherical:
            centroids = torch.nn.functional.normalize(centroids, dim=1)
    return ids.cpu().numpy().astype(np.int64)
