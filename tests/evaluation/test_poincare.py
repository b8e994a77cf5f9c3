"""Neighbours and retrieval on a Poincare ball (the hyperbolic softmax's geometry): ``evaluation.knn.knn_poincare``
against the brute-force distance of the vMF paper's code, and the ``poincare_recall@k`` / ``poincare_map_at_r``
metrics (view "poincare" = (points, c)) through ``compute_metrics`` against naive loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from criteria.hyperbolic_softmax import expmap0
from evaluation import compute_metrics
from evaluation.knn import knn_poincare

C = 0.8
POINCARE_METRICS = ["poincare_recall@1", "poincare_map_at_r"]


def original_poincare_dist(x, c):
    """The vMF code's hypnn.pairwise_dist_matrix rule per pair: 2/sqrt(c) artanh(sqrt(c) ||(-x) (+)_c y||)."""
    n = len(x)
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            u, v = -x[i], x[j]
            uv, u2, v2 = u @ v, u @ u, v @ v
            m = ((1 + 2 * c * uv + c * v2) * u + (1 - c * u2) * v) / (1 + 2 * c * uv + c**2 * u2 * v2)
            out[i, j] = 2 / np.sqrt(c) * np.arctanh(np.sqrt(c) * np.linalg.norm(m))
    return out


def clustered_ball_points(seed: int = 4):
    """21 points in 3 classes of 7, mapped into the ball of curvature C: (raw z, ball points x, labels)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), 7)
    z = rng.normal(size=(3, 4))[labels] * 1.2 + rng.normal(size=(21, 4))
    return z, expmap0(torch.from_numpy(z), C), labels


def brute_force_order(x: torch.Tensor, k: int) -> np.ndarray:
    dist = original_poincare_dist(x.numpy(), C)
    np.fill_diagonal(dist, np.inf)
    return np.argsort(dist, axis=1, kind="stable")[:, :k]


def test_knn_poincare_matches_the_original_distance():
    _, x, _ = clustered_ball_points()
    order = brute_force_order(x, 6)
    np.testing.assert_array_equal(knn_poincare(x, 6, C, chunk=5), order)
    np.testing.assert_array_equal(knn_poincare(x, 6, C), order)  # default chunk: one block
    np.testing.assert_array_equal(knn_poincare(x.float(), 3, C), order[:, :3])  # any float input (float64 inside)
    euclid = np.linalg.norm(x.numpy()[:, None] - x.numpy()[None], axis=2)
    np.fill_diagonal(euclid, np.inf)
    assert (np.argsort(euclid, axis=1, kind="stable")[:, :6] != order).any()  # the geometry matters here


def test_poincare_retrieval_metrics_match_naive_loops():
    """Recall@1 and MAP@R (R = class size - 1 = 6) from the brute-force neighbour order by plain loops."""
    z, x, labels = clustered_ball_points()
    order = brute_force_order(x, 6)
    hits = labels[order] == labels[:, None]
    r = 6
    ap = [sum(hits[i, : k + 1].sum() / (k + 1) for k in range(r) if hits[i, k]) / r for i in range(21)]
    out = compute_metrics(z, labels, POINCARE_METRICS, views=lambda name: (x, C) if name == "poincare" else None)
    assert out["poincare_recall@1"] == pytest.approx(hits[:, 0].mean())
    assert out["poincare_map_at_r"] == pytest.approx(np.mean(ap))
    assert 0 < out["poincare_map_at_r"] < 1
    # the metrics read the ball points of the view, not the raw embeddings they are computed next to
    euclid = compute_metrics(z, labels, ["e_recall@1", "map_at_r"])
    assert (euclid["e_recall@1"], euclid["map_at_r"]) != (out["poincare_recall@1"], out["poincare_map_at_r"])


def test_poincare_metrics_are_left_out_without_the_view():
    z, _, labels = clustered_ball_points()
    assert compute_metrics(z, labels, ["e_recall@1", *POINCARE_METRICS]).keys() == {"e_recall@1"}
    assert compute_metrics(z, labels, POINCARE_METRICS, views=lambda name: None) == {}


def test_poincare_neighbours_and_metrics_with_a_query_gallery_split():
    """Queries 0, 3, 6, ... against the other points plus queries 0 and 9: the brute-force order over the gallery
    (the query itself excluded), and Recall@1 / MAP@R from it by plain loops."""
    z, x, labels = clustered_ball_points()
    queries = np.arange(0, 21, 3)
    gallery = np.union1d(np.setdiff1d(np.arange(21), queries), [0, 9])
    dist = original_poincare_dist(x.numpy(), C)
    want = []
    for q in queries:
        others = gallery[gallery != q]
        want.append(others[np.argsort(dist[q, others], kind="stable")][:5])
    np.testing.assert_array_equal(knn_poincare(x, 5, C, queries=queries, gallery=gallery, chunk=2), np.array(want))
    mask_q, mask_g = np.isin(np.arange(21), queries), np.isin(np.arange(21), gallery)
    np.testing.assert_array_equal(knn_poincare(x, 5, C, queries=mask_q, gallery=mask_g), np.array(want))
    recall, ap = [], []
    for q in queries:
        others = gallery[gallery != q]
        rel = labels[others[np.argsort(dist[q, others], kind="stable")]] == labels[q]
        r = int(rel.sum())
        recall.append(rel[0])
        ap.append(sum(rel[: i + 1].sum() / (i + 1) for i in range(r) if rel[i]) / r)
    out = compute_metrics(z, labels, POINCARE_METRICS, queries=queries, gallery=gallery,
                          views=lambda name: (x, C) if name == "poincare" else None)  # fmt: skip
    assert out["poincare_recall@1"] == pytest.approx(np.mean(recall))
    assert out["poincare_map_at_r"] == pytest.approx(np.mean(ap))
    assert 0 < out["poincare_map_at_r"] < 1
