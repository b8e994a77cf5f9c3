"""Classification metrics of the loss's classifier on closed-set splits (Scott et al. 2021, vMF loss paper).

They read the ``probabilities`` view: the class probabilities [N, C] the loss predicts (for vMF softmax the mean
over S sampled embeddings and class weights of softmax(beta z^T w)). Only splits whose classes are the train classes
(the dataset says so: ``split.closed_set``) have them; elsewhere these metrics are left out.

* ``accuracy``: share of argmax_c p_i(c) == y_i.
* ``ece``: the usual expected calibration error, 15 equal-width confidence bins over (0, 1], L1 form
  sum_b (n_b / N) |acc_b - conf_b| (Guo et al. 2017).
* ``ece_rms``: the vMF paper's form (its ``calc_ece_em_quant``), 15 equal-mass bins: the i-th smallest confidence
  (i = 0..N-1) goes to bin min(14, floor(15 i / N)); sqrt(sum_b (n_b / N) (acc_b - conf_b)^2).

Example: ``--loss vmf_softmax --evaluation_metrics accuracy ece_rms`` on ``--digits_split classification``.
"""

from __future__ import annotations

import numpy as np

from metrics import register
from metrics._base import Context, Metric, Requires

PAPER = "Scott et al. 2021, von Mises-Fisher Loss (classification accuracy and calibration); Guo et al. 2017 (ECE)"
N_BINS = 15


def confidence_correct(probs, labels) -> tuple[np.ndarray, np.ndarray]:
    """(max probability [N], argmax == label as 0/1 [N])."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels).reshape(-1)
    return p.max(axis=1), (p.argmax(axis=1) == y).astype(np.float64)


def ece_l1(probs, labels, n_bins: int = N_BINS) -> float:
    """15 equal-width bins over (0, 1], L1 form (Guo et al. 2017)."""
    conf, correct = confidence_correct(probs, labels)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)  # (lo, hi]
    total = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            total += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(total)


def ece_rms(probs, labels, n_bins: int = N_BINS) -> float:
    """15 equal-mass bins (the i-th smallest confidence to bin min(14, floor(15 i / N))), RMS form of the vMF paper."""
    conf, correct = confidence_correct(probs, labels)
    n = len(conf)
    bins = np.empty(n, dtype=np.int64)
    bins[np.argsort(conf, kind="stable")] = np.minimum(n_bins - 1, (np.arange(n) * n_bins) // n)
    total = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            total += m.sum() / n * (correct[m].mean() - conf[m].mean()) ** 2
    return float(np.sqrt(total))


FORMULAS = {
    "accuracy": lambda probs, y: float((probs.argmax(axis=1) == y).mean()),
    "ece": ece_l1,
    "ece_rms": ece_rms,
}


@register("accuracy", paper=PAPER)
@register("ece", paper=PAPER)
@register("ece_rms", paper=PAPER)
class ClassifierMetric(Metric):
    """``accuracy`` / ``ece`` / ``ece_rms`` of the loss's class probabilities (see the module docstring)."""

    def __init__(self, name: str, geometry: None = None, arg: None = None):
        self.name = name
        self.requires = Requires(view="probabilities")

    def __call__(self, ctx: Context) -> float:
        probs = np.asarray(ctx.views["probabilities"], dtype=np.float64)
        return FORMULAS[self.name](probs, ctx.labels)
