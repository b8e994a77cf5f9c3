"""What a model retrieves: a fixed, seeded set of queries of one split with their top-k neighbours.

``plot_retrievals`` draws one row per query: the query image, then its k nearest neighbours (self excluded) in
the run's selection geometry, each framed green (same class as the query) or red (another class); the row's
label gives the query's class and, for probabilistic losses, its certainty (concentration). The queries are
``choose_queries``: ``N_QUERIES`` items drawn with ``numpy.random.default_rng(SEED)`` among those with at least one
other item of their class, so two runs (or a run and its re-evaluation) show the same queries.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import metrics
from evaluation.images import DPI, TILE_PX, pyplot, tile
from evaluation.knn import knn_poincare, max_neighbours, search
from metrics import GEOMETRIES, POINCARE

N_QUERIES, K, SEED = 8, 5, 0
CORRECT, WRONG = (0, 160, 0), (220, 0, 0)  # frame colours (RGB)
_ROW_IN, _COL_IN, _LEFT_IN, _TOP_IN = 0.8, 0.8, 1.3, 0.5  # inches per row / column, label and title margins


def choose_queries(labels, n: int = N_QUERIES, seed: int = SEED, query=None, gallery=None) -> np.ndarray:
    """Up to ``n`` sorted item indices with a same-class item elsewhere in the split, drawn with ``seed``; with
    ``query`` / ``gallery`` masks, query items with a same-class gallery item other than themselves."""
    labels = np.asarray(labels).reshape(-1)
    in_query = np.ones(len(labels), bool) if query is None else np.asarray(query, bool)
    in_gallery = np.ones(len(labels), bool) if gallery is None else np.asarray(gallery, bool)
    classes, inverse = np.unique(labels, return_inverse=True)
    per_class = np.bincount(inverse.reshape(-1), weights=in_gallery, minlength=len(classes))
    others = per_class[inverse.reshape(-1)] - in_gallery  # same-class gallery items other than the item itself
    candidates = np.flatnonzero(in_query & (others > 0))
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(candidates, min(n, len(candidates)), replace=False))


def retrievals(embeddings, queries, k: int, geometry: str, poincare=None, gallery=None) -> np.ndarray:
    """[len(queries), k] neighbour ids (item indices) among ``gallery`` (None: every other item) in ``geometry``
    ('euclidean', 'cosine', or 'poincare' with ``poincare = (ball points, curvature)``)."""
    if geometry == POINCARE:
        points, c = poincare
        return knn_poincare(points, k, c, queries=queries, gallery=gallery)
    if geometry not in GEOMETRIES:
        raise ValueError(f"geometry must be one of {(*GEOMETRIES, POINCARE)}, got {geometry!r}")
    return search(embeddings, {geometry: k}, queries=queries, gallery=gallery)[geometry][1].astype(np.int64)


def plot_retrievals(dataset, embeddings, labels, path, geometry: str = "cosine", poincare=None, certainty=None,
                    k: int = K, n_queries: int = N_QUERIES, seed: int = SEED, title: str = "") -> Path:  # fmt: skip
    """PNG of ``n_queries`` queries (rows) and their ``k`` nearest neighbours (columns after the query).

    ``dataset.raw_image(i)`` gives image i, aligned with ``embeddings`` [N, D] and ``labels`` [N]; a split with
    ``dataset.query`` / ``dataset.gallery`` masks draws its queries among the queries and searches the gallery.
    ``certainty``: [N] per-image concentration (probabilistic losses), shown with each query.
    """
    labels = np.asarray(labels).reshape(-1)
    query, gallery = dataset.query, dataset.gallery
    queries = choose_queries(labels, n_queries, seed, query, gallery)
    gallery_ids = None if gallery is None else np.flatnonzero(gallery)
    k = min(k, max_neighbours(queries, gallery_ids, len(labels)))
    ids = retrievals(embeddings, queries, k, geometry, poincare, gallery_ids)
    cols = k + 1
    mosaic = np.full((max(1, len(queries)) * TILE_PX, cols * TILE_PX, 3), 255, dtype=np.uint8)
    hits = 0
    for r, (q, row) in enumerate(zip(queries, ids)):
        mosaic[r * TILE_PX : (r + 1) * TILE_PX, :TILE_PX] = tile(dataset.raw_image(int(q)), border=(90, 90, 90))
        for j, i in enumerate(row, start=1):
            same = labels[i] == labels[q]
            hits += bool(same)
            frame = tile(dataset.raw_image(int(i)), border=CORRECT if same else WRONG)
            mosaic[r * TILE_PX : (r + 1) * TILE_PX, j * TILE_PX : (j + 1) * TILE_PX] = frame
    plt = pyplot()
    width, height = _LEFT_IN + cols * _COL_IN, _TOP_IN + max(1, len(queries)) * _ROW_IN
    fig = plt.figure(figsize=(width, height), dpi=DPI)
    ax = fig.add_axes((_LEFT_IN / width, 0, cols * _COL_IN / width, max(1, len(queries)) * _ROW_IN / height))
    ax.imshow(mosaic, interpolation="nearest", aspect="auto")
    ax.axis("off")
    ax.axvline(TILE_PX - 0.5, color="black", lw=1.5)
    names = getattr(dataset, "class_names", None)
    for r, q in enumerate(queries):
        name = names[labels[q]] if names is not None and 0 <= labels[q] < len(names) else str(labels[q])
        text = f"{str(name)[:16]}" + (f"\nkappa {float(certainty[q]):.3g}" if certainty is not None else "")
        ax.text(-6, (r + 0.5) * TILE_PX, text, fontsize=7, ha="right", va="center", clip_on=False)
    share = hits / max(1, len(queries) * k)
    fig.suptitle(f"{title + ': ' if title else ''}query | top-{k} neighbours ({geometry}); green = same class, "
                 f"red = other ({share:.0%} correct)", fontsize=8, y=1 - 0.5 * _TOP_IN / height, va="center")  # fmt: skip
    path = Path(path)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def selection_geometry(metric_name: str) -> str:
    """The geometry in which the run selects its models: that of its first storage metric (cosine when that metric
    has none, e.g. accuracy; the sampled vMF metrics search cosine neighbours)."""
    return metrics.select(metric_name).requires.geometry or "cosine"
