"""Contract of every metric family in ``metrics.REGISTRY``, so a new family is tested automatically.

Each family is tested under concrete names (the family itself, or ``<family>@<arg>`` with a valid argument of
its ``arg_kind``: every choice of a tuple, 2 for an integer): ``metrics.select`` keeps the name; ``requires``
names a known geometry and view; ``evaluation.compute_metrics`` with a fake view provider (class probabilities,
sampled sets, Poincare points, concentrations) gives a finite float on a small random labelled set; metrics
without k-means give the same value when items, labels and views are permuted together; without a provider a
metric that needs a view is left out; non-finite embeddings give NaN. With a query/gallery split every metric still
gives a finite float, invariant to permuting items, labels, views and the split together. The registry's ``form``
strings are what ``valid_forms()`` reports.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import metrics
from evaluation import compute_metrics
from metrics._select import valid_forms

N_ITEMS, N_CLASSES, DIM = 40, 4, 6
SAMPLED_SETS = 10
ENTRIES = metrics.REGISTRY.entries()


def concrete_names(entry) -> list[str]:
    kind = entry.obj.arg_kind
    if kind is None:
        return [entry.name]
    if isinstance(kind, tuple):
        return [f"{entry.name}@{arg}" for arg in kind]
    assert kind in ("int", "nonzero_int"), kind
    return [f"{entry.name}@2"]


NAMES = [name for entry in ENTRIES for name in concrete_names(entry)]
NEEDS_VIEW = [name for name in NAMES if metrics.select(name).requires.needed_view is not None]
WITHOUT_KMEANS = [name for name in NAMES if not metrics.select(name).requires.kmeans]


def labelled_set(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """40 points in 6 dimensions, 10 per class of 4, class means apart but overlapping, norms varying."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.repeat(np.arange(N_CLASSES), N_ITEMS // N_CLASSES))
    x = rng.normal(size=(N_CLASSES, DIM))[y] + rng.normal(size=(N_ITEMS, DIM))
    x *= rng.uniform(0.5, 3.0, size=(N_ITEMS, 1))
    return x.astype(np.float32), y


def fake_views(x: np.ndarray, seed: int = 0) -> dict:
    """What a loss could offer: softmax of a random matrix, 10 sets near the embeddings, points
    0.1 * x / ||x|| on the ball of curvature 1, concentrations ||x||."""
    g = torch.Generator().manual_seed(seed)
    e = torch.as_tensor(x, dtype=torch.float64)
    return {
        "probabilities": torch.softmax(torch.randn(len(e), N_CLASSES, generator=g, dtype=torch.float64), dim=1),
        "samples": e + 0.1 * torch.randn(SAMPLED_SETS, *e.shape, generator=g, dtype=torch.float64),
        "poincare": (0.1 * torch.nn.functional.normalize(e, dim=1), 1.0),
        "kappa": e.norm(dim=1),
    }


def permuted(views: dict, perm: np.ndarray) -> dict:
    p = torch.as_tensor(perm)
    points, c = views["poincare"]
    return {"probabilities": views["probabilities"][p], "samples": views["samples"][:, p],
            "poincare": (points[p], c), "kappa": views["kappa"][p]}  # fmt: skip


def provider(views: dict):
    assert set(views) == set(metrics.VIEWS)  # a new view needs a fake value here
    return lambda name: views[name]


def test_every_family_has_a_concrete_name():
    assert {n.partition("@")[0] for n in NAMES} == set(metrics.names())


@pytest.mark.parametrize("name", NAMES)
def test_select_keeps_the_name_and_declares_known_requirements(name):
    metric = metrics.select(name)
    assert metric.name == name
    r = metric.requires
    assert r.geometry in (*metrics.GEOMETRIES, metrics.POINCARE, None)
    assert r.view in (*metrics.VIEWS, None)
    assert r.needed_view in (*metrics.VIEWS, None)
    assert metrics.REGISTRY.get(name.partition("@")[0]).paper.strip()


# Self retrieval (every item searches all others), and a query -> gallery split with overlapping halves.
SPLITS = {"self": {}, "split": {"queries": np.arange(0, N_ITEMS, 2), "gallery": np.arange(N_ITEMS // 4, N_ITEMS)}}


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("name", NAMES)
def test_value_is_a_finite_float(name, split):
    x, y = labelled_set()
    out = compute_metrics(x, y, [name], views=provider(fake_views(x)), **SPLITS[split])
    assert list(out) == [name]
    assert type(out[name]) is float and math.isfinite(out[name])


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("name", WITHOUT_KMEANS)
def test_invariant_to_permuting_items_labels_views_and_the_split_together(name, split):
    x, y = labelled_set(1)
    views = fake_views(x, seed=1)
    value = compute_metrics(x, y, [name], views=provider(views), **SPLITS[split])[name]
    perm = np.random.default_rng(2).permutation(len(y))
    where = np.argsort(perm)  # item i of the original set is item where[i] of the permuted one
    moved = {k: where[v] for k, v in SPLITS[split].items()}
    again = compute_metrics(x[perm], y[perm], [name], views=provider(permuted(views, perm)), **moved)[name]
    assert again == pytest.approx(value, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_view_metrics_are_left_out_without_a_provider(name):
    x, y = labelled_set()
    with_views = compute_metrics(x, y, [name], views=provider(fake_views(x)))
    for views in (None, lambda view: None):  # no provider; a provider that has no view for this split
        out = compute_metrics(x, y, [name], views=views)
        if name in NEEDS_VIEW:
            assert out == {}
        else:
            assert out == pytest.approx(with_views, rel=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_non_finite_embeddings_give_nan(name):
    x, y = labelled_set()
    views = fake_views(x)
    x[3, 1] = np.nan  # a diverged run
    with pytest.warns(UserWarning, match="NaN"):
        out = compute_metrics(x, y, [name], views=provider(views))
    assert list(out) == [name] and math.isnan(out[name])


@pytest.mark.parametrize("name", NEEDS_VIEW)
def test_non_finite_embeddings_still_leave_out_metrics_without_their_view(name):
    x, y = labelled_set()
    x[3, 1] = np.nan
    with pytest.warns(UserWarning, match="NaN"):
        assert compute_metrics(x, y, [name]) == {}


class AvailableOnly:
    """A provider that can say which views it has, and fails if asked to compute one (as a loss would on NaN)."""

    def __init__(self, names):
        self.names = set(names)

    def available(self, name):
        return name in self.names

    def __call__(self, name):
        raise AssertionError("a view was computed for non-finite embeddings")


@pytest.mark.parametrize("name", NEEDS_VIEW)
def test_non_finite_embeddings_ask_whether_a_view_exists_without_computing_it(name):
    x, y = labelled_set()
    x[3, 1] = np.nan
    view = metrics.select(name).requires.needed_view
    with pytest.warns(UserWarning, match="NaN"):
        out = compute_metrics(x, y, [name, "e_recall@1"], views=AvailableOnly([view]))
    assert set(out) == {name, "e_recall@1"} and all(math.isnan(v) for v in out.values())
    with pytest.warns(UserWarning, match="NaN"):
        assert set(compute_metrics(x, y, [name, "e_recall@1"], views=AvailableOnly([]))) == {"e_recall@1"}


def test_view_metrics_exist_for_every_view():
    assert {metrics.select(n).requires.needed_view for n in NEEDS_VIEW} == set(metrics.VIEWS)


def test_default_metrics_are_valid_and_need_no_view():
    for name in metrics.DEFAULT_EVALUATION_METRICS:
        assert metrics.select(name).requires.needed_view is None, name


def test_forms_are_the_registry_forms_and_fit_the_argument_kind():
    forms = [entry.meta.get("form", entry.name) for entry in ENTRIES]
    assert valid_forms() == forms
    for entry, form in zip(ENTRIES, forms):
        kind = entry.obj.arg_kind
        if kind is None:
            assert form == entry.name
        elif isinstance(kind, tuple):
            assert form == (f"{entry.name}@{kind[0]}" if len(kind) == 1 else f"{entry.name}@{{{','.join(kind)}}}")
        else:
            assert form.startswith(f"{entry.name}@<") and form.endswith(">"), form
