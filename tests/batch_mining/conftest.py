"""Fixtures of the miner tests (helpers handed out as fixtures: test modules never import each other).

* ``miner_batch(seed=0, dim=8, dtype=float32)``: 13 unit vectors in classes of sizes 4, 3, 3, 2, 1 (the singleton
  has no positive) and their labels.
* ``valid_anchors(y)``: the indices that have a positive and a negative in the batch.
* ``wu_probs(x, y, a, lower, upper)``: Wu et al. 2017's negative law for anchor ``a`` by a naive loop.
* ``tv_distance(counts, ref, total)``: total variation between observed counts and a reference law.
* ``assert_valid_for_tag(out, y, tag, last_labels=None)``: the validity rule of ``batch_mining.OUTPUTS[tag]``.
"""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F


def _miner_batch(seed: int = 0, dim: int = 8, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(13, dim, generator=g, dtype=dtype), dim=1)
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 4])
    return x, y


def _valid_anchors(y) -> set[int]:
    return {a for a in range(len(y)) if (y == y[a]).sum() > 1 and (y != y[a]).any()}


def _wu_probs(x, y, a: int, lower: float, upper: float) -> dict[int, float]:
    """Wu et al. 2017: P(n | a) ~ 1/q(max(d, lower)), q(d) = d^(D-2) (1 - d^2/4)^((D-3)/2), over the negatives with
    d < upper (all negatives if none)."""
    dim = x.shape[1]
    negs = [j for j in range(len(y)) if y[j] != y[a]]
    d = {j: max(math.dist(x[a].tolist(), x[j].tolist()), lower) for j in negs}
    allowed = [j for j in negs if d[j] < upper] or negs
    w = {j: d[j] ** (2 - dim) * (1 - d[j] ** 2 / 4) ** (-(dim - 3) / 2) for j in allowed}
    z = sum(w.values())
    return {j: v / z for j, v in w.items()}


def _tv_distance(counts: Counter, ref: dict, total: int) -> float:
    return 0.5 * sum(abs(counts[j] / total - ref.get(j, 0.0)) for j in set(ref) | set(counts))


def _assert_valid_for_tag(out, y: torch.Tensor, tag: str = "triplet", last_labels: torch.Tensor | None = None) -> None:
    """The rule of ``batch_mining.OUTPUTS[tag]``, written out with the labels ``y`` (``last_labels``: the shuffled
    labels a ``shuffled_triplet`` miner drew)."""
    n_items = len(y)
    if tag.endswith("triplet"):
        assert isinstance(out, torch.Tensor) and out.dtype == torch.long and out.dim() == 2 and out.shape[1] == 3
        assert ((out >= 0) & (out < n_items)).all()
        a, p, n = out.T
        if tag == "shuffled_triplet":  # valid for the miner's permutation of the labels
            assert sorted(last_labels.tolist()) == sorted(y.tolist())
            y = last_labels
        push = (a == p) if tag == "push_triplet" else torch.zeros(len(a), dtype=torch.bool)
        if tag == "intra_triplet":
            sizes = torch.bincount(y)
            assert (y[a] == y[p]).all() and (y[a] == y[n]).all() and (a != p).all() and (a != n).all()
            assert ((n != p) | (sizes[y[a]] == 2)).all()
            return
        assert (a[~push] != p[~push]).all()
        assert (y[a[~push]] == y[p[~push]]).all() and (y[n[~push]] != y[a[~push]]).all()
        assert (y[n[push]] == y[a[push]]).all() and (n[push] != a[push]).all()  # push triplets (a, a, p)
        return
    anchors, positives, negatives = out
    assert anchors.dtype == torch.long and len(set(anchors.tolist())) == len(anchors)
    for i, a in enumerate(anchors.tolist()):
        assert negatives[i].tolist() == [bool(y[j] != y[a]) for j in range(n_items)]
        if tag == "npair":
            assert positives.shape == anchors.shape
            assert int(positives[i]) != a and y[positives[i]] == y[a]
        elif tag == "lifted":
            assert positives[i].tolist() == [bool(j != a and y[j] == y[a]) for j in range(n_items)]
            assert positives[i].any()
        else:
            raise AssertionError(f"unknown output tag {tag!r}; see batch_mining.OUTPUTS")


@pytest.fixture(scope="session")
def miner_batch():
    return _miner_batch


@pytest.fixture(scope="session")
def valid_anchors():
    return _valid_anchors


@pytest.fixture(scope="session")
def wu_probs():
    return _wu_probs


@pytest.fixture(scope="session")
def tv_distance():
    return _tv_distance


@pytest.fixture(scope="session")
def assert_valid_for_tag():
    return _assert_valid_for_tag
