"""Uncertainty metrics vs sklearn / scipy / naive loops (the plots: tests/evaluation/test_uncertainty_plots.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

import evaluation
from metrics.uncertainty import auroc
from utilities.vmf import log_ppk_vmf


def data(n=120, d=5, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(6), n // 6)
    centers = rng.normal(size=(6, d)) * 1.5
    x = centers[y] + rng.normal(size=(n, d))
    x *= rng.uniform(0.5, 5, size=(n, 1))  # norms carry no class information but vary
    return x.astype(np.float32), y


def ppk_nn(x):
    """Nearest neighbour by log PPK (rho = 1), one row at a time through utilities.vmf.log_ppk_vmf."""
    t = torch.tensor(x, dtype=torch.float64)
    k = t.norm(dim=1)
    out = []
    for i in range(len(x)):
        s = log_ppk_vmf(t[i] / k[i], k[i], t / k[:, None], k, 1.0)
        s[i] = -torch.inf
        out.append(int(s.argmax()))
    return np.array(out)


@pytest.fixture
def naive_nn(naive_ranking):
    """``naive_nn(x, geometry)``: [N] nearest other item by cosine, Euclidean or log PPK."""
    return lambda x, geometry: ppk_nn(x) if geometry == "ppk" else naive_ranking(x, geometry)[:, 0]


def test_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(1)
    s = rng.integers(0, 5, size=300).astype(float)
    pos = rng.random(300) < 0.3 + 0.1 * s
    assert auroc(s, pos) == pytest.approx(roc_auc_score(pos, s), abs=1e-12)


@pytest.mark.parametrize("geometry,name", [("cosine", "unc_auroc_cos"), ("euclidean", "unc_auroc_l2"),
                                           ("ppk", "unc_auroc_ppk")])  # fmt: skip
def test_unc_auroc_against_naive_nn_and_sklearn(geometry, name, naive_nn):
    x, y = data()
    correct = y[naive_nn(x, geometry)] == y
    want = roc_auc_score(correct, np.linalg.norm(x.astype(np.float64), axis=1))
    got = evaluation.compute_metrics(x, y, [name])[name]
    assert got == pytest.approx(want, abs=1e-9)


def test_recall_area_spearman_norms_and_neighbour_weighted(naive_nn):
    x, y = data()
    norms = np.linalg.norm(x.astype(np.float64), axis=1)
    correct = (y[naive_nn(x, "cosine")] == y).astype(float)
    curve = []
    for reject in range(len(x)):  # reject the `reject` least certain, Recall@1 of the rest
        kept = np.argsort(norms)[reject:]
        curve.append(correct[kept].mean())
    names = ["unc_recall_area", "unc_spearman", "norms@10", "norms@50", "unc_nw_acc@3", "unc_nw_ll@3"]
    got = evaluation.compute_metrics(x, y, names)
    assert got["unc_recall_area"] == pytest.approx(np.mean(curve), abs=1e-9)
    assert got["unc_spearman"] == pytest.approx(spearmanr(norms, correct).statistic, abs=1e-9)
    assert got["norms@10"] == pytest.approx(np.percentile(norms, 10), rel=1e-6)
    # neighbour-weighted label probability from the 3 cosine neighbours (naive)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = xn @ xn.T
    np.fill_diagonal(sims, -np.inf)
    acc, ll = [], []
    for i in range(len(x)):
        nb = np.argsort(-sims[i])[:3]
        p = np.array([1e-3 + sum(norms[j] for j in nb if y[j] == c) for c in range(6)])
        p /= p.sum()
        acc.append(p.argmax() == y[i])
        ll.append(np.log(p[y[i]]))
    assert got["unc_nw_acc@3"] == pytest.approx(np.mean(acc), abs=1e-9)
    assert got["unc_nw_ll@3"] == pytest.approx(np.mean(ll), abs=1e-6)


def test_certain_items_predict_correct_neighbours(naive_nn):
    """Norm = 1 + correctness signal: AUROC must be high (a metric that ignores the norms would fail)."""
    x, y = data(seed=3)
    correct = y[naive_nn(x, "cosine")] == y
    x = x / np.linalg.norm(x, axis=1, keepdims=True) * np.where(correct, 5.0, 1.0)[:, None]
    assert evaluation.compute_metrics(x, y, ["unc_auroc_cos"])["unc_auroc_cos"] == pytest.approx(1.0)


def test_ppk_chunks_sized_from_n_and_budget_equal_the_unchunked_naive_loop():
    """A tiny forced budget (7 rows per chunk, 120 items: chunks straddle classes and the diagonal) gives the same
    neighbours as the per-row loop through utilities.vmf.log_ppk_vmf; the chunk size follows N and the budget."""
    from metrics.uncertainty import PPK_BYTES_PER_PAIR, ppk_chunk_rows, ppk_nearest_neighbour

    assert ppk_chunk_rows(60502) * 60502 * PPK_BYTES_PER_PAIR <= 256 * 2**20  # SOP test split: within 256 MB
    assert ppk_chunk_rows(60502) >= 20 and ppk_chunk_rows(100, max_bytes=1) == 1
    x, _ = data()
    budget = 7 * len(x) * PPK_BYTES_PER_PAIR + 5
    assert ppk_chunk_rows(len(x), budget) == 7
    want = ppk_nn(x)
    np.testing.assert_array_equal(ppk_nearest_neighbour(x, max_bytes=budget), want)
    np.testing.assert_array_equal(ppk_nearest_neighbour(x, max_bytes=1), want)  # one row per chunk


PEAK_CHILD = r"""
import sys
sys.path.insert(0, {root!r})
import numpy as np, torch
torch.set_num_threads(1)
from metrics.uncertainty import ppk_nearest_neighbour
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
def hwm():
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM"))
rng = np.random.default_rng(0)
x = rng.normal(size=({n}, 32)) * np.exp(rng.uniform(-2, 6, size=({n}, 1)))  # norms 0.8 .. 2300: every region
ppk_nearest_neighbour(x, max_bytes={budget})  # warm-up: code pages and lazy allocations of the same kernels
open("/proc/self/clear_refs", "w").write("5")  # reset the peak-RSS mark
base = rss()
ppk_nearest_neighbour(x, max_bytes={budget})
print(hwm() - base)
"""


@pytest.mark.slow  # a fresh interpreter importing torch + the metrics registry: 5-15 s on 2 shared cores
def test_ppk_chunk_peak_memory_stays_within_the_budget(repo_root):
    """Fresh process, peak-RSS mark reset after the warm-up: the extra peak of the whole computation stays below
    the budget (d = 32, the most memory per pair measured), so PPK_BYTES_PER_PAIR is not an underestimate."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc to reset the peak-RSS mark")
    root = str(repo_root)
    n, budget = 500, 16 * 2**20
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")  # big blocks are mmap'd, so freeing them lowers the RSS
    out = subprocess.run([sys.executable, "-c", PEAK_CHILD.format(root=root, n=n, budget=budget)],
                         capture_output=True, text=True, timeout=120, env=env)  # fmt: skip
    assert out.returncode == 0, out.stderr
    peak = int(out.stdout.split()[-1])
    assert peak <= budget, f"peak {peak / 2**20:.0f} MB over the {budget / 2**20:.0f} MB budget"
    # (that the chunks are as large as the budget allows is checked on ppk_chunk_rows above: an RSS lower bound is
    # not reliable, the allocator may serve a chunk from pages the warm-up left mapped)


def test_uncertainty_metrics_with_a_query_gallery_split():
    """Queries rate their nearest gallery item (the query itself excluded) by cosine, Euclidean and log PPK; the
    certainty is the query's norm; queries without a relevant gallery item are left out; norms@q is of every item."""
    x, y = data(n=150, seed=4)
    rng = np.random.default_rng(7)
    queries = np.flatnonzero(rng.random(len(y)) < 0.5)
    gallery = np.union1d(np.setdiff1d(np.arange(len(y)), queries), queries[::3])  # a third of the queries in it
    gallery = gallery[y[gallery] != 5]  # class 5 has no gallery item: its queries are lone
    norms = np.linalg.norm(x.astype(np.float64), axis=1)
    t = torch.tensor(x, dtype=torch.float64)
    k = t.norm(dim=1)
    nearest = {}
    for geometry in ("cosine", "euclidean", "ppk"):
        out = []
        for q in queries:
            if geometry == "ppk":
                s = -log_ppk_vmf(t[q] / k[q], k[q], t[gallery] / k[gallery, None], k[gallery], 1.0).numpy()
            elif geometry == "cosine":
                s = 1 - (x[gallery] @ x[q]) / (np.linalg.norm(x[gallery], axis=1) * np.linalg.norm(x[q]))
            else:
                s = ((x[gallery].astype(np.float64) - x[q]) ** 2).sum(1)
            s = np.where(gallery == q, np.inf, s)
            out.append(gallery[np.argmin(s)])
        nearest[geometry] = np.array(out)
    keep = np.array([((y[gallery] == y[q]) & (gallery != q)).any() for q in queries])
    assert 0 < (~keep).sum() and keep.sum() > 30
    names = ["unc_auroc_cos", "unc_auroc_l2", "unc_auroc_ppk", "unc_spearman", "unc_recall_area", "norms@50",
             "unc_nw_acc@3", "unc_nw_ll@3"]  # fmt: skip
    got = evaluation.compute_metrics(x, y, names, queries=queries, gallery=gallery)
    correct = {g: (y[nearest[g]] == y[queries])[keep] for g in nearest}
    certainty = norms[queries][keep]
    assert got["unc_auroc_cos"] == pytest.approx(roc_auc_score(correct["cosine"], certainty), abs=1e-9)
    assert got["unc_auroc_l2"] == pytest.approx(roc_auc_score(correct["euclidean"], certainty), abs=1e-9)
    assert got["unc_auroc_ppk"] == pytest.approx(roc_auc_score(correct["ppk"], certainty), abs=1e-9)
    assert got["unc_spearman"] == pytest.approx(spearmanr(certainty, correct["cosine"]).statistic, abs=1e-9)
    kept = [correct["cosine"][np.argsort(certainty, kind="stable")[r:]].mean() for r in range(len(certainty))]
    assert got["unc_recall_area"] == pytest.approx(np.mean(kept), abs=1e-9)
    assert got["norms@50"] == pytest.approx(np.percentile(norms, 50), rel=1e-6)  # every item, not the queries
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    acc, ll = [], []
    for q in queries[keep]:
        sims = np.where(gallery == q, -np.inf, xn[gallery] @ xn[q])
        nb = gallery[np.argsort(-sims, kind="stable")[:3]]
        p = np.array([1e-3 + sum(norms[j] for j in nb if y[j] == c) for c in range(6)])
        p /= p.sum()
        acc.append(p.argmax() == y[q])
        ll.append(np.log(p[y[q]]))
    assert got["unc_nw_acc@3"] == pytest.approx(np.mean(acc), abs=1e-9)
    assert got["unc_nw_ll@3"] == pytest.approx(np.mean(ll), abs=1e-6)
