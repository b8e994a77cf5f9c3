"""k-means cluster ids for NMI / F1 (faiss, 20 iterations, seeded), as the Roth suite."""

from __future__ import annotations

import faiss
import numpy as np

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
