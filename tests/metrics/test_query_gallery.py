"""Query/gallery evaluation (``compute_metrics(..., queries=, gallery=)``): every neighbour metric ranks the gallery
for each query. Against pytorch-metric-learning's ``AccuracyCalculator`` with separate query and reference sets
(``ref_includes_query`` False and True, with queries whose class has no gallery item), against naive loops on a
split where some queries are in the gallery and some are not, the Context's R and candidates, the accepted forms of
a split and its errors, and the whole-set metrics (clustering, set statistics) that a split leaves unchanged."""

from __future__ import annotations

import math

import faiss
import numpy as np
import pytest
import torch
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from pytorch_metric_learning.utils.inference import FaissKNN

import metrics
from evaluation import compute_metrics
from utilities.errors import UserError

NEIGHBOUR_NAMES = ["recall@1", "recall@2", "recall@4", "recall@8", "map_at_r", "r_precision", "mAP_1000", "mAP_c",
                   "mAP_lim"]  # fmt: skip


def names_for(prefix: str, families=NEIGHBOUR_NAMES) -> list[str]:
    return [(("c" if prefix else "e") + "_" + f) if f.startswith("recall") else prefix + f for f in families]


def clustered(n_classes=60, dim=8, seed=0):
    """Gaussian blobs with class sizes 1..12, in random order."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), rng.integers(1, 13, n_classes))
    x = (rng.normal(size=(n_classes, dim))[labels] + 0.9 * rng.normal(size=(len(labels), dim))).astype(np.float32)
    perm = rng.permutation(len(x))
    return x[perm], labels[perm]


def query_split(y, seed=0, absent_classes=4):
    """40% of the items as queries, with every item of ``absent_classes`` classes and of the classes of one item
    (so those queries have no gallery item of their class when the gallery is the rest, and the single items none
    either when the queries are in the gallery)."""
    rng = np.random.default_rng(seed)
    n = len(y)
    classes, counts = np.unique(y, return_counts=True)
    queries = (rng.random(n) < 0.4) | np.isin(y, classes[counts == 1])
    queries |= np.isin(y, rng.choice(classes, absent_classes, replace=False))
    return np.flatnonzero(queries), np.flatnonzero(~queries)


def normalized(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# ---------------------------------------------------------------- pytorch-metric-learning


@pytest.mark.parametrize("ref_includes_query", [False, True])
@pytest.mark.parametrize("prefix", ["", "c_"])
def test_split_metrics_match_pytorch_metric_learning(prefix, ref_includes_query):
    x, y = clustered(seed=7)
    queries, rest = query_split(y, seed=1)
    gallery = np.union1d(queries, rest) if ref_includes_query else rest
    names = names_for(prefix, ["recall@1", "map_at_r", "r_precision", "mAP_1000"])
    ours = compute_metrics(x, y, names, queries=queries, gallery=gallery)

    ctx = metrics.Context(x, y, queries=queries, gallery=gallery)
    assert (~ctx.not_lone).sum() >= 4 and ctx.not_lone.sum() > 100  # lone queries, left out by both
    # PML wants the queries first in the reference when it includes them
    reference = np.concatenate([queries, rest]) if ref_includes_query else rest
    xs = torch.from_numpy(normalized(x) if prefix else x)
    index = faiss.IndexFlatIP if prefix else faiss.IndexFlatL2
    kwargs = dict(query=xs[queries], query_labels=torch.from_numpy(y[queries]), reference=xs[reference],
                  reference_labels=torch.from_numpy(y[reference]), ref_includes_query=ref_includes_query)  # fmt: skip
    calc = AccuracyCalculator(include=("precision_at_1", "mean_average_precision_at_r", "r_precision"),
                              k="max_bin_count", device=torch.device("cpu"), knn_func=FaissKNN(index_init_fn=index))  # fmt: skip
    ref = calc.get_accuracy(**kwargs)
    k = min(1000, len(gallery) - int(ref_includes_query))
    calc = AccuracyCalculator(include=("mean_average_precision",), k=k, device=torch.device("cpu"),
                              knn_func=FaissKNN(index_init_fn=index))  # fmt: skip
    ref.update(calc.get_accuracy(**kwargs))  # R <= 11 < k here: its normaliser R is ours, min(1000, R)
    assert ours[names[0]] == pytest.approx(ref["precision_at_1"], abs=1e-12)
    assert ours[names[1]] == pytest.approx(ref["mean_average_precision_at_r"], abs=1e-12)
    assert ours[names[2]] == pytest.approx(ref["r_precision"], abs=1e-12)
    assert ours[names[3]] == pytest.approx(ref["mean_average_precision"], abs=1e-12)
    assert 0.1 < ours[names[1]] < 0.95
    # the split matters: self retrieval over the whole set gives other values
    assert compute_metrics(x, y, names[1:2])[names[1]] != pytest.approx(ours[names[1]], abs=1e-6)


# ---------------------------------------------------------------- naive loops


def naive_split_values(x, y, queries, gallery, geometry, ranking_of) -> dict[str, float]:
    """Every rank metric by plain loops over the float64 ranking of the gallery (the query itself removed)."""
    ranking = ranking_of(x, queries, gallery, geometry)
    in_gallery = set(gallery.tolist())
    n_candidates = len(gallery) - int(any(q in in_gallery for q in queries))
    values = {f: [] for f in NEIGHBOUR_NAMES}
    for q, order in zip(queries, ranking):
        r = int((y[gallery] == y[q]).sum()) - int(q in in_gallery)
        if r == 0:
            continue
        rel = [int(y[j] == y[q]) for j in order[:n_candidates]]

        def ap(cut, norm, rel=rel):
            total, hits = 0.0, 0
            for rank, hit in enumerate(rel[:cut], start=1):
                hits += hit
                total += hit * hits / rank
            return total / norm

        for k in (1, 2, 4, 8):
            values[f"recall@{k}"].append(float(any(rel[:k])))
        values["map_at_r"].append(ap(r, r))
        values["r_precision"].append(sum(rel[:r]) / r)
        values["mAP_1000"].append(ap(1000, min(1000, r)))
        values["mAP_c"].append(ap(r + 1, r + 1))
        values["mAP_lim"].append(ap(1023, r + 1))
    prefix = "c_" if geometry == "cosine" else ""
    return dict(zip(names_for(prefix), (float(np.mean(v)) for v in values.values()), strict=True))


@pytest.mark.parametrize("geometry", ["euclidean", "cosine"])
def test_split_metrics_match_naive_loops_with_queries_in_and_out_of_the_gallery(geometry, naive_split_ranking):
    x, y = clustered(n_classes=40, seed=3)
    queries, rest = query_split(y, seed=2, absent_classes=3)
    gallery = np.union1d(rest, queries[::2])  # half of the queries are gallery items too
    want = naive_split_values(x, y, queries, gallery, geometry, naive_split_ranking)
    for backend in ("torch", "faiss"):
        ours = compute_metrics(x, y, list(want), queries=queries, gallery=gallery, backend=backend)
        for name, value in want.items():
            assert ours[name] == pytest.approx(value, abs=1e-12), (backend, name)
    assert len(set(want.values())) > 5


def test_default_split_is_self_retrieval():
    x, y = clustered(seed=4)
    names = names_for("") + names_for("c_")
    everything = np.arange(len(y))
    assert compute_metrics(x, y, names, queries=everything, gallery=np.ones(len(y), bool)) == compute_metrics(
        x, y, names
    )


# ---------------------------------------------------------------- Context, accepted forms, errors


def test_context_counts_relevant_gallery_items_and_candidates():
    labels = np.array([0, 0, 0, 1, 1, 2])
    ctx = metrics.Context(np.zeros((6, 2), np.float32), labels, queries=[5, 0, 3], gallery=[0, 1, 3, 4])
    assert ctx.queries.tolist() == [0, 3, 5] and ctx.query_labels.tolist() == [0, 1, 2]
    assert ctx.query_in_gallery.tolist() == [True, True, False]
    assert ctx.n_relevant.tolist() == [1, 1, 0]  # itself not counted; class 2 has no gallery item
    assert ctx.not_lone.tolist() == [True, True, False]
    assert ctx.n_candidates == 3  # 4 gallery items, one of them the query itself
    whole = metrics.Context(np.zeros((6, 2), np.float32), labels)
    assert whole.n_relevant.tolist() == [2, 2, 2, 1, 1, 0] and whole.n_candidates == 5
    disjoint = metrics.Context(np.zeros((6, 2), np.float32), labels, queries=[0, 5], gallery=[1, 2, 3])
    assert disjoint.n_relevant.tolist() == [2, 0] and disjoint.n_candidates == 3


def test_masks_indices_and_tensors_give_the_same_split():
    x, y = clustered(seed=5)
    queries, gallery = query_split(y, seed=3)
    names = ["e_recall@1", "c_map_at_r", "mAP_1000"]
    want = compute_metrics(x, y, names, queries=queries, gallery=gallery)
    mask_q, mask_g = np.isin(np.arange(len(y)), queries), np.isin(np.arange(len(y)), gallery)
    assert compute_metrics(x, y, names, queries=mask_q, gallery=mask_g) == want
    assert compute_metrics(x, y, names, queries=torch.from_numpy(mask_q), gallery=torch.from_numpy(gallery)) == want
    assert compute_metrics(x, y, names, queries=queries[::-1].tolist(), gallery=gallery) == want  # order is free


def test_split_errors():
    x, y = clustered(seed=6)
    n = len(y)
    for bad in (dict(queries=np.ones(n - 1, bool)), dict(gallery=[0, n]), dict(queries=[1, 1, 2]), dict(gallery=[]),
                dict(queries=np.zeros(n, bool)), dict(queries=[0.5, 1.0])):  # fmt: skip
        with pytest.raises(UserError):
            compute_metrics(x, y, ["e_recall@1"], **bad)
    with pytest.raises(UserError, match="nothing but the query"):
        compute_metrics(x, y, ["e_recall@1"], queries=[3], gallery=[3])
    assert compute_metrics(x, y, ["nmi"], queries=[3], gallery=[3])["nmi"] > 0  # no neighbours needed: fine


def test_k_is_capped_at_the_neighbours_every_query_can_have():
    x = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    y = np.array([0, 0, 1, 1, 0, 1, 0, 1])
    out = compute_metrics(x, y, ["e_recall@16", "mAP_1000"], queries=[0, 2], gallery=[4, 5, 6, 7])
    assert out["e_recall@16"] == 1.0  # every query sees the whole gallery of 4
    out = compute_metrics(x, y, ["e_recall@16"], queries=[0, 4], gallery=[4, 5, 6, 7])
    assert out["e_recall@16"] == 1.0  # 3 candidates each (query 4 is in the gallery; query 0 sees 3 of its 4)


def test_all_lone_queries_give_nan():
    x, y = clustered(seed=8)
    classes = np.unique(y)
    queries, gallery = np.flatnonzero(np.isin(y, classes[:5])), np.flatnonzero(~np.isin(y, classes[:5]))
    out = compute_metrics(x, y, ["e_recall@1", "map_at_r", "r_precision", "mAP_1000"], queries=queries, gallery=gallery)
    assert all(math.isnan(v) for v in out.values())


# ---------------------------------------------------------------- whole-set metrics


def test_clustering_and_set_statistics_use_every_item():
    x, y = clustered(seed=9)
    queries, gallery = query_split(y, seed=4)
    names = ["nmi", "f1", "c_nmi", "c_f1", "dists@intra", "dists@inter", "rho_spectrum@1", "rho_spectrum@-2",
             "norms@50", "accuracy", "ece"]  # fmt: skip
    probs = np.random.default_rng(0).dirichlet(np.ones(60), size=len(y))
    views = lambda name: probs if name == "probabilities" else None  # noqa: E731
    whole = compute_metrics(x, y, names, views=views)
    assert compute_metrics(x, y, names, views=views, queries=queries, gallery=gallery) == whole
    assert compute_metrics(x, y, names, views=views, queries=queries[:3], gallery=gallery[:5]) == whole
