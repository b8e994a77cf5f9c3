"""Uncertainty metrics vs sklearn / scipy / naive loops, and the uncertainty plots."""

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


def naive_nn(x, geometry):
    if geometry == "ppk":  # one row at a time through utilities.vmf.log_ppk_vmf
        t = torch.tensor(x, dtype=torch.float64)
        k = t.norm(dim=1)
        out = []
        for i in range(len(x)):
            s = log_ppk_vmf(t[i] / k[i], k[i], t / k[:, None], k, 1.0)
            s[i] = -torch.inf
            out.append(int(s.argmax()))
        return np.array(out)
    out = []
    for i in range(len(x)):
        best, arg = -np.inf, -1
        for j in range(len(x)):
            if i == j:
                continue
            if geometry == "cosine":
                s = x[i] @ x[j] / np.linalg.norm(x[i]) / np.linalg.norm(x[j])
            else:
                s = -np.linalg.norm(x[i] - x[j])
            if s > best:
                best, arg = s, j
        out.append(arg)
    return np.array(out)


def test_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(1)
    s = rng.integers(0, 5, size=300).astype(float)
    pos = rng.random(300) < 0.3 + 0.1 * s
    assert auroc(s, pos) == pytest.approx(roc_auc_score(pos, s), abs=1e-12)


@pytest.mark.parametrize("geometry,name", [("cosine", "unc_auroc_cos"), ("euclidean", "unc_auroc_l2"),
                                           ("ppk", "unc_auroc_ppk")])  # fmt: skip
def test_unc_auroc_against_naive_nn_and_sklearn(geometry, name):
    x, y = data()
    correct = y[naive_nn(x, geometry)] == y
    want = roc_auc_score(correct, np.linalg.norm(x.astype(np.float64), axis=1))
    got = evaluation.compute_metrics(x, y, [name])[name]
    assert got == pytest.approx(want, abs=1e-9)


def test_recall_area_spearman_norms_and_neighbour_weighted():
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


def test_certain_items_predict_correct_neighbours():
    """Norm = 1 + correctness signal: AUROC must be high (a metric that ignores the norms would fail)."""
    x, y = data(seed=3)
    correct = y[naive_nn(x, "cosine")] == y
    x = x / np.linalg.norm(x, axis=1, keepdims=True) * np.where(correct, 5.0, 1.0)[:, None]
    assert evaluation.compute_metrics(x, y, ["unc_auroc_cos"])["unc_auroc_cos"] == pytest.approx(1.0)


class SolidImages:
    """Fake dataset: image i is an 8 x 8 solid colour unique to i (so a tile's pixels say which image it shows)."""

    @staticmethod
    def colour(i):
        return np.array([(37 * i) % 256, (91 * i + 50) % 256, (13 * i + 200) % 256], dtype=np.uint8)

    def raw_image(self, i):
        return np.tile(self.colour(i), (8, 8, 1))


def grid_png(tmp_path, n_classes, per_class=10, seed=0):
    from PIL import Image

    from utilities.uncertainty_plots import plot_certainty_grid

    labels = np.repeat(np.arange(n_classes), per_class)
    norms = np.random.default_rng(seed).uniform(1, 2, len(labels))
    path = plot_certainty_grid(SolidImages(), norms, labels, tmp_path / f"grid{n_classes}.png")
    return np.asarray(Image.open(path).convert("RGB")), norms, labels


def test_certainty_grid_shows_every_class_up_to_the_cap(tmp_path):
    """One 80 px row per class: the PNG height grows linearly with the classes shown, the width does not change,
    and beyond 32 classes (the cap) it stays at 32 rows of evenly spaced classes."""
    from utilities.uncertainty_plots import GRID_MAX_CLASSES, grid_classes

    assert GRID_MAX_CLASSES == 32
    shapes = {k: grid_png(tmp_path, k, per_class=2)[0].shape for k in (3, 6, 12, 40)}
    assert len({s[1] for s in shapes.values()}) == 1
    row = (shapes[6][0] - shapes[3][0]) / 3
    assert row > 20 and shapes[12][0] - shapes[6][0] == 6 * row
    assert shapes[40][0] - shapes[12][0] == 20 * row  # 32 rows, not 40
    np.testing.assert_array_equal(grid_classes(np.arange(12)), np.arange(12))
    shown = grid_classes(np.repeat(np.arange(100, 140), 3))
    assert len(shown) == 32 and shown[0] == 100 and shown[-1] == 139 and (np.diff(shown) >= 1).all()


def test_certainty_grid_places_least_certain_left_and_most_certain_right(tmp_path):
    """Read the tile centres back from the PNG: row r, column j shows the j-th smallest-norm image of class r
    (columns 0-3) and the 4 largest, in ascending order (columns 4-7)."""
    from utilities.uncertainty_plots import _COL_IN, _LEFT_IN, _ROW_IN, _TOP_IN, DPI

    img, norms, labels = grid_png(tmp_path, 5)
    for c in range(5):
        idx = np.flatnonzero(labels == c)
        order = idx[np.argsort(norms[idx])]
        for j, i in enumerate(list(order[:4]) + list(order[-4:])):
            y = int((_TOP_IN + (c + 0.5) * _ROW_IN) * DPI)
            x = int((_LEFT_IN + (j + 0.5) * _COL_IN) * DPI)
            np.testing.assert_array_equal(img[y, x], SolidImages.colour(i), err_msg=f"class {c} column {j}")


def test_certainty_grid_on_digits(tmp_path):
    import datasets
    import parameters
    from utilities.uncertainty_plots import plot_certainty_grid

    ds = datasets.select("digits", parameters.parse_args([]))["testing"]
    labels = np.asarray(ds.labels)
    norms = np.random.default_rng(0).uniform(1, 2, len(labels))
    from PIL import Image

    img = np.asarray(Image.open(plot_certainty_grid(ds, norms, labels, tmp_path / "grid.png")).convert("RGB"))
    assert img.shape == grid_png(tmp_path, 5)[0].shape  # the 5 test classes 5..9, one row each
    assert img.std() > 10  # images drawn


def test_rejection_plot_leaves_out_lone_queries_like_the_metric(tmp_path):
    from utilities.uncertainty_plots import plot_rejection_curve, rejection_data

    x, y = data()
    rng = np.random.default_rng(5)
    lone = rng.normal(size=(8, x.shape[1])).astype(np.float32) * 50  # 8 singleton classes, the most certain
    x, y = np.concatenate([x, lone]), np.concatenate([y, np.arange(100, 108)])
    rejected, recall, area, base = rejection_data(x, y)
    assert len(recall) == len(x) - 8
    assert area == pytest.approx(evaluation.compute_metrics(x, y, ["unc_recall_area"])["unc_recall_area"], abs=1e-12)
    norms = np.linalg.norm(x.astype(np.float64), axis=1)
    correct = (y[naive_nn(x, "cosine")] == y).astype(float)  # lone queries are always wrong
    with_lone = np.mean([correct[np.argsort(norms)[r:]].mean() for r in range(len(x))])
    assert abs(area - with_lone) > 0.01
    assert base == pytest.approx(correct[:-8].mean())
    assert plot_rejection_curve(x, y, tmp_path / "rej.png").stat().st_size > 1000


def test_ppk_chunks_sized_from_n_and_budget_equal_the_unchunked_naive_loop():
    """A tiny forced budget (7 rows per chunk, 120 items: chunks straddle classes and the diagonal) gives the same
    neighbours as the per-row loop through utilities.vmf.log_ppk_vmf; the chunk size follows N and the budget."""
    from metrics.uncertainty import PPK_BYTES_PER_PAIR, ppk_chunk_rows, ppk_nearest_neighbour

    assert ppk_chunk_rows(60502) * 60502 * PPK_BYTES_PER_PAIR <= 256 * 2**20  # SOP test split: within 256 MB
    assert ppk_chunk_rows(60502) >= 20 and ppk_chunk_rows(100, max_bytes=1) == 1
    x, _ = data()
    budget = 7 * len(x) * PPK_BYTES_PER_PAIR + 5
    assert ppk_chunk_rows(len(x), budget) == 7
    want = naive_nn(x, "ppk")
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
def test_ppk_chunk_peak_memory_stays_within_the_budget():
    """Fresh process, peak-RSS mark reset after the warm-up: the extra peak of the whole computation stays below
    the budget (d = 32, the most memory per pair measured), so PPK_BYTES_PER_PAIR is not an underestimate."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc to reset the peak-RSS mark")
    root = str(Path(__file__).resolve().parents[1])
    n, budget = 500, 16 * 2**20
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")  # big blocks are mmap'd, so freeing them lowers the RSS
    out = subprocess.run([sys.executable, "-c", PEAK_CHILD.format(root=root, n=n, budget=budget)],
                         capture_output=True, text=True, timeout=120, env=env)  # fmt: skip
    assert out.returncode == 0, out.stderr
    peak = int(out.stdout.split()[-1])
    assert peak <= budget, f"peak {peak / 2**20:.0f} MB over the {budget / 2**20:.0f} MB budget"
    assert peak > budget / 8  # the chunks are as large as the budget allows (not one row at a time)
