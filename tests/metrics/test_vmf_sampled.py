"""Sampled retrieval of vMF embeddings (``metrics.vmf_sampled``): ``vmf_recall@1`` (majority vote over the sampled
sets, ties wrong: the original's ``scipy.stats.mode`` rule), ``vmf_map_at_r`` (mean over the sets of their cosine
MAP@R) and ``vmf_mean_kappa``, through ``evaluation.compute_metrics`` with hand-built "samples" / "kappa" views,
against hand-computed cases and loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import mode

from evaluation import compute_metrics
from metrics.vmf_sampled import SAMPLED_SETS

SAMPLED = ["vmf_recall@1", "vmf_map_at_r"]


def sampled_metrics(sets, labels, names=("vmf_recall@1",)) -> dict[str, float]:
    """The metrics of the sampled ``sets`` (list of [N, d]); the raw embeddings are the first set."""
    return compute_metrics(np.asarray(sets[0]), labels, list(names),
                           views=lambda name: sets if name == "samples" else None)  # fmt: skip


def vote(sets, labels) -> float:
    return sampled_metrics(sets, labels)["vmf_recall@1"]


def circle(deg):
    r = np.deg2rad(np.asarray(deg, dtype=np.float64))
    return np.stack([np.cos(r), np.sin(r)], 1).astype(np.float32)


def nn_labels_by_loop(points, labels):
    """Label of each point's nearest other point by cosine similarity (plain loop)."""
    out = []
    for i, p in enumerate(points):
        sims = [
            -np.inf if j == i else float(p @ q / np.linalg.norm(p) / np.linalg.norm(q)) for j, q in enumerate(points)
        ]
        out.append(labels[int(np.argmax(sims))])
    return np.array(out)


def test_sampled_sets_per_split():
    assert SAMPLED_SETS == 10  # as the original evaluation


def test_majority_vote_recall_ties_count_wrong():
    labels = np.array([0, 0, 1, 1])
    good = circle([0, 10, 90, 100])  # every nearest neighbour has the query's label
    bad = circle([0, 90, 10, 100])  # every nearest neighbour has the other label
    assert vote([good], labels) == 1.0
    assert vote([good, bad], labels) == 0.0  # 1:1 tie -> wrong
    assert vote([good, bad, good], labels) == 1.0
    assert vote([bad, bad, good], labels) == 0.0
    mixed = circle([0, 10, 60, 150])  # query 2 (60 deg) -> query 1 (10 deg): wrong; query 3 -> query 2: right
    # votes: q0 [T,F,T] q1 [T,F,T] q2 [T,F,F] q3 [T,F,T]
    assert vote([good, bad, mixed], labels) == 0.75
    assert vote(torch.from_numpy(np.stack([good, bad, mixed])), labels) == 0.75  # a [S, N, d] tensor works too


def test_majority_vote_is_the_mode_of_per_set_correctness():
    """The original (evaluate.open_set_val_loop, compute_vmf_performance_metrics.recall_at_1): per set, is the
    nearest neighbour's label right; then scipy.stats.mode over the sets (ties -> False) and the mean."""
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(4), 6)  # 4 classes
    centres = rng.normal(size=(4, 3))
    base = centres[labels] + 0.9 * rng.normal(size=(24, 3))
    sets = [(base + 0.9 * rng.normal(size=base.shape)).astype(np.float32) for _ in range(10)]
    retrieved = np.stack([nn_labels_by_loop(s, labels) for s in sets])  # [10, N]
    reference = float(np.mean(mode((retrieved == labels).astype(int), axis=0).mode))  # ties -> 0 (False)
    assert vote(sets, labels) == pytest.approx(reference, abs=1e-12)
    # the data contain queries where the two rules differ: a plurality of right labels without a majority
    plurality = []
    for row, y in zip(retrieved.T, labels, strict=True):
        values, counts = np.unique(row, return_counts=True)
        top = counts == counts.max()
        plurality.append(top.sum() == 1 and values[top][0] == y)
    assert np.mean(plurality) > reference


def test_majority_vote_plurality_without_majority_is_wrong():
    """3 classes, points in tight pairs (nearest neighbour = pair partner). With 4 sets A0 retrieves labels
    0, 0, 1, 2: the label plurality is right, but only 2 of 4 sets are correct (a tie) -> wrong."""
    names = ["A0", "A1", "B0", "B1", "C0", "C1"]
    labels = np.array([0, 0, 1, 1, 2, 2])

    def pairing(*pairs):
        x = np.zeros((6, 2), dtype=np.float32)
        for k, (p, q) in enumerate(pairs):
            for name, deg in ((p, 120 * k), (q, 120 * k + 5)):
                x[names.index(name)] = [np.cos(np.deg2rad(deg)), np.sin(np.deg2rad(deg))]
        return x

    same = pairing(("A0", "A1"), ("B0", "B1"), ("C0", "C1"))
    mix1 = pairing(("A0", "B0"), ("A1", "C0"), ("B1", "C1"))
    mix2 = pairing(("A0", "C0"), ("A1", "B0"), ("B1", "C1"))
    assert list(nn_labels_by_loop(mix1, labels)[:2]) == [1, 2] and list(nn_labels_by_loop(mix2, labels)[:2]) == [2, 1]
    # every query is right in 2 of 4 sets: a tie, wrong (a label plurality vote would give A0, A1 right: 1/3)
    assert vote([same, same, mix1, mix2], labels) == 0.0
    assert vote([same, same, same, mix1, mix2], labels) == 1.0  # 3 of 5: right
    assert vote([same, mix1, mix2], labels) == 0.0  # 1 of 3


def test_sampled_map_at_r_is_the_mean_of_each_sets_cosine_map_at_r():
    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(3), 5)
    base = rng.normal(size=(3, 4))[labels]
    sets = [(base + 0.8 * rng.normal(size=base.shape)).astype(np.float32) for _ in range(4)]
    per_set = [compute_metrics(s, labels, ["c_map_at_r"])["c_map_at_r"] for s in sets]
    assert len(set(per_set)) > 1  # the sets differ
    out = sampled_metrics(sets, labels, SAMPLED)
    assert out["vmf_map_at_r"] == pytest.approx(np.mean(per_set), abs=1e-12)
    # the metrics read the sets, not the raw embeddings they are computed next to
    shifted = compute_metrics(rng.normal(size=(15, 4)), labels, SAMPLED,
                              views=lambda name: sets if name == "samples" else None)  # fmt: skip
    assert shifted == out


def test_mean_kappa_reads_the_kappa_view_and_metrics_without_their_view_are_left_out():
    labels = np.array([0, 0, 1, 1])
    emb = circle([0, 10, 90, 100])
    kappa = np.array([1.0, 2.0, 4.0, 9.0])
    out = compute_metrics(emb, labels, ["vmf_mean_kappa"], views=lambda name: kappa if name == "kappa" else None)
    assert out == {"vmf_mean_kappa": 4.0}
    assert compute_metrics(emb, labels, ["e_recall@1", "vmf_mean_kappa", *SAMPLED]).keys() == {"e_recall@1"}


def test_sampled_metrics_with_a_query_gallery_split():
    """Each set ranks its gallery items for its queries (the query itself excluded): the majority vote over the sets
    of the per-set nearest-gallery-neighbour correctness (every query), and the mean of each set's split MAP@R."""
    rng = np.random.default_rng(8)
    labels = np.repeat(np.arange(5), 8)
    base = rng.normal(size=(5, 4))[labels]
    sets = [(base + 0.9 * rng.normal(size=base.shape)).astype(np.float32) for _ in range(5)]
    queries, gallery = np.arange(0, 40, 2), np.concatenate([np.arange(1, 40, 2), [0, 8]])  # queries 0, 8 in it too
    per_set_correct, per_set_map = [], []
    for s in sets:
        unit = s / np.linalg.norm(s, axis=1, keepdims=True)
        correct, aps = [], []
        for q in queries:
            others = gallery[gallery != q]
            order = others[np.argsort(-(unit[others] @ unit[q]), kind="stable")]
            rel = labels[order] == labels[q]
            correct.append(rel[0])
            r = int(rel.sum())
            aps.append(sum(rel[: i + 1].sum() / (i + 1) for i in range(r) if rel[i]) / r)
        per_set_correct.append(correct)
        per_set_map.append(np.mean(aps))
    votes = np.sum(per_set_correct, axis=0)
    out = compute_metrics(sets[0], labels, SAMPLED, queries=queries, gallery=gallery,
                          views=lambda name: sets if name == "samples" else None)  # fmt: skip
    assert out["vmf_recall@1"] == pytest.approx(np.mean(2 * votes > len(sets)), abs=1e-12)
    assert out["vmf_map_at_r"] == pytest.approx(np.mean(per_set_map), abs=1e-12)
    assert 0 < out["vmf_map_at_r"] < 1 and 0 < out["vmf_recall@1"] < 1
