"""Storage samplers (greedy_coreset, d2_coreset, disthist_batchmatch, fid_batchmatch) and the
vMF paper's episodic sampler: batch composition, the storage protocol, each selection rule
against a naive reference (greedy k-center loop, D2 probabilities, scipy's Wasserstein and
sqrtm). Determinism, DDP sharding and untouched options of every sampler: tests/datasampler/test_contract.py."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch

import datasampler
from datasampler.d2_coreset import d2_coreset
from datasampler.disthist_batchmatch import histogram_w1
from datasampler.fid_batchmatch import frechet_distances
from utilities.errors import UserError

STORAGE = ["greedy_coreset", "d2_coreset", "disthist_batchmatch", "fid_batchmatch"]
MINE = [*STORAGE, "episodic"]
FLAGS = ("--seed", "3", "--bs", "12", "--samples_per_class", "3", "--data_batchmatch_bigbs", "48",
         "--data_batchmatch_ncomps", "4", "--episode_classes", "3", "--episode_samples", "4", "--n_episodes", "5")  # fmt: skip


def labels_of(sizes: list[int]) -> np.ndarray:
    return np.repeat(np.arange(len(sizes)), sizes)


@pytest.fixture
def build(make_opt, build_sampler):
    """``build(name, labels, *argv, dim=4, seed=0) -> (sampler, opt)`` on ``FLAGS`` + ``argv``; storage
    samplers start from seeded random ``[N, dim]`` embeddings."""

    def make(name: str, labels: np.ndarray, *argv: str, dim: int = 4, seed: int = 0):
        opt = make_opt(*FLAGS, *argv)
        return build_sampler(name, opt, labels, dim=dim, seed=seed), opt

    return make


# ---------------------------------------------------------------------------- composition
@pytest.mark.parametrize("name", MINE)
def test_batches_have_the_class_structure(name, build, epoch_batches):
    labels = labels_of([9, 8, 7, 10, 6, 9])
    sampler, opt = build(name, labels)
    spc = sampler.samples_per_class
    assert spc == (4 if name == "episodic" else 3)  # episodic: --episode_classes 3 x --episode_samples 4
    batches = epoch_batches(sampler, 1)
    assert len(batches) == len(sampler) and len(batches) > 0
    for b in batches:
        assert len(b) == sampler.batch_size == opt.bs == 12
        assert all(0 <= i < len(labels) for i in b)
        groups = [labels[b[k : k + spc]] for k in range(0, len(b), spc)]
        assert all(len(set(g)) == 1 for g in groups), groups  # consecutive same-class groups
        if name in ("disthist_batchmatch", "fid_batchmatch", "episodic"):
            assert len({g[0] for g in groups}) == len(groups)  # distinct classes per batch
            assert len(set(b)) == len(b)  # distinct images: every class has enough
        else:
            for k in range(0, len(b), spc):
                assert len(set(b[k : k + spc])) == spc


# ------------------------------------------------------------------------------- episodic
def test_episodic_batch_size_and_episode_count_leave_the_options_alone(build, epoch_batches, make_opt):
    """The batch is classes x samples (``sampler.batch_size``); --bs and --samples_per_class stay as given."""
    labels = labels_of([20, 20, 20, 20, 3])
    argv = ("--n_episodes", "7", "--episode_classes", "4", "--episode_samples", "5")
    before = vars(make_opt(*FLAGS, *argv))
    sampler, opt = build("episodic", labels, *argv)
    assert sampler.batch_size == 20 and sampler.samples_per_class == 5 and len(sampler) == 7
    assert opt.bs == 12 and opt.samples_per_class == 3 and vars(opt) == before
    class_use = Counter()
    short_class_batches = 0
    for b in epoch_batches(sampler, 1):
        counts = Counter(labels[b].tolist())
        assert len(counts) == 4 and set(counts.values()) == {5}
        class_use.update(counts.keys())
        if 4 in counts:  # the 3-image class is topped up with repeats to keep 5 samples
            short_class_batches += 1
            assert len(set(b)) == 18
        else:
            assert len(set(b)) == 20
    assert short_class_batches > 0
    one_pass, opt = build("episodic", labels, "--n_episodes", "-1", "--episode_classes", "2", "--episode_samples", "4")
    assert len(one_pass) == len(labels) // 8 and one_pass.batch_size == 8 and opt.bs == 12


def test_episodic_clamps_classes_with_a_warning(build, epoch_batches):
    labels = labels_of([6, 6, 6])
    with pytest.warns(UserWarning, match="episode_classes"):
        sampler, opt = build("episodic", labels, "--episode_classes", "10", "--episode_samples", "2")
    assert sampler.batch_size == 6 and sampler.classes_per_batch == 3 and opt.bs == 12
    for b in epoch_batches(sampler, 1):
        assert sorted(Counter(labels[b].tolist()).values()) == [2, 2, 2]


def test_episodic_rejects_bad_flags(build):
    with pytest.raises(UserError):
        build("episodic", labels_of([5, 5]), "--episode_samples", "0")
    with pytest.raises(UserError):
        build("episodic", labels_of([5, 5]), "--n_episodes", "0")


# -------------------------------------------------------------------------------- storage
@pytest.mark.parametrize("name", STORAGE)
def test_storage_protocol(name, build):
    labels = labels_of([9, 8, 7, 10, 6, 9])
    sampler, _ = build(name, labels)
    assert sampler.requires_storage and datasampler.REGISTRY.get(name).meta.get("requires_storage")
    init = torch.randn(len(labels), 4, dtype=torch.float64)
    sampler.init_storage(init)
    torch.testing.assert_close(sampler.storage, init.float())
    init[0] = 99.0  # the storage is a copy
    assert sampler.storage[0, 0] != 99.0
    idx = torch.tensor([3, 17, 40])
    new = torch.randn(3, 4)
    sampler.replace_storage_entries(new, idx)
    torch.testing.assert_close(sampler.storage[idx], new)
    expected = init.float().clone()
    expected[idx] = new
    torch.testing.assert_close(sampler.storage[1:], expected[1:])
    # --data_storage_no_update keeps the initial embeddings.
    frozen, _ = build(name, labels, "--data_storage_no_update")
    before = frozen.storage.clone()
    frozen.replace_storage_entries(new, idx)
    assert torch.equal(frozen.storage, before)
    # No storage: a clear error, not a silent random batch.
    bare = datasampler.select(name, build(name, labels)[1], labels)
    with pytest.raises(RuntimeError, match="init_storage"):
        list(bare)


def test_full_storage_update_with_momentum(build):
    labels = labels_of([9, 8, 7])
    s, _ = build("greedy_coreset", labels, "--data_mb_mom", "0.5", "--data_mb_lr", "2", "--bs", "6")
    old = s.storage.clone()
    new1, new2 = torch.randn_like(old), torch.randn_like(old)
    s.full_storage_update(new1)
    delta = 0.5 * (new1 - old)
    torch.testing.assert_close(s.storage, new1 + 2 * delta)
    prev = s.storage.clone()
    s.full_storage_update(new2)
    delta = 0.5 * delta + 0.5 * (new2 - prev)
    torch.testing.assert_close(s.storage, new2 + 2 * delta)
    plain, _ = build("greedy_coreset", labels, "--bs", "6")
    plain.full_storage_update(new1)
    torch.testing.assert_close(plain.storage, new1)


# -------------------------------------------------------------------------- greedy coreset
def naive_k_center(points: np.ndarray, first: int, k: int) -> list[int]:
    chosen = [first]
    while len(chosen) < k:
        best, best_d = None, -1.0
        for j in range(len(points)):
            d = min(math.dist(points[j], points[s]) for s in chosen)
            if d > best_d:
                best, best_d = j, d
        chosen.append(best)
    return chosen


@pytest.mark.parametrize("measure", ["euclidean", "cosine"])
def test_greedy_coreset_matches_naive_k_center(measure, build, epoch_batches):
    labels = labels_of([6] * 8)  # 48 images; the pool is all of them
    sampler, opt = build(
        "greedy_coreset",
        labels,
        "--bs",
        "12",
        "--samples_per_class",
        "2",
        "--data_batchmatch_bigbs",
        "48",
        "--data_sim_measure",
        measure,
        dim=3,
    )
    points = sampler.storage.double().numpy()
    if measure == "cosine":
        points = points / np.linalg.norm(points, axis=1, keepdims=True)
    for b in epoch_batches(sampler, 1)[:3]:
        centers = b[::2]  # each coreset point is followed by one class mate
        assert centers == naive_k_center(points, centers[0], 6)
        assert all(labels[b[i]] == labels[b[i + 1]] and b[i] != b[i + 1] for i in range(0, 12, 2))


def test_greedy_coreset_never_repeats_points_once_saturated(build, epoch_batches):
    labels = labels_of([4] * 6)
    sampler, _ = build(
        "greedy_coreset", labels, "--bs", "12", "--samples_per_class", "1", "--data_batchmatch_bigbs", "24"
    )
    sampler.init_storage(torch.zeros(24, 4))  # all points coincide: every pick after the first is "covered"
    for b in epoch_batches(sampler, 1):
        assert len(set(b)) == 12


def test_softened_greedy_coreset_picks_among_the_farthest(build, epoch_batches):
    labels = labels_of([50] * 4)
    sampler, _ = build(
        "greedy_coreset",
        labels,
        "--bs",
        "4",
        "--samples_per_class",
        "1",
        "--data_batchmatch_bigbs",
        "200",
        "--data_gc_softened",
        dim=2,
    )
    points = sampler.storage.double().numpy()
    for b in epoch_batches(sampler, 1)[:5]:
        for k in range(1, 4):
            d = np.min(np.linalg.norm(points[:, None] - points[b[:k]][None], axis=2), axis=1)
            assert d[b[k]] >= np.percentile(d**2, 97) ** 0.5 - 1e-9


# ------------------------------------------------------------------------------ d2 coreset
def test_d2_coreset_second_pick_follows_the_d2_weights():
    """P(j | first) ~ N(x_j; mean, cov) * ||x_j - x_first||^(2 lambda), against scipy's pdf."""
    rng = np.random.default_rng(0)
    points = rng.normal(size=(6, 2))
    lam = 1.5
    pdf = scipy.stats.multivariate_normal(points.mean(0), np.cov(points.T)).pdf(points)
    draws = Counter()
    gen = np.random.default_rng(1)
    for _ in range(4000):
        first, second = d2_coreset(points, 2, lam, gen)
        draws[(first, second)] += 1
    n_checked = 0
    for first in range(6):
        total = sum(c for (f, _), c in draws.items() if f == first)
        if total < 500:
            continue
        w = np.array(
            [0.0 if j == first else pdf[j] * np.sum((points[j] - points[first]) ** 2) ** lam for j in range(6)]
        )
        ref = w / w.sum()
        emp = np.array([draws[(first, j)] / total for j in range(6)])
        assert 0.5 * np.abs(emp - ref).sum() < 0.06
        n_checked += 1
    assert n_checked > 0
    picks = d2_coreset(rng.normal(size=(30, 40)), 10, 1.0, gen)  # singular covariance (n < D) still works
    assert len(set(picks)) == 10


# ---------------------------------------------------------------------------- batch match
def test_histogram_w1_matches_scipy():
    rng = np.random.default_rng(0)
    edges = np.linspace(0.2, 1.7, 51)
    centers = (edges[1:] + edges[:-1]) / 2
    for _ in range(5):
        h1, h2 = rng.random(50), rng.random(50)
        h1, h2 = h1 / h1.sum(), h2 / h2.sum()
        ref = scipy.stats.wasserstein_distance(centers, centers, h1, h2)
        assert histogram_w1(h1, h2, edges[1] - edges[0]) == pytest.approx(ref, rel=1e-9)


def test_disthist_cost_against_a_naive_reference(build):
    labels = labels_of([9, 8, 7, 10, 6, 9])
    sampler, _ = build("disthist_batchmatch", labels)
    rng = np.random.default_rng(0)
    pool = rng.normal(size=(40, 4))
    cands = [rng.choice(40, 12, replace=False) for _ in range(3)]
    from scipy.spatial.distance import pdist

    pd = pdist(pool)
    edges = np.linspace(pd.min(), pd.max(), 51)
    centers = (edges[1:] + edges[:-1]) / 2
    hp = np.histogram(pd, edges)[0] / len(pd)
    for c, cost in zip(cands, sampler.cost(pool, cands)):
        x = pool[c]
        hs = np.histogram(pdist(x), edges)[0] / len(pdist(x))
        ref = (
            np.linalg.norm(pool.mean(0) - x.mean(0))
            + np.linalg.norm(pool.std(0) - x.std(0))
            + 75 * 2 * scipy.stats.wasserstein_distance(centers, centers, hp, hs)
        )
        assert cost == pytest.approx(ref, rel=1e-9)


def test_frechet_distance_matches_scipy_sqrtm():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(30, 5))
    mu, cov = a.mean(0), np.cov(a.T)
    subsets = [rng.normal(loc=s, size=(8, 5)) for s in (0.0, 0.5, 2.0)]
    mus, covs = np.stack([s.mean(0) for s in subsets]), np.stack([np.cov(s.T) for s in subsets])
    got = frechet_distances(mu, cov, mus, covs)
    for m, c, g in zip(mus, covs, got):
        ref = np.sum((mu - m) ** 2) + np.trace(cov) + np.trace(c) - 2 * np.trace(scipy.linalg.sqrtm(cov @ c).real)
        assert g == pytest.approx(ref, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("name", ["disthist_batchmatch", "fid_batchmatch"])
def test_batch_match_yields_the_lowest_cost_candidate(name, build, epoch_batches):
    labels = labels_of([10] * 8)
    sampler, _ = build(
        name,
        labels,
        "--bs",
        "8",
        "--samples_per_class",
        "2",
        "--data_batchmatch_bigbs",
        "80",
        "--data_batchmatch_ncomps",
        "8",
    )
    emb = torch.randn(80, 4, generator=torch.Generator().manual_seed(0)) * 0.1
    emb[labels == 0] += 50.0  # one far-away class
    sampler.init_storage(emb)
    sampler.n_batches = 40
    calls = []
    cost = sampler.cost

    def recording_cost(pool_x, candidates):
        values = cost(pool_x, candidates)
        calls.append((pool_x, candidates, values))
        return values

    sampler.cost = recording_cost
    batches = epoch_batches(sampler, 1)
    for b, (pool_x, candidates, values) in zip(batches, calls):
        best = candidates[int(np.argmin(values))]
        np.testing.assert_allclose(emb[b].double().numpy(), pool_x[best])
    # Matching the pool's statistics means representing the far class, which a random
    # candidate of 4 of the 8 classes holds only about half of the time (20 +- 3 of 40).
    with_far_class = sum(0 in labels[b] for b in batches)
    assert with_far_class >= 28


def test_low_dimensional_projection_runs(build, epoch_batches):
    labels = labels_of([9, 8, 7, 10, 6, 9])
    for name in STORAGE:
        sampler, _ = build(name, labels, "--data_sampler_lowproj_dim", "2", dim=6)
        assert all(len(b) == 12 for b in epoch_batches(sampler, 1))
