"""Triplet miners: each miner's selection rule checked against a naive loop (semihard, softhard), an exhaustive
enumeration (random) or the sampling distribution of Wu et al. 2017 (distance). (Validity by output tag and
reproducibility of every miner: test_contract.py.)"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import batch_mining


@pytest.fixture
def miner_opt(make_opt):
    """``miner_opt(**flags)``: options with 8-dimensional embeddings."""
    return lambda **flags: make_opt(embed_dim=8, **flags)


@pytest.mark.parametrize("name", ["semihard", "softhard", "distance"])
def test_one_triplet_per_valid_anchor(name, miner_opt, miner_batch, valid_anchors):
    x, y = miner_batch(1)
    t = batch_mining.select(name, miner_opt(), margin=0.2)(x, y)
    assert sorted(t[:, 0].tolist()) == sorted(valid_anchors(y))


def test_semihard_negatives_against_naive_loop(miner_opt, miner_batch):
    """n satisfies d_ap < d_an < d_ap + margin whenever such a negative exists, else any negative."""
    miner = batch_mining.select("semihard", miner_opt(), margin=0.3)
    assert miner.margin == 0.3
    n_semihard = 0
    for seed in range(20):
        x, y = miner_batch(seed)
        for a, p, n in miner(x, y).tolist():
            d = [math.dist(x[a].tolist(), x[j].tolist()) for j in range(len(y))]
            semihard = [j for j in range(len(y)) if y[j] != y[a] and d[p] < d[j] < d[p] + 0.3]
            if semihard:
                assert n in semihard
                n_semihard += 1
            else:
                assert y[n] != y[a]
    assert n_semihard > 20, "the inputs must exercise the semi-hard case"


def test_softhard_against_naive_loop(miner_opt, miner_batch):
    miner = batch_mining.select("softhard", miner_opt())
    for seed in range(10):
        x, y = miner_batch(seed)
        for a, p, n in miner(x, y).tolist():
            d = [math.dist(x[a].tolist(), x[j].tolist()) for j in range(len(y))]
            pos = [j for j in range(len(y)) if j != a and y[j] == y[a]]
            neg = [j for j in range(len(y)) if y[j] != y[a]]
            hard_pos = [j for j in pos if d[j] > min(d[k] for k in neg)]
            hard_neg = [j for j in neg if d[j] < max(d[k] for k in pos)]
            assert p in (hard_pos or pos) and n in (hard_neg or neg)


def test_random_draws_uniformly_from_all_valid_triplets(miner_opt):
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    x = torch.randn(6, 4)
    everything = {(a, p, n) for a in range(6) for p in range(6) for n in range(6)
                  if a != p and y[a] == y[p] and y[n] != y[a]}  # fmt: skip
    miner = batch_mining.select("random", miner_opt())
    miner.generator = torch.Generator().manual_seed(0)
    counts = Counter()
    for _ in range(1000):
        t = [tuple(r) for r in miner(x, y).tolist()]
        assert len(t) == 6 == len(set(t))  # batch-size many, without replacement
        counts.update(t)
    assert set(counts) == everything
    expected = 6000 / len(everything)
    assert max(abs(c - expected) for c in counts.values()) < 0.25 * expected
    # Fewer valid triplets than the batch size: all of them.
    y2 = torch.tensor([0, 0, 1])
    t2 = {tuple(r) for r in miner(torch.randn(3, 4), y2).tolist()}
    assert t2 == {(0, 1, 2), (1, 0, 2)}


def test_distance_miner_probabilities_match_wu_et_al(miner_opt, wu_probs):
    dim = 4
    g = torch.Generator().manual_seed(3)
    x = F.normalize(torch.randn(16, dim, generator=g, dtype=torch.float64), dim=1)
    y = torch.arange(4).repeat_interleave(4)
    miner = batch_mining.select("distance", miner_opt())  # default cutoffs 0.5 / 1.4
    probs = miner.negative_probabilities(x, y)
    n_cut, n_nonuniform = 0, 0
    for a in range(16):
        ref = wu_probs(x, y, a, 0.5, 1.4)
        expected = torch.tensor([ref.get(j, 0.0) for j in range(16)], dtype=torch.float64)
        torch.testing.assert_close(probs[a], expected, rtol=1e-9, atol=1e-12)
        n_cut += len(ref) < 12
        n_nonuniform += 0.5 * sum(abs(p - 1 / len(ref)) for p in ref.values()) > 0.15
    assert n_cut > 0 and n_nonuniform > 0, "inputs must exercise the cutoff and non-uniform weights"


def test_distance_miner_samples_follow_the_weights(miner_opt, wu_probs, tv_distance):
    """Seeded frequencies of the sampled negative against the reference law (loose total-variation bound)."""
    dim, copies = 4, 200
    g = torch.Generator().manual_seed(7)
    others = F.normalize(torch.randn(12, dim, generator=g, dtype=torch.float64), dim=1)
    anchor = others[:1] * -0.3 + others[1:2]  # one anchor position, replicated: each copy draws once per call
    x = torch.cat([F.normalize(anchor, dim=1).expand(copies, dim), others]).float()  # float32 as in training
    y = torch.cat([torch.zeros(copies, dtype=torch.long), torch.arange(12) // 3 + 1])
    ref = wu_probs(x, y, 0, 0.5, 1.4)
    assert len(ref) < 12 and 0.5 * sum(abs(p - 1 / len(ref)) for p in ref.values()) > 0.1
    miner = batch_mining.select("distance", miner_opt())
    miner.generator = torch.Generator().manual_seed(1)
    counts = Counter()
    for _ in range(15):
        t = miner(x, y)
        counts.update(t[t[:, 0] < copies, 2].tolist())
    n = sum(counts.values())
    assert n == 15 * copies and set(counts) <= set(ref), "sampled a negative beyond the cutoff"
    tv = tv_distance(counts, ref, n)
    assert tv < 0.04, tv


def test_distance_miner_falls_back_to_all_negatives_beyond_the_cutoff(miner_opt, miner_batch):
    x, y = miner_batch(4)
    miner = batch_mining.select("distance", miner_opt(miner_distance_upper_cutoff=0.0))
    probs = miner.negative_probabilities(x.double(), y)
    neg = y[:, None] != y[None, :]
    assert ((probs > 0) == neg).all()
    torch.testing.assert_close(probs.sum(1), torch.ones(len(y), dtype=torch.float64))


def test_semihard_uses_the_margin_it_is_given(miner_opt):
    """The margin comes from the loss the miner serves (``Criterion.miner_margin``, tested with the criteria), not from
    a flag the miner reads: the same options with two margins give two rules."""
    opt = miner_opt(loss_triplet_margin=0.2)
    narrow = batch_mining.select("semihard", opt, margin=0.01)
    wide = batch_mining.select("semihard", opt, margin=5.0)
    assert (narrow.margin, wide.margin) == (0.01, 5.0)
    # anchor 0, positive 1 at distance 1, negatives at 1.005 and 3: with margin 0.01 only the first is semi-hard,
    # with margin 5 both are
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.005], [0.0, -3.0]])
    y = torch.tensor([0, 0, 1, 2])
    drawn = {}
    for miner in (narrow, wide):
        miner.generator = torch.Generator().manual_seed(0)
        drawn[miner.margin] = Counter(int(t[2]) for _ in range(100) for t in miner(x, y) if t[0] == 0)
    assert set(drawn[0.01]) == {2} and set(drawn[5.0]) == {2, 3}


def test_pick_and_pick_weighted_draw_from_their_laws():
    """The shared draws of the miners: uniform over a row's True entries, and proportional to a row's weights
    (zero weights never drawn), against scipy's chi-square test on 20,000 seeded draws per row."""
    from scipy.stats import chisquare

    from batch_mining._base import pick, pick_weighted

    gen = torch.Generator().manual_seed(0)
    weights = torch.tensor([[0.0, 1.0, 0.0, 2.0, 3.0, 0.0], [5.0, 0.0, 0.0, 0.0, 0.0, 1e-3], [0.0] * 5 + [1.0]])
    mask = weights > 0
    n = 20_000
    drawn_w = torch.stack([pick_weighted(weights, gen) for _ in range(n)])  # [n, 3]
    drawn_u = torch.stack([pick(mask, gen) for _ in range(n)])
    for row in range(len(weights)):
        support = torch.nonzero(mask[row]).squeeze(1)
        for drawn, law in ((drawn_w, weights[row, support]), (drawn_u, torch.ones(len(support)))):
            counts = torch.bincount(drawn[:, row], minlength=weights.shape[1])
            assert counts[~mask[row]].sum() == 0  # never outside the support
            if len(support) > 1 and (law / law.sum() * n >= 5).sum() > 1:
                expected = (law / law.sum() * n).numpy()
                keep = expected >= 5  # chi-square needs populated cells (the 1e-3 weight: about 4 draws)
                observed = counts[support].numpy()[keep].astype(np.float64)
                f_exp = expected[keep].astype(np.float64)
                assert chisquare(observed, observed.sum() * f_exp / f_exp.sum()).pvalue > 1e-3
