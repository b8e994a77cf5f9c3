"""Plots of a run: progression of every logged metric (PNG, one panel per metric) and, for probabilistic
losses, the uncertainty plots of the test split; each is a ``training.hooks.Hook``."""

from __future__ import annotations

import math
import time
from pathlib import Path

import matplotlib
import numpy as np

from training.hooks import Evaluation, Hook
from training.run_folder import read_history, run_name

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


class ProgressionPlot(Hook):
    """``progression.png`` from the run's CSVs: at most once a minute (plotting is slow) and at the end."""

    INTERVAL_S = 60

    def on_run_start(self, trainer) -> None:
        self.last = time.time()

    def after_evaluation(self, trainer, evaluation: Evaluation) -> None:
        if time.time() - self.last > self.INTERVAL_S:
            self.plot(trainer)

    def on_run_end(self, trainer) -> None:
        self.plot(trainer)

    def plot(self, trainer) -> None:
        plot_progression(read_history(trainer.run_dir), trainer.run_dir / "progression.png",
                         title=run_name(trainer.opt))  # fmt: skip
        self.last = time.time()


class UncertaintyPlots(Hook):
    """Losses whose embedding norm is a concentration (``criterion.norm_is_certainty``): at the end, the rejection
    curve (``uncertainty_rejection.png``) and the least / most certain images per class (``uncertainty_grid.png``)
    of the test split's saved embeddings (the selected model)."""

    def on_run_end(self, trainer) -> None:
        if not trainer.run.criterion.norm_is_certainty:
            return
        from evaluation.uncertainty_plots import plot_certainty_grid, plot_rejection_curve

        saved = np.load(trainer.run_dir / "embeddings_testing.npz")
        plot_rejection_curve(saved["embeddings"], saved["labels"], trainer.run_dir / "uncertainty_rejection.png")
        plot_certainty_grid(trainer.run.data["testing"], saved["norms"], saved["labels"],
                            trainer.run_dir / "uncertainty_grid.png")  # fmt: skip
