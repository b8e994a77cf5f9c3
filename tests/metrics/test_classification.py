"""Classification metrics of a loss's classifier (``metrics.classification``): ``ece_l1`` / ``ece_rms`` against naive
loops of their definitions (Guo et al. 2017; the vMF paper's ``calc_ece_em_quant``), and the metrics ``accuracy``,
``ece``, ``ece_rms`` through ``evaluation.compute_metrics`` with the "probabilities" view."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evaluation import compute_metrics
from metrics.classification import N_BINS, ece_l1, ece_rms

CLASSIFIER_METRICS = ["accuracy", "ece", "ece_rms"]


def naive_ece(probs, labels, equal_mass):
    conf, pred = probs.max(1), probs.argmax(1)
    n = len(conf)
    total = 0.0
    if equal_mass:  # the original's calc_ece_em_quant: i-th smallest confidence -> bin min(14, floor(i / n * 15))
        order = sorted(range(n), key=lambda i: (conf[i], i))
        bins = {}
        for rank, i in enumerate(order):
            bins.setdefault(min(14, math.floor(rank / n * 15)), []).append(i)
        for idx in bins.values():
            acc = sum(pred[i] == labels[i] for i in idx) / len(idx)
            total += len(idx) * abs(acc - sum(conf[i] for i in idx) / len(idx)) ** 2
        return math.sqrt(total / n)
    for b in range(15):
        lo, hi = b / 15, (b + 1) / 15
        idx = [i for i in range(n) if (lo < conf[i] <= hi) or (b == 0 and conf[i] == 0)]
        if idx:
            acc = sum(pred[i] == labels[i] for i in idx) / len(idx)
            total += len(idx) / n * abs(acc - sum(conf[i] for i in idx) / len(idx))
    return total


def naive_accuracy(probs, labels):
    return sum(int(max(range(len(row)), key=lambda c: row[c]) == y) for row, y in zip(probs, labels)) / len(labels)


def random_predictions(n: int = 203, n_classes: int = 5, seed: int = 0):
    """Dirichlet class probabilities and labels that agree with the argmax 60% of the time (plus chance)."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(n_classes, 0.4), size=n)
    labels = np.where(rng.random(n) < 0.6, probs.argmax(1), rng.integers(0, n_classes, n))
    return probs, labels


def probabilities_view(probs):
    return lambda name: probs if name == "probabilities" else None


def test_ece_forms_match_naive_loops():
    assert N_BINS == 15
    probs, labels = random_predictions()
    assert ece_l1(probs, labels) == pytest.approx(naive_ece(probs, labels, False), abs=1e-12)
    assert ece_rms(probs, labels) == pytest.approx(naive_ece(probs, labels, True), abs=1e-12)
    assert ece_l1(probs, labels) > 0.01
    # 203 = 15 * 13 + 8: the original's bins hold 13 or 14 items in an interleaved pattern, unlike
    # np.array_split's 8 bins of 14 first; the two binnings give different values here.
    conf, correct = probs.max(1), (probs.argmax(1) == labels).astype(float)
    chunks = np.array_split(np.argsort(conf, kind="stable"), 15)
    split_rms = math.sqrt(sum(len(c) / 203 * (correct[c].mean() - conf[c].mean()) ** 2 for c in chunks))
    assert abs(ece_rms(probs, labels) - split_rms) > 1e-4


def test_perfectly_calibrated_certain_predictions_have_zero_ece():
    probs = np.eye(4)[[0, 1, 2, 3, 1]]
    labels = np.array([0, 1, 2, 3, 1])
    assert ece_l1(probs, labels) == 0.0 and ece_rms(probs, labels) == 0.0
    wrong = np.array([1, 1, 2, 3, 1])  # one certain mistake out of 5: |acc - conf| = 1/5 in the top bin
    assert ece_l1(probs, wrong) == pytest.approx(0.2)


@pytest.mark.parametrize("seed", [0, 1])
def test_metrics_read_the_probabilities_view_and_match_the_loops(seed):
    probs, labels = random_predictions(seed=seed)
    emb = np.random.default_rng(seed).normal(size=(len(labels), 4)).astype(np.float32)
    out = compute_metrics(emb, labels, ["e_recall@1", *CLASSIFIER_METRICS], views=probabilities_view(probs))
    assert set(out) == {"e_recall@1", *CLASSIFIER_METRICS}
    assert out["accuracy"] == pytest.approx(naive_accuracy(probs, labels), abs=1e-12)
    assert 0.5 < out["accuracy"] < 1
    assert out["ece"] == pytest.approx(naive_ece(probs, labels, False), abs=1e-12)
    assert out["ece_rms"] == pytest.approx(naive_ece(probs, labels, True), abs=1e-12)
    # the values come from the view, not the embeddings: other embeddings, same classification metrics
    other = compute_metrics(emb * -3 + 1, labels, CLASSIFIER_METRICS, views=probabilities_view(probs))
    assert other == {k: out[k] for k in CLASSIFIER_METRICS}


def test_metrics_are_left_out_where_the_split_has_no_probabilities():
    """No provider, or a provider without class probabilities (a class-disjoint split): the other metrics only."""
    probs, labels = random_predictions(n=40)
    emb = np.random.default_rng(2).normal(size=(40, 3))
    assert set(compute_metrics(emb, labels, ["e_recall@1", *CLASSIFIER_METRICS])) == {"e_recall@1"}
    assert compute_metrics(emb, labels, CLASSIFIER_METRICS, views=lambda name: None) == {}
    asked = []
    compute_metrics(emb, labels, ["e_recall@1"], views=lambda name: asked.append(name))
    assert asked == []  # a view no metric needs is never computed
