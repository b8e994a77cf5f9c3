"""Evaluation: embedding extraction and metric orchestration.

``compute_metrics(embeddings, labels, metrics, device)`` validates the metric names,
computes the shared inputs ONCE (one exact k-NN search per geometry with the largest k
any metric needs, one k-means per geometry, the views of the loss that metrics read),
and evaluates every metric on them. ``loss_views(criterion, embeddings, closed_set, seed)``
is the view provider of a trained loss (class probabilities, sampled embeddings, ...).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import numpy as np
import torch

import metrics as metric_registry
from evaluation.clustering import kmeans as _kmeans
from evaluation.extract import extract_embeddings
from evaluation.knn import as_numpy_float32, knn_poincare
from evaluation.knn import knn as _knn
from evaluation.views import loss_views
from metrics import GEOMETRIES, POINCARE, VIEWS, Context
from utilities.errors import UserError

__all__ = ["compute_metrics", "extract_embeddings", "loss_views"]

ViewProvider = Callable[[str], object]


def _view_available(views: ViewProvider | None, name: str) -> bool:
    """Whether the provider gives view ``name`` (asked without computing it when the provider can say so)."""
    if views is None:
        return False
    available = getattr(views, "available", None)
    return available(name) if available is not None else views(name) is not None


def _resolve_views(ctx: Context, objs: list, views: ViewProvider | None) -> list:
    """Fill ``ctx.views`` with what the metrics need, in ``VIEWS`` order; return the metrics that can run."""
    needed = {m.requires.needed_view for m in objs} - {None}
    for name in VIEWS:
        if name in needed and views is not None:
            value = views(name)
            if value is not None:
                ctx.views[name] = value
    return [m for m in objs if m.requires.needed_view is None or m.requires.needed_view in ctx.views]


def _neighbours_needed(requirements: list, n_points: int, max_class_size: int) -> int:
    return max((r.neighbours_needed(n_points, max_class_size) for r in requirements), default=0)


def compute_metrics(
    embeddings,
    labels,
    metrics: list[str],
    device: str | torch.device = "cpu",
    *,
    seed: int = 0,
    timings: dict[str, float] | None = None,
    views: ViewProvider | None = None,
) -> dict[str, float]:
    """Metric name -> value for the embeddings of one split (names as in ``metrics``).

    embeddings: [N, D] tensor or array (any float dtype; evaluated in float32).
    labels: [N] integer class labels. device: where the k-NN search runs ('cuda...': torch
    chunked matmul; else faiss on CPU). seed: k-means seed. timings: if given, filled with
    wall seconds per stage ('knn_euclidean', 'kmeans_cosine', 'metrics', ...).
    views: ``views(name)`` gives what a loss offers beyond the embeddings (a key of
    ``metrics.VIEWS``, e.g. ``"probabilities"``) or None; see ``loss_views``. A metric whose
    view is not given (no provider, or a split that has none) is left out of the result.
    Views are computed lazily, in ``metrics.VIEWS`` order, only when a requested metric reads them.

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
        return {m.name: float("nan") for m in objs
                if m.requires.needed_view is None or _view_available(views, m.requires.needed_view)}  # fmt: skip

    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        warnings.warn("CUDA requested for evaluation but not available; the k-NN search runs on the CPU", stacklevel=2)
        device = torch.device("cpu")

    ctx = Context(x, y)
    objs = _resolve_views(ctx, objs, views)
    max_class_size = int(ctx.class_size.max())
    n_classes = len(np.unique(y))
    on_embeddings = [m.requires for m in objs if m.requires.view != "samples"]
    for geometry in GEOMETRIES:
        wanted = [r for r in on_embeddings if r.geometry == geometry]
        k = _neighbours_needed(wanted, len(x), max_class_size)
        if k > 0:
            start = time.perf_counter()
            ctx.neighbours[geometry] = _knn(x, k, geometry, device)[1]
            timings[f"knn_{geometry}"] = time.perf_counter() - start
        if any(r.kmeans for r in wanted):
            start = time.perf_counter()
            ctx.clusters[geometry] = _kmeans(x, n_classes, geometry, seed=seed)
            timings[f"kmeans_{geometry}"] = time.perf_counter() - start
    k = _neighbours_needed([r for r in on_embeddings if r.geometry == POINCARE], len(x), max_class_size)
    if k > 0:
        start = time.perf_counter()
        points, curvature = ctx.views[POINCARE]
        ctx.neighbours[POINCARE] = knn_poincare(points, k, curvature)
        timings[f"knn_{POINCARE}"] = time.perf_counter() - start
    on_samples = [m.requires for m in objs if m.requires.view == "samples"]
    if on_samples:
        start = time.perf_counter()
        for s in ctx.views["samples"]:
            sample = Context(as_numpy_float32(s), y)
            for geometry in GEOMETRIES:
                k = _neighbours_needed([r for r in on_samples if r.geometry == geometry], len(x), max_class_size)
                if k > 0:
                    sample.neighbours[geometry] = _knn(sample.embeddings, k, geometry, device)[1]
            ctx.sampled.append(sample)
        timings["knn_samples"] = time.perf_counter() - start

    start = time.perf_counter()
    out = {m.name: float(m(ctx)) for m in objs}
    timings["metrics"] = time.perf_counter() - start
    return out
