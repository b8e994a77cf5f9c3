"""Metric values against independent references: pytorch-metric-learning, sklearn, naive loops, numpy SVD."""

from __future__ import annotations

import math

import faiss
import numpy as np
import pytest
import sklearn.metrics
import torch
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from pytorch_metric_learning.utils.inference import FaissKNN
from scipy.spatial.distance import cdist
from scipy.stats import entropy

import metrics
from evaluation import compute_metrics
from utilities.errors import UserError


def clustered(n_classes=60, dim=8, seed=0, singletons=6, duplicates=0, max_size=12):
    """Gaussian blobs with class sizes 2..max_size, some classes of size 1 and optional exact duplicates."""
    rng = np.random.default_rng(seed)
    sizes = np.concatenate([rng.integers(2, max_size + 1, n_classes - singletons), np.ones(singletons, int)])
    labels = np.repeat(np.arange(n_classes), sizes)
    centres = rng.normal(size=(n_classes, dim))
    x = (centres[labels] + 0.9 * rng.normal(size=(len(labels), dim))).astype(np.float32)
    if duplicates:
        src = rng.choice(len(x), duplicates, replace=False)
        dst = rng.choice(np.setdiff1d(np.arange(len(x)), src), duplicates, replace=False)
        x[dst], labels[dst] = x[src], labels[src]
    perm = rng.permutation(len(x))
    return x[perm], labels[perm]


def normalized(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# ---------------------------------------------------------------- pytorch-metric-learning


@pytest.mark.parametrize("duplicates", [0, 15])
@pytest.mark.parametrize("prefix", ["", "c_"])
def test_retrieval_metrics_match_pytorch_metric_learning(prefix, duplicates):
    x, y = clustered(duplicates=duplicates)
    assert np.bincount(y).min() == 1  # lone queries present
    ours = compute_metrics(
        x, y, [("c_recall@1" if prefix else "e_recall@1"), f"{prefix}map_at_r", f"{prefix}r_precision"]
    )
    ref_x = normalized(x) if prefix else x
    calc = AccuracyCalculator(
        include=("precision_at_1", "mean_average_precision_at_r", "r_precision"),
        k="max_bin_count",
        device=torch.device("cpu"),
        knn_func=FaissKNN(index_init_fn=faiss.IndexFlatIP if prefix else faiss.IndexFlatL2),
    )
    ref = calc.get_accuracy(torch.from_numpy(ref_x), torch.from_numpy(y))
    recall = ours["c_recall@1" if prefix else "e_recall@1"]
    assert recall == pytest.approx(ref["precision_at_1"], abs=1e-12)
    assert ours[f"{prefix}map_at_r"] == pytest.approx(ref["mean_average_precision_at_r"], abs=1e-12)
    assert ours[f"{prefix}r_precision"] == pytest.approx(ref["r_precision"], abs=1e-12)
    assert 0.1 < ours[f"{prefix}map_at_r"] < 0.95  # a non-trivial ranking, so the comparison can fail


def test_all_lone_queries_give_nan():
    x = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    out = compute_metrics(x, np.arange(10), ["e_recall@1", "map_at_r", "r_precision", "mAP_1000"])
    assert all(math.isnan(v) for v in out.values())


# ---------------------------------------------------------------- naive loops


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_recall_at_k_and_average_precisions_match_naive_loops(metric, naive_ranking):
    x, y = clustered(n_classes=40, seed=1)
    order = naive_ranking(x, metric)
    p = "c_" if metric == "cosine" else ""
    names = [f"{'c' if p else 'e'}_recall@{k}" for k in (1, 2, 4, 8, 16)]
    names += [f"{p}map_at_r", f"{p}r_precision", f"{p}mAP_1000", f"{p}mAP_lim", f"{p}mAP_c"]
    ours = compute_metrics(x, y, names)

    rec = {k: [] for k in (1, 2, 4, 8, 16)}
    ap_r, rp, ap_1000, ap_lim, ap_c = [], [], [], [], []
    for i in range(len(y)):
        n = int((y == y[i]).sum())
        if n == 1:
            continue
        rel = [int(y[j] == y[i]) for j in order[i]]
        for k in rec:
            rec[k].append(float(any(rel[:k])))

        def ap(cut, norm, rel=rel):
            total, hits = 0.0, 0
            for rank, r in enumerate(rel[:cut], start=1):
                hits += r
                total += r * hits / rank
            return total / norm

        ap_r.append(ap(n - 1, n - 1))
        rp.append(sum(rel[: n - 1]) / (n - 1))
        ap_1000.append(ap(1000, min(1000, n - 1)))
        ap_lim.append(ap(1023, n))
        ap_c.append(ap(n, n))
    for k in rec:
        assert ours[names[list(rec).index(k)]] == pytest.approx(np.mean(rec[k]), abs=1e-12)
    assert ours[f"{p}map_at_r"] == pytest.approx(np.mean(ap_r), abs=1e-12)
    assert ours[f"{p}r_precision"] == pytest.approx(np.mean(rp), abs=1e-12)
    assert ours[f"{p}mAP_1000"] == pytest.approx(np.mean(ap_1000), abs=1e-12)
    assert ours[f"{p}mAP_lim"] == pytest.approx(np.mean(ap_lim), abs=1e-12)
    assert ours[f"{p}mAP_c"] == pytest.approx(np.mean(ap_c), abs=1e-12)
    assert len({ours[n] for n in names[:5]}) > 2  # recall grows with k: the check is not vacuous


def test_map_1000_truncates_and_normalises_by_min_1000_r():
    """Hand-made hits: 1200 neighbours, class of 1101 (R = 1100 > 1000)."""
    n = 1201
    labels = np.zeros(n, np.int64)
    labels[1101:] = 1  # 100 items of class 1
    ids = np.empty((n, 1200), np.int64)
    for i in range(n):
        ids[i] = np.delete(np.arange(n), i)  # rank order = index order
    ctx = metrics.Context(np.zeros((n, 2), np.float32), labels, neighbours={"euclidean": ids})
    value = metrics.select("mAP_1000")(ctx)
    # 1200 neighbours stored, but only the first 1000 count
    # class 0 queries (1101): first 1000 neighbours all relevant -> AP = 1000/1000 = 1
    # class 1 queries: 1000 class-0 items first -> no hit in the first 1000 -> AP = 0
    assert value == pytest.approx(1101 / 1201, rel=1e-12)
    # more stored neighbours (for another metric) must not extend the cut-off
    assert metrics.select("mAP_lim")(ctx) == pytest.approx(1101 / 1201 * 1023 / 1101, rel=1e-12)


def naive_pair_f1(labels, clusters):
    tp = fp = fn = 0
    n = len(labels)
    for i in range(n):
        for j in range(i + 1, n):
            same_class, same_cluster = labels[i] == labels[j], clusters[i] == clusters[j]
            tp += same_class and same_cluster
            fp += same_cluster and not same_class
            fn += same_class and not same_cluster
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    return 2 * precision * recall / (precision + recall)


def naive_nmi(a, b):
    """I(A;B) / ((H(A) + H(B)) / 2) from counts."""
    n = len(a)
    joint = {}
    for u, v in zip(a, b):
        joint[(u, v)] = joint.get((u, v), 0) + 1
    pa = {u: np.mean(a == u) for u in set(a)}
    pb = {v: np.mean(b == v) for v in set(b)}
    mi = sum(c / n * math.log((c / n) / (pa[u] * pb[v])) for (u, v), c in joint.items())
    ha = -sum(p * math.log(p) for p in pa.values())
    hb = -sum(p * math.log(p) for p in pb.values())
    return mi / ((ha + hb) / 2)


@pytest.mark.parametrize("geometry", ["euclidean", "cosine"])
def test_f1_and_nmi_match_naive_formulas_given_cluster_ids(geometry):
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 12, 180)
    clusters = np.where(rng.random(180) < 0.6, labels, rng.integers(0, 12, 180))  # partly agreeing
    ctx = metrics.Context(np.zeros((180, 2), np.float32), labels, clusters={geometry: clusters})
    p = "c_" if geometry == "cosine" else ""
    assert metrics.select(f"{p}f1")(ctx) == pytest.approx(naive_pair_f1(labels, clusters), rel=1e-12)
    assert metrics.select(f"{p}nmi")(ctx) == pytest.approx(naive_nmi(labels, clusters), rel=1e-10)
    sk = sklearn.metrics.normalized_mutual_info_score(labels, clusters)  # arithmetic normalisation
    assert metrics.select(f"{p}nmi")(ctx) == pytest.approx(sk, rel=1e-12)


@pytest.mark.parametrize("geometry", ["euclidean", "cosine"])
def test_nmi_and_f1_run_seeded_kmeans_with_one_cluster_per_class(geometry):
    from evaluation.clustering import kmeans

    rng = np.random.default_rng(4)
    y = np.repeat(np.arange(8), 25)
    x = (3 * rng.normal(size=(8, 6))[y] + rng.normal(size=(200, 6))).astype(np.float32)
    ids = kmeans(x, 8, geometry, seed=7)
    assert len(np.unique(ids)) == 8 and np.array_equal(ids, kmeans(x, 8, geometry, seed=7))
    if geometry == "cosine":  # clusters directions only: rescaling rows changes nothing
        scaled = x * rng.uniform(0.1, 10, size=(200, 1)).astype(np.float32)
        assert np.array_equal(kmeans(scaled, 8, geometry, seed=7), ids)
    p = "c_" if geometry == "cosine" else ""
    out = compute_metrics(x, y, [f"{p}nmi", f"{p}f1"], seed=7)
    assert 0.3 < out[f"{p}nmi"] < 1.0
    assert out[f"{p}nmi"] == pytest.approx(naive_nmi(y, ids), rel=1e-10)
    assert out[f"{p}nmi"] == pytest.approx(sklearn.metrics.normalized_mutual_info_score(y, ids), rel=1e-12)
    assert out[f"{p}f1"] == pytest.approx(naive_pair_f1(y, ids), rel=1e-10)


# ---------------------------------------------------------------- Roth suite statistics


def naive_dists(x, y):
    intra = []
    for c in np.unique(y):
        f = x[y == c]
        if len(f) < 2:
            continue
        d = cdist(f, f, "cosine")
        intra.append(d.sum() / (len(f) ** 2 - len(f)))
    means = np.stack([normalized(x[y == c].mean(0, keepdims=True))[0] for c in np.unique(y)])
    d = cdist(means, means, "cosine")
    inter = d.sum() / (len(d) ** 2 - len(d))
    return np.mean(intra), inter


def test_dists_match_naive_cdist():
    x, y = clustered(n_classes=25, dim=6, seed=5)
    x = x + 0.5  # off-centre so that cosine differs from a plain angle-to-origin statistic
    out = compute_metrics(x, y, ["dists@intra", "dists@inter", "dists@intra_over_inter"])
    intra, inter = naive_dists(x.astype(np.float64), y)
    assert out["dists@intra"] == pytest.approx(intra, rel=1e-9)
    assert out["dists@inter"] == pytest.approx(inter, rel=1e-9)
    assert out["dists@intra_over_inter"] == pytest.approx(intra / inter, rel=1e-9)


@pytest.mark.parametrize("k", [1, 2, 5, -1, -3])
def test_rho_spectrum_matches_numpy_svd_and_scipy_entropy(k):
    rng = np.random.default_rng(6)
    x = (rng.normal(size=(300, 16)) * np.linspace(3, 0.2, 16)).astype(np.float32)
    s = np.linalg.svd(x.astype(np.float64), compute_uv=False)[abs(k) - 1 :]
    s_norm, uniform = s / s.sum(), np.full(len(s), 1 / len(s))
    expected = entropy(uniform, s_norm) if k > 0 else entropy(s_norm, uniform)
    value = compute_metrics(x, np.arange(300) % 7, [f"rho_spectrum@{k}"])[f"rho_spectrum@{k}"]
    assert value == pytest.approx(expected, rel=1e-7)
    assert expected > 0.01


# ---------------------------------------------------------------- names


def test_validate_rejects_unknown_names_and_lists_valid_forms():
    metrics.validate(
        ["e_recall@1", "c_recall@16", "nmi", "c_f1", "map_at_r", "dists@intra_over_inter", "rho_spectrum@-1"]
    )
    with pytest.raises(UserError) as err:
        metrics.validate(["e_recall@1", "foo"])
    msg = str(err.value)
    assert "'foo'" in msg and "--evaluation_metrics" in msg
    for form in (
        "e_recall@<k>",
        "c_recall@<k>",
        "nmi",
        "c_nmi",
        "f1",
        "map_at_r",
        "mAP_1000",
        "dists@{",
        "rho_spectrum@",
    ):
        assert form in msg
    for bad in ["e_recall", "e_recall@0", "e_recall@x", "nmi@2", "dists@foo", "recall@1"]:
        with pytest.raises(UserError):
            metrics.validate([bad])
    with pytest.raises(UserError, match="vector"):
        metrics.select("rho_spectrum@0")


def test_metric_objects_declare_requirements():
    r = metrics.select("c_recall@4").requires
    assert (r.geometry, r.k, r.kmeans) == ("cosine", 4, False)
    r = metrics.select("map_at_r").requires
    assert r.geometry == "euclidean" and r.neighbours_needed(99, 11) == 11  # R_max = 11 of 99 candidates
    assert metrics.select("c_nmi").requires.kmeans
    assert metrics.select("dists@inter").requires.embeddings
    assert metrics.select("mAP_1000").requires.neighbours_needed(49, 2) == 49  # capped at the candidates
    assert metrics.select("mAP_c").requires.neighbours_needed(49, 2) == 3  # R_max + 1
