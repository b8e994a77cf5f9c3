"""Uncertainty plots of probabilistic embeddings: rejection curve and a grid of least / most certain images."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_rejection_curve(embeddings, labels, path) -> Path:
    """PNG of cosine Recall@1 of the kept queries vs the share rejected (least certain = smallest norm first)."""
    from metrics.uncertainty import rejection_curve

    x = np.asarray(embeddings, dtype=np.float32)
    y = np.asarray(labels).reshape(-1)
    from evaluation.knn import knn

    nn = knn(x, 1, "cosine", "cpu")[1][:, 0]
    correct = (y[nn] == y).astype(np.float64)
    rejected, recall = rejection_curve(np.linalg.norm(x, axis=1), correct)
    area = float(recall.mean())
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(rejected * 100, recall, label=f"by norm (area {area:.3f})")
    ax.axhline(correct.mean(), ls="--", c="grey", label="no rejection")
    ax.set_xlabel("rejected least-certain queries (%)")
    ax.set_ylabel("Recall@1 (cosine) of kept queries")
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_certainty_grid(dataset, norms, labels, path, n_classes: int = 8, per_side: int = 4) -> Path:
    """PNG grid: one row per class (up to ``n_classes``), its ``per_side`` least then most certain images."""
    norms, labels = np.asarray(norms).reshape(-1), np.asarray(labels).reshape(-1)
    classes = np.unique(labels)[:n_classes]
    plt = _plt()
    cols = 2 * per_side
    fig, axes = plt.subplots(len(classes), cols, figsize=(cols * 1.2, len(classes) * 1.3), squeeze=False)
    for r, c in enumerate(classes):
        idx = np.flatnonzero(labels == c)
        order = idx[np.argsort(norms[idx], kind="stable")]
        picks = list(order[:per_side]) + list(order[-per_side:])
        for j in range(cols):
            ax = axes[r, j]
            ax.axis("off")
            if j < len(picks):
                i = int(picks[j])
                img = np.asarray(dataset.raw_image(i))
                ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
                ax.set_title(f"{norms[i]:.3g}", fontsize=6)
        axes[r, 0].text(-0.3, 0.5, str(c), transform=axes[r, 0].transAxes, ha="right", va="center")
    fig.suptitle(f"least certain (left {per_side}) | most certain (right {per_side}); title = norm", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
