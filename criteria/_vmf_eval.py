"""Evaluation helpers shared by the vMF softmax criterion and its baselines (Scott et al. 2021).

* ``is_closed_set(opt, labels, split)``: whether a split's labels are the train classes
  (classification protocol), so that accuracy / calibration make sense.
* ``ece_l1``: the usual expected calibration error, 15 equal-width confidence bins, L1 form
  sum_b (n_b / N) |acc_b - conf_b|.
* ``ece_rms``: the vMF paper's form (its ``calc_ece_em_quant``), 15 equal-mass bins: the i-th smallest
  confidence (i = 0..N-1) goes to bin min(14, floor(15 i / N)); sqrt(sum_b (n_b / N) (acc_b - conf_b)^2).
* ``classification_metrics(probs, labels)``: accuracy, ``ece``, ``ece_rms``.
* ``majority_vote_recall_at_1(sets, labels)``: per query and sampled embedding set, whether its
  nearest neighbour (cosine, self excluded) has its label; the query counts as correct when more
  than half of the sets are correct (the original's ``scipy.stats.mode`` over the per-set
  correctness, whose tie goes to False: a tie counts wrong).
"""

from __future__ import annotations

import numpy as np
import torch

from evaluation import compute_metrics
from evaluation.knn import knn

N_BINS = 15
_CLASSIFICATION_DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100")


def is_closed_set(opt, labels, split: str) -> bool:
    """True when ``split`` holds the train classes (labels 0..C-1 of the same classes).

    Train / evaluation splits always are; torchvision classification datasets and
    ``--digits_split classification`` are for every split. Other datasets (e.g. a class
    folder whose test classes are the train classes): every label lies in 0..C-1 and the split
    is not a class-disjoint validation split (those keep their original class ids, which may
    coincide with 0..C-1; ``--split_protocol vmf`` validation of class-disjoint data is open set).
    """
    if split in ("training", "evaluation"):
        return True
    dataset = getattr(opt, "dataset", "")
    if dataset in _CLASSIFICATION_DATASETS:
        return True
    if dataset == "digits":
        return getattr(opt, "digits_split", "dml") == "classification"
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).reshape(-1)
    n_classes = int(getattr(opt, "n_classes", 0) or 0)
    return split == "testing" and n_classes > 0 and bool(((y >= 0) & (y < n_classes)).all())


def _confidence_correct(probs, labels) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels).reshape(-1)
    return p.max(axis=1), (p.argmax(axis=1) == y).astype(np.float64)


def ece_l1(probs, labels, n_bins: int = N_BINS) -> float:
    """15 equal-width bins over (0, 1], L1 form (Guo et al. 2017)."""
    conf, correct = _confidence_correct(probs, labels)
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
    conf, correct = _confidence_correct(probs, labels)
    n = len(conf)
    bins = np.empty(n, dtype=np.int64)
    bins[np.argsort(conf, kind="stable")] = np.minimum(n_bins - 1, (np.arange(n) * n_bins) // n)
    total = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            total += m.sum() / n * (correct[m].mean() - conf[m].mean()) ** 2
    return float(np.sqrt(total))


def classification_metrics(probs, labels) -> dict[str, float]:
    probs = probs.detach().cpu().double().numpy() if isinstance(probs, torch.Tensor) else np.asarray(probs)
    y = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    y = y.reshape(-1)
    return {
        "accuracy": float((probs.argmax(axis=1) == y).mean()),
        "ece": ece_l1(probs, y),
        "ece_rms": ece_rms(probs, y),
    }


def majority_vote_recall_at_1(sets, labels) -> float:
    """Recall@1 by majority vote over sampled embedding sets (list of [N, d]): a query is correct when
    its nearest neighbour has its label in more than half of the sets (a tie counts as wrong)."""
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).reshape(-1)
    correct = np.stack([y[knn(s, 1, "cosine")[1][:, 0]] == y for s in sets])  # [n_sets, N]
    return float((2 * correct.sum(axis=0) > len(sets)).mean())


def sampled_retrieval(sets, labels) -> dict[str, float]:
    """``vmf_recall@1`` (majority vote) and ``vmf_map_at_r`` (mean of c_map_at_r over the sets)."""
    maps = [compute_metrics(s, labels, ["c_map_at_r"])["c_map_at_r"] for s in sets]
    return {"vmf_recall@1": majority_vote_recall_at_1(sets, labels), "vmf_map_at_r": float(np.mean(maps))}


def closed_set_eval(criterion, logits_fn, embeddings: torch.Tensor, labels, split: str) -> dict[str, float]:
    """accuracy / ECE from softmax(logits_fn(embeddings)) on closed-set splits, else {}."""
    if not is_closed_set(criterion.opt, labels, split):
        return {}
    with torch.no_grad():
        dev = next(iter(criterion.parameters())).device
        probs = torch.softmax(logits_fn(embeddings.to(dev).float()).double(), dim=1)
    return classification_metrics(probs, labels)
