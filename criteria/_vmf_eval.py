"""Evaluation helpers shared by the vMF softmax criterion and its baselines (Scott et al. 2021).

* ``is_closed_set(opt, labels, split)``: whether a split's labels are the train classes
  (classification protocol), so that accuracy / calibration make sense.
* ``ece_l1``: the usual expected calibration error, 15 equal-width confidence bins, L1 form
  sum_b (n_b / N) |acc_b - conf_b|.
* ``ece_rms``: the vMF paper's form, 15 equal-mass bins (sorted confidences cut into 15 nearly
  equal chunks, ``np.array_split``), sqrt(sum_b (n_b / N) (acc_b - conf_b)^2).
* ``classification_metrics(probs, labels)``: accuracy, ``ece``, ``ece_rms``.
* ``majority_vote_recall_at_1(sets, labels)``: per query, the label of its nearest neighbour
  (cosine, self excluded) in every sampled embedding set; the query counts as correct when the
  most frequent retrieved label is unique and equals its label (a tie for the top counts wrong).
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
    """15 equal-mass bins (sorted confidences), RMS form of the vMF paper."""
    conf, correct = _confidence_correct(probs, labels)
    order = np.argsort(conf, kind="stable")
    n = len(conf)
    total = 0.0
    for chunk in np.array_split(order, min(n_bins, n)):
        if len(chunk):
            total += len(chunk) / n * (correct[chunk].mean() - conf[chunk].mean()) ** 2
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
    """Recall@1 by majority vote over sampled embedding sets (list of [N, d]); a tie counts as wrong."""
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).reshape(-1)
    retrieved = np.stack([y[knn(s, 1, "cosine")[1][:, 0]] for s in sets], axis=1)  # [N, n_sets]
    correct = 0
    for row, label in zip(retrieved, y, strict=True):
        values, counts = np.unique(row, return_counts=True)
        top = counts == counts.max()
        correct += int(top.sum() == 1 and values[top][0] == label)
    return correct / len(y)


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
