"""Uncertainty plots of probabilistic embeddings: rejection curve and a grid of least / most certain images.

The certainty of an image is its embedding norm (the vMF concentration), as in ``metrics.uncertainty``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from evaluation.images import DPI, TILE_PX, pyplot, tile

GRID_MAX_CLASSES = 32  # rows of the certainty grid; splits with more classes show this many, evenly spaced
_ROW_IN, _COL_IN = 0.8, 0.8  # inches per grid row / column (80 px at DPI 100)
_LEFT_IN, _TOP_IN = 0.6, 0.5  # class-label margin, title margin


def rejection_data(embeddings, labels, queries=None, gallery=None) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(rejected share, cosine Recall@1 of the kept queries, area, Recall@1 without rejection), least certain
    (smallest norm) rejected first. As ``unc_recall_area``: each query's neighbour is searched among the gallery
    (default: every item; masks or item indices as ``evaluation.search``), itself excluded, and lone queries (no
    gallery item of their class) are left out, so ``area`` equals that metric."""
    from evaluation.knn import search
    from metrics import Context
    from metrics.uncertainty import nn_correct, query_certainty, rejection_curve

    x = np.asarray(embeddings, dtype=np.float32)
    ctx = Context(x, np.asarray(labels).reshape(-1), queries=queries, gallery=gallery)
    keep = ctx.not_lone
    if not keep.any():
        return np.zeros(0), np.zeros(0), float("nan"), float("nan")
    ctx.neighbours["cosine"] = search(x, {"cosine": 1}, queries=ctx.queries, gallery=ctx.gallery)["cosine"][1]
    correct = nn_correct(ctx, "cosine")[keep].astype(np.float64)
    rejected, recall = rejection_curve(query_certainty(ctx)[keep], correct)
    return rejected, recall, float(recall.mean()), float(correct.mean())


def plot_rejection_curve(embeddings, labels, path, queries=None, gallery=None) -> Path:
    """PNG of cosine Recall@1 of the kept queries vs the share rejected (least certain = smallest norm first);
    ``queries`` / ``gallery`` as ``rejection_data``."""
    rejected, recall, area, base = rejection_data(embeddings, labels, queries, gallery)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(rejected * 100, recall, label=f"by norm (area {area:.3f})")
    ax.axhline(base, ls="--", c="grey", label="no rejection")
    ax.set_xlabel("rejected least-certain queries (%)")
    ax.set_ylabel("Recall@1 (cosine) of kept queries")
    ax.set_title(f"{len(recall)} queries (lone queries left out)", fontsize=8)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def grid_classes(labels, max_classes: int = GRID_MAX_CLASSES) -> np.ndarray:
    """The classes the grid shows: all of them, or ``max_classes`` evenly spaced over the sorted class ids."""
    classes = np.unique(np.asarray(labels).reshape(-1))
    if len(classes) <= max_classes:
        return classes
    return classes[np.unique(np.linspace(0, len(classes) - 1, max_classes).round().astype(int))]


def plot_certainty_grid(dataset, norms, labels, path, n_classes: int = GRID_MAX_CLASSES, per_side: int = 4) -> Path:
    """PNG grid: one row per class (every class of the split up to ``n_classes``, evenly spaced beyond), its
    ``per_side`` least certain images (left) then its ``per_side`` most certain (right), each with its norm.

    ``dataset.raw_image(i)`` gives image i (a PIL image or array), aligned with ``norms`` and ``labels``. The figure
    is one mosaic image (fast for hundreds of tiles): (0.6 + 0.8 x 2 per_side) in wide, (0.5 + 0.8 x rows) in high.
    """
    norms, labels = np.asarray(norms, dtype=np.float64).reshape(-1), np.asarray(labels).reshape(-1)
    all_classes = np.unique(labels)
    classes = grid_classes(labels, n_classes)
    cols = 2 * per_side
    mosaic = np.full((len(classes) * TILE_PX, cols * TILE_PX, 3), 255, dtype=np.uint8)
    captions = []
    for r, c in enumerate(classes):
        idx = np.flatnonzero(labels == c)
        order = idx[np.argsort(norms[idx], kind="stable")]
        low = list(order[:per_side])
        high = list(order[max(len(low), len(order) - per_side) :])  # no image on both sides
        for j, i in [(j, i) for j, i in enumerate(low)] + [(per_side + j, i) for j, i in enumerate(high)]:
            mosaic[r * TILE_PX : (r + 1) * TILE_PX, j * TILE_PX : (j + 1) * TILE_PX] = tile(dataset.raw_image(int(i)))
            captions.append((r, j, norms[int(i)]))
    plt = pyplot()
    width, height = _LEFT_IN + cols * _COL_IN, _TOP_IN + len(classes) * _ROW_IN
    fig = plt.figure(figsize=(width, height), dpi=DPI)
    ax = fig.add_axes((_LEFT_IN / width, 0, cols * _COL_IN / width, len(classes) * _ROW_IN / height))
    ax.imshow(mosaic, interpolation="nearest", aspect="auto")
    ax.set_xlim(-0.5, cols * TILE_PX - 0.5)
    ax.set_ylim(len(classes) * TILE_PX - 0.5, -0.5)
    ax.axis("off")
    ax.axvline(per_side * TILE_PX - 0.5, color="red", lw=1.5)
    for r, j, value in captions:
        ax.text(j * TILE_PX + 2, r * TILE_PX + 2, f"{value:.3g}", fontsize=6, va="top", ha="left", color="black",
                bbox=dict(boxstyle="square,pad=0.1", fc="yellow", ec="none", alpha=0.8))  # fmt: skip
    for r, c in enumerate(classes):
        ax.text(-6, (r + 0.5) * TILE_PX, str(c), fontsize=8, ha="right", va="center", clip_on=False)
    shown = f"all {len(classes)} classes" if len(classes) == len(all_classes) else (
        f"{len(classes)} of {len(all_classes)} classes, evenly spaced (cap {n_classes})")  # fmt: skip
    fig.suptitle(f"least certain (left {per_side}) | most certain (right {per_side}); label = norm; {shown}",
                 fontsize=8, y=1 - 0.5 * _TOP_IN / height, va="center")  # fmt: skip
    path = Path(path)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
