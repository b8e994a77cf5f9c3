"""Progression plots (PNG) of every logged metric over epochs, one panel per metric."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_progression(history: dict[str, list[dict]], path: Path, title: str = "") -> None:
    """Panels of ``metric vs epoch``, one line per split (training/validation/testing)."""
    # Metrics that are NaN throughout (e.g. rho_spectrum@10 of an 8-d embedding) get no panel.
    names = sorted({k for rows in history.values() for r in rows for k, v in r.items() if k != "epoch" and v == v})
    if not names:
        return
    cols = min(4, len(names))
    rows_n = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(4 * cols, 3 * rows_n), squeeze=False)
    for ax, name in zip(axes.flat, names):
        for split, rows in sorted(history.items()):
            pts = [(r["epoch"], r[name]) for r in rows if name in r and r[name] == r[name]]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o", markersize=3, label=split)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    tmp.replace(path)
