"""Evaluation: embedding extraction and metric orchestration.

``compute_metrics(embeddings, labels, metrics, device)`` validates the metric names,
computes the shared inputs ONCE (one exact k-NN search serving both geometries with the largest k
any metric needs, one k-means per geometry, the views of the loss that metrics read),
and evaluates every metric on them. ``queries=`` / ``gallery=`` evaluate the neighbour metrics for a query
set against a gallery (default: every item against every other). ``loss_views(criterion, embeddings,
closed_set, seed)`` is the view provider of a trained loss (class probabilities, sampled embeddings, ...).
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
from evaluation.knn import as_index, as_numpy_float32, knn_poincare
from evaluation.knn import search as knn_search
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


def _neighbours_needed(requirements: list, n_candidates: int, max_relevant: int) -> int:
    return max((r.neighbours_needed(n_candidates, max_relevant) for r in requirements), default=0)


def _ks(by_geometry: dict[str, list], n_candidates: int, max_relevant: int) -> dict[str, int]:
    """geometry -> the neighbours its metrics need, for the geometries that need some."""
    ks = {g: _neighbours_needed(reqs, n_candidates, max_relevant) for g, reqs in by_geometry.items()}
    return {g: k for g, k in ks.items() if k > 0}


def _item_set(items, n: int, what: str) -> np.ndarray | None:
    """``queries`` / ``gallery`` as sorted, distinct item indices (None: every item); UserError on a bad value."""
    if items is None:
        return None
    try:
        out = np.sort(as_index(items, n, what))
    except ValueError as err:
        raise UserError(f"compute_metrics: {err}") from None
    if np.any(out[1:] == out[:-1]):
        raise UserError(f"compute_metrics: {what} indices must be distinct")
    if len(out) == 0:
        raise UserError(f"compute_metrics: the {what} set is empty")
    return out


def compute_metrics(
    embeddings,
    labels,
    metrics: list[str],
    device: str | torch.device = "cpu",
    *,
    seed: int = 0,
    timings: dict[str, float] | None = None,
    views: ViewProvider | None = None,
    queries=None,
    gallery=None,
    backend: str = "torch",
) -> dict[str, float]:
    """Metric name -> value for the embeddings of one split (names as in ``metrics``).

    embeddings: [N, D] tensor or array (any float dtype; evaluated in float32).
    labels: [N] integer class labels. device: where the k-NN search runs ('cuda...' or the CPU).
    seed: k-means seed. timings: if given, filled with wall seconds per stage ('knn' (the one search of both
    geometries), 'kmeans_cosine', 'knn_samples', 'metrics', ...).
    views: ``views(name)`` gives what a loss offers beyond the embeddings (a key of
    ``metrics.VIEWS``, e.g. ``"probabilities"``) or None; see ``loss_views``. A metric whose
    view is not given (no provider, or a split that has none) is left out of the result.
    Views are computed lazily, in ``metrics.VIEWS`` order, only when a requested metric reads them.

    queries, gallery: None (every item, the default: self retrieval), a boolean mask [N] or distinct item
    indices. Every neighbour metric (Recall@k, MAP@R, R-precision, mAP@1000, the sampled vMF and the
    uncertainty metrics) then ranks the gallery for each query; a query in the gallery never retrieves itself,
    R = gallery items of the query's class (less the query itself when it is in the gallery), and queries with
    R = 0 are left out, as pytorch-metric-learning's ``AccuracyCalculator.get_accuracy(query, query_labels,
    reference, reference_labels, ref_includes_query)``. k is capped at the neighbours every query can have (the
    gallery size, less one if some query is in the gallery). Clustering (NMI, F1), the set statistics (dists,
    rho_spectrum, norms) and the classifier's metrics use every item.
    backend: the k-NN search, 'torch' (one Gram block serves both geometries; CPU and CUDA) or 'faiss' (CPU;
    one faiss search per geometry, the suite's previous path, kept for cross-checks).

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
    split = {"queries": _item_set(queries, len(x), "queries"), "gallery": _item_set(gallery, len(x), "gallery")}
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

    ctx = Context(x, y, **split)
    objs = _resolve_views(ctx, objs, views)
    n_candidates, max_relevant = ctx.n_candidates, int(ctx.n_relevant.max())
    needs = {g: [m.requires for m in objs if m.requires.geometry == g] for g in (*GEOMETRIES, POINCARE)}
    on_embeddings = {g: [r for r in needs[g] if r.view != "samples"] for g in needs}
    on_samples = {g: [r for r in needs[g] if r.view == "samples"] for g in GEOMETRIES}
    if n_candidates == 0 and any(m.requires.k > 0 or m.requires.r_offset is not None for m in objs):
        raise UserError("compute_metrics: the gallery holds nothing but the query itself to retrieve")
    ks = _ks({g: on_embeddings[g] for g in GEOMETRIES}, n_candidates, max_relevant)
    if ks:
        start = time.perf_counter()
        found = knn_search(x, ks, device=device, backend=backend, **split)
        ctx.neighbours.update({g: ids for g, (_, ids) in found.items()})
        timings["knn"] = time.perf_counter() - start
    for geometry in GEOMETRIES:
        if any(r.kmeans for r in on_embeddings[geometry]):
            start = time.perf_counter()
            ctx.clusters[geometry] = _kmeans(x, len(np.unique(y)), geometry, seed=seed)
            timings[f"kmeans_{geometry}"] = time.perf_counter() - start
    k = _neighbours_needed(on_embeddings[POINCARE], n_candidates, max_relevant)
    if k > 0:
        start = time.perf_counter()
        points, curvature = ctx.views[POINCARE]
        ctx.neighbours[POINCARE] = knn_poincare(points, k, curvature, **split)
        timings[f"knn_{POINCARE}"] = time.perf_counter() - start
    ks = _ks(on_samples, n_candidates, max_relevant)
    if "samples" in ctx.views and ks:
        start = time.perf_counter()
        for s in ctx.views["samples"]:
            sample = Context(as_numpy_float32(s), y, queries=ctx.queries, gallery=ctx.gallery)
            found = knn_search(sample.embeddings, ks, device=device, backend=backend, **split)
            sample.neighbours.update({g: ids for g, (_, ids) in found.items()})
            ctx.sampled.append(sample)
        timings["knn_samples"] = time.perf_counter() - start

    start = time.perf_counter()
    out = {m.name: float(m(ctx)) for m in objs}
    timings["metrics"] = time.perf_counter() - start
    return out
