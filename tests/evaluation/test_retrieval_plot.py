"""evaluation.retrieval_plot: seeded queries, their neighbours against brute force in each geometry, the figure."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from evaluation.retrieval_plot import CORRECT, WRONG, choose_queries, plot_retrievals, retrievals, selection_geometry


def test_queries_are_seeded_and_never_lone():
    labels = np.array([0, 0, 1, 2, 2, 2, 3, 4, 4, 5])  # classes 1, 3 and 5 have a single item
    a, b = choose_queries(labels, n=5, seed=3), choose_queries(labels, n=5, seed=3)
    assert np.array_equal(a, b) and np.all(np.diff(a) > 0)
    assert set(a) <= {0, 1, 3, 4, 5, 7, 8} and len(a) == 5
    draws = {tuple(choose_queries(labels, n=5, seed=s)) for s in range(10)}
    assert len(draws) > 1  # the seed matters
    assert len(choose_queries(labels, n=50)) == 7  # no more than there are


def brute_force(x: np.ndarray, queries, k: int, distance) -> np.ndarray:
    out = []
    for q in queries:
        d = np.array([distance(x[q], x[j]) if j != q else np.inf for j in range(len(x))])
        out.append(np.argsort(d, kind="stable")[:k])
    return np.stack(out)


def poincare_distance(c: float):
    def dist(u, v):  # d(u, v) = 2/sqrt(c) artanh(sqrt(c) ||(-u) (+)_c v||), the Mobius addition written out
        uv, u2, v2 = -(u @ v), u @ u, v @ v
        num = (1 + 2 * c * uv + c * v2) * -u + (1 - c * u2) * v
        norm = np.linalg.norm(num) / (1 + 2 * c * uv + c * c * u2 * v2)
        return 2 / np.sqrt(c) * np.arctanh(np.sqrt(c) * norm)

    return dist


@pytest.mark.parametrize("geometry", ["euclidean", "cosine", "poincare"])
def test_neighbours_match_brute_force(geometry):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 5))
    queries = np.array([1, 7, 30])
    if geometry == "euclidean":
        want = brute_force(x, queries, 4, lambda u, v: np.linalg.norm(u - v))
        got = retrievals(x, queries, 4, geometry)
    elif geometry == "cosine":
        want = brute_force(x, queries, 4, lambda u, v: -(u @ v) / np.linalg.norm(u) / np.linalg.norm(v))
        got = retrievals(x, queries, 4, geometry)
    else:
        c = 0.5
        points = 0.5 * x / np.linalg.norm(x, axis=1, keepdims=True) * rng.uniform(0.1, 1.0, (40, 1))
        want = brute_force(points, queries, 4, poincare_distance(c))
        got = retrievals(x, queries, 4, geometry, poincare=(torch.from_numpy(points), c))
    np.testing.assert_array_equal(got, want)


def test_query_gallery_queries_and_neighbours():
    """With masks, queries come from the queries (with a same-class gallery item other than themselves) and their
    neighbours from the gallery only, as a brute-force search over the gallery."""
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    query = np.array([1, 0, 1, 0, 1, 0, 1, 1], bool)
    gallery = np.array([0, 1, 0, 1, 0, 0, 0, 1], bool)  # class 2 has no gallery item; item 7 is in both
    # not 4 (no gallery item of its class), not 7 (the only gallery item of its class is itself)
    assert list(choose_queries(labels, n=10, query=query, gallery=gallery)) == [0, 2, 6]
    rng = np.random.default_rng(2)
    x = rng.standard_normal((8, 3))
    g = np.flatnonzero(gallery)
    got = retrievals(x, np.array([0, 4, 7]), 2, "euclidean", gallery=g)
    for row, q in zip(got, [0, 4, 7]):
        d = {j: np.linalg.norm(x[q] - x[j]) for j in g if j != q}
        assert list(row) == sorted(d, key=d.get)[:2]


def test_selection_geometry_follows_the_first_storage_metric():
    assert selection_geometry("e_recall@1") == "euclidean"
    assert selection_geometry("c_recall@1") == "cosine"
    assert selection_geometry("poincare_recall@1") == "poincare"
    assert selection_geometry("vmf_recall@1") == "cosine" and selection_geometry("accuracy") == "cosine"


class Tiles:
    """A dataset of flat grey images whose brightness encodes the index (``raw_image``, ``class_names``)."""

    def __init__(self, labels, query=None, gallery=None):
        self.labels, self.class_names = labels, [f"class {c}" for c in range(labels.max() + 1)]
        self.query, self.gallery = query, gallery

    def raw_image(self, i: int) -> Image.Image:
        return Image.fromarray(np.full((12, 12), 40 + 4 * i, dtype=np.uint8))


def frame_pixels(path, rgb) -> int:
    a = np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)
    return int((np.abs(a - np.array(rgb)).max(axis=2) <= 30).sum())


def test_figure_frames_right_and_wrong_neighbours(tmp_path):
    labels = np.repeat(np.arange(6), 4)
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((6, 8)) * 3
    x = centres[labels] + rng.standard_normal((24, 8))
    good = plot_retrievals(Tiles(labels), x, labels, tmp_path / "good.png", geometry="euclidean", k=3)
    assert frame_pixels(good, CORRECT) > 500 and frame_pixels(good, WRONG) < 50  # separated classes: all right
    shuffled = plot_retrievals(Tiles(labels), rng.standard_normal((24, 8)), labels, tmp_path / "random.png",
                               geometry="cosine", certainty=np.linspace(1, 2, 24), k=3)  # fmt: skip
    assert frame_pixels(shuffled, WRONG) > 500  # random embeddings: mostly wrong neighbours


def test_figure_of_a_query_gallery_split_shows_gallery_neighbours_only(tmp_path):
    """Queries are twins of gallery items of ANOTHER class (identical embeddings): searched against the gallery each
    first neighbour is wrong; searched among all items, the twin query would come first and be right."""
    labels = np.array([0, 0, 1, 1, 0, 1])
    query, gallery = np.array([1, 1, 1, 0, 0, 0], bool), np.array([0, 0, 0, 1, 1, 1], bool)
    x = np.array([[0.0, 1], [0, 1], [5, 0], [0, 1], [5, 0], [5, 0.1]])
    path = plot_retrievals(Tiles(labels, query, gallery), x, labels, tmp_path / "qg.png", geometry="euclidean", k=1)
    assert frame_pixels(path, WRONG) > 100 and frame_pixels(path, CORRECT) < 50
