"""``evaluation.uncertainty_plots``: the certainty grid read back pixel by pixel from the PNG, and the rejection
curve against a naive cosine nearest-neighbour loop and the ``unc_recall_area`` metric."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import make_blobs

import datasets
import evaluation
from evaluation.uncertainty_plots import (
    _COL_IN,
    _LEFT_IN,
    _ROW_IN,
    _TOP_IN,
    DPI,
    GRID_MAX_CLASSES,
    grid_classes,
    plot_certainty_grid,
    plot_rejection_curve,
    rejection_data,
)


class SolidImages:
    """Fake dataset: image i is an 8 x 8 solid colour unique to i (so a tile's pixels say which image it shows)."""

    @staticmethod
    def colour(i):
        return np.array([(37 * i) % 256, (91 * i + 50) % 256, (13 * i + 200) % 256], dtype=np.uint8)

    def raw_image(self, i):
        return np.tile(self.colour(i), (8, 8, 1))


def grid_png(tmp_path, n_classes, per_class=10, seed=0):
    labels = np.repeat(np.arange(n_classes), per_class)
    norms = np.random.default_rng(seed).uniform(1, 2, len(labels))
    path = plot_certainty_grid(SolidImages(), norms, labels, tmp_path / f"grid{n_classes}.png")
    return np.asarray(Image.open(path).convert("RGB")), norms, labels


def test_certainty_grid_shows_every_class_up_to_the_cap(tmp_path):
    """One 80 px row per class: the PNG height grows linearly with the classes shown, the width does not change,
    and beyond 32 classes (the cap) it stays at 32 rows of evenly spaced classes."""
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
    img, norms, labels = grid_png(tmp_path, 5)
    for c in range(5):
        idx = np.flatnonzero(labels == c)
        order = idx[np.argsort(norms[idx])]
        for j, i in enumerate(list(order[:4]) + list(order[-4:])):
            y = int((_TOP_IN + (c + 0.5) * _ROW_IN) * DPI)
            x = int((_LEFT_IN + (j + 0.5) * _COL_IN) * DPI)
            np.testing.assert_array_equal(img[y, x], SolidImages.colour(i), err_msg=f"class {c} column {j}")


def test_certainty_grid_on_digits(tmp_path, make_opt):
    ds = datasets.select("digits", make_opt("--digits_split", "dml"))["testing"]
    labels = np.asarray(ds.labels)
    norms = np.random.default_rng(0).uniform(1, 2, len(labels))
    img = np.asarray(Image.open(plot_certainty_grid(ds, norms, labels, tmp_path / "grid.png")).convert("RGB"))
    assert img.shape == grid_png(tmp_path, 5)[0].shape  # the 5 test classes 5..9, one row each
    assert img.std() > 10  # images drawn


def test_rejection_plot_leaves_out_lone_queries_like_the_metric(tmp_path):
    x, y = make_blobs(n_samples=120, centers=6, n_features=5, cluster_std=4.0, random_state=0)
    rng = np.random.default_rng(5)
    x = (x * rng.uniform(0.5, 5, size=(120, 1))).astype(np.float32)  # norms carry no class information
    lone = rng.normal(size=(8, x.shape[1])).astype(np.float32) * 500  # 8 singleton classes, the most certain
    x, y = np.concatenate([x, lone]), np.concatenate([y, np.arange(100, 108)])
    rejected, recall, area, base = rejection_data(x, y)
    assert len(rejected) == len(recall) == len(x) - 8
    assert area == pytest.approx(evaluation.compute_metrics(x, y, ["unc_recall_area"])["unc_recall_area"], abs=1e-12)
    # Naive reference: cosine nearest other item, reject the r least certain (smallest norm) queries.
    xd = x.astype(np.float64)
    unit = xd / np.linalg.norm(xd, axis=1, keepdims=True)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    correct = (y[sims.argmax(axis=1)] == y).astype(float)  # lone queries are always wrong
    norms = np.linalg.norm(xd, axis=1)
    kept = slice(0, len(x) - 8)
    curve = [correct[kept][np.argsort(norms[kept])[r:]].mean() for r in range(len(x) - 8)]
    assert area == pytest.approx(np.mean(curve), abs=1e-12)
    assert base == pytest.approx(correct[kept].mean())
    assert 0.2 < base < 0.95  # some neighbours wrong, some right: the curve is not flat
    with_lone = np.mean([correct[np.argsort(norms)[r:]].mean() for r in range(len(x))])
    assert abs(area - with_lone) > 0.01
    assert plot_rejection_curve(x, y, tmp_path / "rej.png").stat().st_size > 1000


def test_rejection_plot_searches_queries_against_the_gallery(tmp_path):
    """In-Shop's protocol: queries only search the gallery; the area equals ``unc_recall_area`` on that split."""
    x, y = make_blobs(n_samples=160, centers=8, n_features=5, cluster_std=4.0, random_state=1)
    rng = np.random.default_rng(2)
    x = (x * rng.uniform(0.5, 5, size=(160, 1))).astype(np.float32)
    queries = rng.random(160) < 0.3
    queries[y == 7] = True  # class 7 has no gallery item: its queries are lone
    gallery = ~queries
    rejected, recall, area, base = rejection_data(x, y, queries, gallery)
    metric = evaluation.compute_metrics(x, y, ["unc_recall_area"], queries=queries, gallery=gallery)
    assert area == pytest.approx(metric["unc_recall_area"], abs=1e-12)
    # Naive reference: the cosine nearest gallery item of each query whose class has gallery items.
    unit = x.astype(np.float64) / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    q, g = np.flatnonzero(queries), np.flatnonzero(gallery)
    kept = q[np.isin(y[q], y[g])]
    correct = (y[g[(unit[kept] @ unit[g].T).argmax(axis=1)]] == y[kept]).astype(float)
    norms = np.linalg.norm(x[kept].astype(np.float64), axis=1)
    assert len(recall) == len(kept) < queries.sum()
    assert area == pytest.approx(np.mean([correct[np.argsort(norms)[r:]].mean() for r in range(len(kept))]))
    assert base == pytest.approx(correct.mean())
    assert rejection_data(x, y)[2] != pytest.approx(area)  # self retrieval differs
    assert plot_rejection_curve(x, y, tmp_path / "rej.png", queries, gallery).stat().st_size > 1000
