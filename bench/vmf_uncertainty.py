"""Does vMF softmax learn uncertainty? Spearman(kappa, corruption strength) on the digits test split.

Trains ``--loss vmf_softmax`` (and a baseline whose "confidence" is the embedding norm) on
``--dataset digits --digits_split classification --digits_corruption S`` and prints, on the test
split, Spearman's rho between the per-image concentration kappa = s ||f(x)|| (baseline: ||f(x)||)
and the per-image corruption strength (negative = more corrupted images get lower kappa).

    python bench/vmf_uncertainty.py [--epochs 6] [--corruption 1.0] [--baseline cosine_softmax]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import evaluation  # noqa: E402
import metrics  # noqa: E402
import parameters  # noqa: E402
from training import Trainer, build_run, default_hooks  # noqa: E402
from training.build import eval_loader  # noqa: E402

# The losses' own metrics shown next to the correlation (those the loss gives the views for).
LOSS_METRICS = ("accuracy", "ece", "ece_rms", "vmf_recall@1", "vmf_map_at_r", "vmf_mean_kappa")

VMF_ARGS = ["--loss", "vmf_softmax", "--optim", "adam", "--lr", "0.003", "--learn_temp", "--temp_lr", "0.001",
            "--embed_dim", "8"]  # fmt: skip


def common_args(save: str, epochs: int, corruption: float, seed: int) -> list[str]:
    return ["--dataset", "digits", "--digits_split", "classification", "--digits_corruption", str(corruption),
            "--data_sampler", "episodic", "--n_episodes", "20", "--episode_classes", "10", "--episode_samples", "13",
            "--n_epochs", str(epochs), "--eval_every", str(epochs), "--no_train_metrics", "--no_progress",
            "--evaluation_metrics", "e_recall@1", "--save_path", save, "--seed", str(seed)]  # fmt: skip


def kappa_corruption_rho(args: list[str], train: bool = True) -> tuple[float, dict]:
    """Train, then Spearman(kappa or norm, corruption) on the test split; also the last test metrics.

    ``train=False``: the same for the untrained network (after ``prepare``), the reference point."""
    opt = parameters.parse_args(args)
    run = build_run(opt)
    if train:
        Trainer(run, default_hooks(opt)).fit()
    else:
        run.criterion.prepare(run.model, eval_loader(run.data["evaluation"], opt), run.device)
    test = run.data["testing"]
    emb, labels = evaluation.extract_embeddings(run.model, eval_loader(test, opt), run.device)
    kappa = run.criterion.image_concentrations(emb)
    kappa = emb.norm(dim=1) if kappa is None else kappa
    rho = spearmanr(kappa.numpy(), np.asarray(test.corruption)).statistic
    own = [m for m in LOSS_METRICS if run.criterion.provides(metrics.select(m).requires.needed_view)]
    views = evaluation.loss_views(run.criterion, emb, closed_set=test.closed_set, seed=opt.seed)
    return float(rho), evaluation.compute_metrics(emb, labels, own, views=views)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--corruption", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--baseline", default="cosine_softmax")
    a = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        runs = [("vmf_softmax", VMF_ARGS),
                (a.baseline, ["--loss", a.baseline, "--optim", "adam", "--lr", "0.003", "--embed_dim", "8",
                              "--learn_temp"])]  # fmt: skip
        rho0, _ = kappa_corruption_rho(VMF_ARGS + common_args(tmp, a.epochs, a.corruption, a.seed), train=False)
        print(f"untrained network: Spearman(kappa, corruption) on test = {rho0:+.3f}")
        for name, extra in runs:
            start = time.time()
            rho, values = kappa_corruption_rho(extra + common_args(tmp, a.epochs, a.corruption, a.seed))
            shown = ", ".join(f"{k} {v:.3f}" for k, v in values.items())
            what = "kappa" if name == "vmf_softmax" else "||f(x)||"
            print(f"{name}: Spearman({what}, corruption) on test = {rho:+.3f} | {shown} | {time.time() - start:.1f}s")


if __name__ == "__main__":
    main()
