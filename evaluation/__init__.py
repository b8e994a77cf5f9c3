"""Evaluation: embedding extraction and metric orchestration.

``compute_metrics(embeddings, labels, metrics, device)`` validates the metric names,
computes the shared inputs ONCE (one exact k-NN search per geometry with the largest k
any metric needs, one k-means per geometry), and evaluates every metric on them.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch

import metrics as metric_registry
from evaluation.clustering import kmeans as _kmeans
from evaluation.extract import extract_embeddings
from evaluation.knn import as_numpy_float32
from evaluation.knn import knn as _knn
from metrics._base import GEOMETRIES, Context
from utilities.errors import UserError

__all__ = ["compute_metrics", "extract_embeddings"]


def compute_metrics(
    embeddings,
    labels,
    metrics: list[str],
    device: str | torch.device = "cpu",
    *,
    seed: int = 0,
    timings: dict[str, float] | None = None,
) -> dict[str, float]:
    """Metric name -> value for the embeddings of one split (names as in DESIGN section 7).

    embeddings: [N, D] tensor or array (any float dtype; evaluated in float32).
    labels: [N] integer class labels. device: where the k-NN search runs ('cuda...': torch
    chunked matmul; else faiss on CPU). seed: k-means seed. timings: if given, filled with
    wall seconds per stage ('knn_euclidean', 'kmeans_cosine', 'metrics', ...).

    Non-finite embeddings (a diverged run) give NaN for every metric, with a warning.
    """
    objs = [metric_registry.select(name) for name in metrics]
    timings = {} if timings is None else timings
    x = as_numpy_float32(embeddings)
    y = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    y = y.reshape(-1)
    if x.ndim != 2 or len(x) != len(y):
        raise UserError(
            f"compute_metrics needs embeddings [N, D] and N labels; got {tuple(x.shape)} and {len(y)} labels"
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise UserError(f"compute_metrics needs integer class labels, got dtype {y.dtype}")
    if not objs:
        return {}
    if len(x) < 2:
        raise UserError(
            f"cannot evaluate retrieval/clustering metrics on {len(x)} embedding(s); the split needs >= 2 items"
        )
    if not np.isfinite(x).all():
        warnings.warn("embeddings contain NaN or inf (did training diverge?); every metric is NaN", stacklevel=2)
        return {m.name: float("nan") for m in objs}

    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        warnings.warn("CUDA requested for evaluation but not available; the k-NN search runs on the CPU", stacklevel=2)
        device = torch.device("cpu")

    ctx = Context(x, y)
    max_class_size = int(ctx.class_size.max())
    n_classes = len(np.unique(y))
    for geometry in GEOMETRIES:
        wanted = [m.requires for m in objs if m.requires.geometry == geometry]
        k = max((r.neighbours_needed(len(x), max_class_size) for r in wanted), default=0)
        if k > 0:
            start = time.perf_counter()
            ctx.neighbours[geometry] = _knn(x, k, geometry, device)[1]
            timings[f"knn_{geometry}"] = time.perf_counter() - start
        if any(r.kmeans for r in wanted):
            start = time.perf_counter()
            ctx.clusters[geometry] = _kmeans(x, n_classes, geometry, seed=seed)
            timings[f"kmeans_{geometry}"] = time.perf_counter() - start

    start = time.perf_counter()
    out = {m.name: float(m(ctx)) for m in objs}
    timings["metrics"] = time.perf_counter() - start
    return out
