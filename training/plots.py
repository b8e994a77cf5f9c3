"""Plots of a run, each a ``training.hooks.Hook``: progression of every logged metric (panels grouped by kind, the
selected epoch marked), what the selected model retrieves, and, for probabilistic losses, the uncertainty plots."""

from __future__ import annotations

import math
import time
from pathlib import Path

import matplotlib
import matplotlib.ticker
import numpy as np

from training.hooks import Evaluation, Hook
from training.run_folder import read_history, run_name

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# Kinds of curves, in the order the figure shows them: (title, does a column name belong to it).
KINDS = (
    (
        "retrieval",
        lambda n: not n.startswith("unc_") and any(t in n for t in ("recall", "map_at_r", "mAP", "precision")),
    ),
    ("classification", lambda n: n in ("accuracy", "ece", "ece_rms")),
    ("clustering", lambda n: n.split("@")[0] in ("nmi", "c_nmi", "f1", "c_f1")),
    ("distances and spectra", lambda n: n.startswith(("dists@", "rho_spectrum@"))),
    ("uncertainty", lambda n: n.startswith(("norms@", "unc_")) or "kappa" in n),
    ("loss and learning rate", lambda n: n in ("loss", "lr") or "temperature" in n),
    ("timing", lambda n: "time" in n),
)
PANELS_PER_ROW = 4


def group_by_kind(names: list[str]) -> list[tuple[str, list[str]]]:
    """``[(kind, names)]`` in ``KINDS`` order (names of no kind last, as 'other'), empty kinds left out."""
    groups, left = [], list(names)
    for kind, belongs in KINDS:
        members = [n for n in left if belongs(n)]
        left = [n for n in left if n not in members]
        if members:
            groups.append((kind, members))
    return groups + ([("other", left)] if left else [])


def plot_progression(history: dict[str, list[dict]], path: Path, title: str = "", selected_epoch: int | None = None,
                     selected_metric: str = "") -> None:  # fmt: skip
    """Panels of ``metric vs epoch`` grouped by kind (retrieval, classification, clustering, distances and spectra,
    uncertainty, loss and learning rate, timing), one line per split, the selected epoch marked by a dashed line."""
    # Metrics that are NaN throughout (e.g. rho_spectrum@10 of an 8-d embedding) get no panel.
    names = sorted({k for rows in history.values() for r in rows for k, v in r.items() if k != "epoch" and v == v})
    if not names:
        return
    groups = group_by_kind(names)
    heights = [math.ceil(len(members) / PANELS_PER_ROW) for _, members in groups]
    cols = min(PANELS_PER_ROW, max(len(members) for _, members in groups))
    fig = plt.figure(figsize=(4 * cols, 3 * sum(heights) + 0.5 * len(groups) + 0.8), layout="constrained")
    subfigs = np.atleast_1d(fig.subfigures(len(groups) + 1, 1, height_ratios=[0.3] + heights))
    subfigs[0].suptitle(title or "progression", fontsize=12, fontweight="bold")
    epochs = sorted({int(r["epoch"]) for rows in history.values() for r in rows})
    locator = matplotlib.ticker.FixedLocator(epochs) if len(epochs) <= 10 else matplotlib.ticker.MaxNLocator(
        integer=True)  # fmt: skip
    colors = {split: f"C{i}" for i, split in enumerate(("training", "validation", "testing"))}
    first = True
    for subfig, (kind, members), n_rows in zip(subfigs[1:], groups, heights):
        subfig.suptitle(kind, fontsize=11, fontweight="bold", x=0.01, ha="left")
        axes = np.atleast_1d(subfig.subplots(n_rows, cols, squeeze=False)).reshape(-1)
        for ax, name in zip(axes, members):
            for split, rows in sorted(history.items()):
                pts = [(r["epoch"], r[name]) for r in rows if name in r and r[name] == r[name]]
                if pts:
                    xs, ys = zip(*pts)
                    ax.plot(xs, ys, marker="o", markersize=4, label=split, color=colors.get(split))
            if selected_epoch is not None:
                ax.axvline(selected_epoch, color="grey", ls="--", lw=1,
                           label=f"selected (best {selected_metric})" if selected_metric else "selected")  # fmt: skip
            ax.set_title(name, fontsize=9)
            ax.set_xlabel("epoch", fontsize=8)
            ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
            ax.xaxis.set_major_locator(locator)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        for ax in axes[len(members) :]:
            ax.axis("off")
        if first:  # one legend for the figure: splits have the same colour in every panel
            handles, labels = [], []
            for ax in axes[: len(members)]:
                for h, lab in zip(*ax.get_legend_handles_labels()):
                    if lab not in labels:
                        handles.append(h)
                        labels.append(lab)
            subfigs[0].legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
            first = False
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
        first = trainer.opt.storage_metrics[0]
        best = trainer.selector.best.get(first)
        plot_progression(read_history(trainer.run_dir), trainer.run_dir / "progression.png",
                         title=run_name(trainer.opt), selected_epoch=best["epoch"] if best else None,
                         selected_metric=first)  # fmt: skip
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
        split = {k: saved[k] for k in ("queries", "gallery") if k in saved.files}  # query -> gallery datasets
        plot_rejection_curve(saved["embeddings"], saved["labels"], trainer.run_dir / "uncertainty_rejection.png",
                             **split)  # fmt: skip
        plot_certainty_grid(trainer.run.data["testing"], saved["norms"], saved["labels"],
                            trainer.run_dir / "uncertainty_grid.png")  # fmt: skip


def retrieval_figure(folder: Path, split: str, dataset, embeddings, labels, criterion, storage_metric: str,
                     title: str = "") -> Path:  # fmt: skip
    """``retrieval_<split>.png`` in ``folder``: the split's seeded queries and their neighbours in the geometry of
    ``storage_metric`` (the run's first), with the certainty of probabilistic losses."""
    import torch

    from evaluation.retrieval_plot import plot_retrievals, selection_geometry

    emb = torch.as_tensor(np.asarray(embeddings, dtype=np.float32))
    geometry = selection_geometry(storage_metric)
    poincare = criterion.poincare_points(emb) if geometry == "poincare" else None
    certainty = None
    if criterion.norm_is_certainty:
        kappa = criterion.image_concentrations(emb)
        certainty = (kappa if kappa is not None else emb.norm(dim=1)).numpy()
    return plot_retrievals(dataset, emb.numpy(), labels, Path(folder) / f"retrieval_{split}.png", geometry=geometry,
                           poincare=poincare, certainty=certainty, title=title or split)  # fmt: skip


class RetrievalPlots(Hook):
    """At the end: ``retrieval_<split>.png`` for the validation and test splits of the selected model (their saved
    embeddings), in the run's selection geometry."""

    def on_run_end(self, trainer) -> None:
        for split, dataset in trainer.run.eval_splits.items():
            path = trainer.run_dir / f"embeddings_{split}.npz"
            if split == "training" or not path.exists():
                continue
            saved = np.load(path)
            retrieval_figure(trainer.run_dir, split, dataset, saved["embeddings"], saved["labels"],
                             trainer.run.criterion, trainer.opt.storage_metrics[0])  # fmt: skip
