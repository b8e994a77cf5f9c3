"""Triplet miners: validity, determinism, and each miner's selection rule checked against a
naive loop (semihard, softhard), an exhaustive enumeration (random) or the sampling
distribution of Wu et al. 2017 (distance)."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

import batch_mining
import parameters
from criteria._common import TRIPLET_MINERS


def make_opt(*argv: str):
    return parameters.build_parser().parse_args(["--embed_dim", "8", *argv])


def batch(seed: int = 0, dim: int = 8):
    """14 unit vectors, classes of sizes 4, 3, 3, 2, 1 (the singleton has no positive)."""
    g = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(13, dim, generator=g), dim=1)
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 4])
    return x, y


def valid_anchors(y: torch.Tensor) -> set[int]:
    return {a for a in range(len(y)) if (y == y[a]).sum() > 1 and (y != y[a]).any()}


@pytest.mark.parametrize("name", TRIPLET_MINERS)
def test_triplets_are_valid_and_deterministic(name):
    x, y = batch()
    miner = batch_mining.select(name, make_opt("--loss", "triplet"))
    torch.manual_seed(0)
    t = miner(x, y)
    assert t.dtype == torch.long and t.dim() == 2 and t.shape[1] == 3 and len(t) > 0
    a, p, n = t.T
    assert (a != p).all() and (y[a] == y[p]).all() and (y[n] != y[a]).all()
    assert set(a.tolist()) <= valid_anchors(y)
    torch.manual_seed(0)
    assert torch.equal(miner(x, y), t)
    miner.generator = torch.Generator().manual_seed(5)
    t1 = miner(x, y.numpy())  # numpy labels work too
    miner.generator = torch.Generator().manual_seed(5)
    assert torch.equal(miner(x, y), t1)
    # A single-class batch has no valid triplet.
    assert miner(x[:4], y[:4]).shape == (0, 3)


def assert_valid_for_tag(miner, out, y: torch.Tensor) -> None:
    """The validity rule of ``batch_mining.OUTPUTS[miner.output]``, written out with the labels ``y``."""
    tag, n_items = miner.output, len(y)
    if tag.endswith("triplet"):
        assert isinstance(out, torch.Tensor) and out.dtype == torch.long and out.dim() == 2 and out.shape[1] == 3
        assert ((out >= 0) & (out < n_items)).all()
        a, p, n = out.T
        if tag == "shuffled_triplet":  # valid for the miner's permutation of the labels
            assert sorted(miner.last_labels.tolist()) == sorted(y.tolist())
            y = miner.last_labels
        push = (a == p) if tag == "push_triplet" else torch.zeros(len(a), dtype=torch.bool)
        if tag == "intra_triplet":
            sizes = torch.bincount(y)
            assert (y[a] == y[p]).all() and (y[a] == y[n]).all() and (a != p).all() and (a != n).all()
            assert ((n != p) | (sizes[y[a]] == 2)).all()
            return
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
            raise AssertionError(f"unknown output tag {tag!r} of {miner.name}; see batch_mining.OUTPUTS")


@pytest.mark.parametrize("name", batch_mining.names())
def test_every_registered_miner_returns_valid_tuples_for_its_output_tag(name):
    """Random embeddings with classes of sizes 4, 3, 3, 2, 1 (one singleton), a batch of one class and one of all
    distinct labels: every tuple obeys the rule of the miner's ``output`` tag; where the batch has no valid
    tuple of that structure, the miner returns none."""
    miner = batch_mining.select(name, make_opt("--loss", "triplet"))
    assert miner.output in batch_mining.OUTPUTS
    miner.generator = torch.Generator().manual_seed(0)
    n_tuples = 0
    for seed in range(5):
        x, y = batch(seed)
        out = miner(x, y)
        assert_valid_for_tag(miner, out, y)
        n_tuples += len(out[0]) if miner.output in ("npair", "lifted") else len(out)
    assert n_tuples > 0
    x, y = batch(5)
    # One class: no negative, so no label-valid triplet, but intra-class triplets (B of them) and B npair/lifted
    # anchors (with empty negative sets). All labels distinct: no positive, so nothing at all.
    one_class = {"intra_triplet": len(y), "npair": len(y), "lifted": len(y)}.get(miner.output, 0)
    for labels, expected in ((torch.zeros(len(y), dtype=torch.long), one_class), (torch.arange(len(y)), 0)):
        out = miner(x, labels)
        assert_valid_for_tag(miner, out, labels)
        assert (len(out[0]) if miner.output in ("npair", "lifted") else len(out)) == expected, (labels, out)


@pytest.mark.parametrize("name", ["semihard", "softhard", "distance"])
def test_one_triplet_per_valid_anchor(name):
    x, y = batch(1)
    t = batch_mining.select(name, make_opt("--loss", "triplet"))(x, y)
    assert sorted(t[:, 0].tolist()) == sorted(valid_anchors(y))


def test_semihard_negatives_against_naive_loop():
    """n satisfies d_ap < d_an < d_ap + margin whenever such a negative exists, else any negative."""
    miner = batch_mining.select("semihard", make_opt("--loss", "triplet", "--loss_triplet_margin", "0.3"))
    assert miner.margin == 0.3
    n_semihard = 0
    for seed in range(20):
        x, y = batch(seed)
        for a, p, n in miner(x, y).tolist():
            d = [math.dist(x[a].tolist(), x[j].tolist()) for j in range(len(y))]
            semihard = [j for j in range(len(y)) if y[j] != y[a] and d[p] < d[j] < d[p] + 0.3]
            if semihard:
                assert n in semihard
                n_semihard += 1
            else:
                assert y[n] != y[a]
    assert n_semihard > 20, "the inputs must exercise the semi-hard case"


def test_softhard_against_naive_loop():
    miner = batch_mining.select("softhard", make_opt())
    for seed in range(10):
        x, y = batch(seed)
        for a, p, n in miner(x, y).tolist():
            d = [math.dist(x[a].tolist(), x[j].tolist()) for j in range(len(y))]
            pos = [j for j in range(len(y)) if j != a and y[j] == y[a]]
            neg = [j for j in range(len(y)) if y[j] != y[a]]
            hard_pos = [j for j in pos if d[j] > min(d[k] for k in neg)]
            hard_neg = [j for j in neg if d[j] < max(d[k] for k in pos)]
            assert p in (hard_pos or pos) and n in (hard_neg or neg)


def test_random_draws_uniformly_from_all_valid_triplets():
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    x = torch.randn(6, 4)
    everything = {(a, p, n) for a in range(6) for p in range(6) for n in range(6)
                  if a != p and y[a] == y[p] and y[n] != y[a]}  # fmt: skip
    miner = batch_mining.select("random", make_opt())
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


def reference_distance_probs(x, y, a, dim, lower, upper):
    """Wu et al. 2017: P(n | a) ~ 1/q(max(d, lower)) on negatives with d < upper (all negatives if none)."""
    negs = [j for j in range(len(y)) if y[j] != y[a]]
    d = {j: max(math.dist(x[a].tolist(), x[j].tolist()), lower) for j in negs}
    allowed = [j for j in negs if d[j] < upper] or negs
    w = {j: d[j] ** (2 - dim) * (1 - d[j] ** 2 / 4) ** (-(dim - 3) / 2) for j in allowed}
    z = sum(w.values())
    return {j: w[j] / z for j in allowed}


def test_distance_miner_probabilities_match_wu_et_al():
    dim = 4
    g = torch.Generator().manual_seed(3)
    x = F.normalize(torch.randn(16, dim, generator=g, dtype=torch.float64), dim=1)
    y = torch.arange(4).repeat_interleave(4)
    miner = batch_mining.select("distance", make_opt())  # default cutoffs 0.5 / 1.4
    probs = miner.negative_probabilities(x, y)
    n_cut, n_nonuniform = 0, 0
    for a in range(16):
        ref = reference_distance_probs(x, y, a, dim, 0.5, 1.4)
        expected = torch.tensor([ref.get(j, 0.0) for j in range(16)], dtype=torch.float64)
        torch.testing.assert_close(probs[a], expected, rtol=1e-9, atol=1e-12)
        n_cut += len(ref) < 12
        n_nonuniform += 0.5 * sum(abs(p - 1 / len(ref)) for p in ref.values()) > 0.15
    assert n_cut > 0 and n_nonuniform > 0, "inputs must exercise the cutoff and non-uniform weights"


def test_distance_miner_samples_follow_the_weights():
    """Seeded frequencies of the sampled negative against the reference law (loose total-variation bound)."""
    dim, copies = 4, 200
    g = torch.Generator().manual_seed(7)
    others = F.normalize(torch.randn(12, dim, generator=g, dtype=torch.float64), dim=1)
    anchor = others[:1] * -0.3 + others[1:2]  # one anchor position, replicated: each copy draws once per call
    x = torch.cat([F.normalize(anchor, dim=1).expand(copies, dim), others]).float()  # float32 as in training
    y = torch.cat([torch.zeros(copies, dtype=torch.long), torch.arange(12) // 3 + 1])
    ref = reference_distance_probs(x, y, 0, dim, 0.5, 1.4)
    assert len(ref) < 12 and 0.5 * sum(abs(p - 1 / len(ref)) for p in ref.values()) > 0.1
    miner = batch_mining.select("distance", make_opt())
    miner.generator = torch.Generator().manual_seed(1)
    counts = Counter()
    for _ in range(15):
        t = miner(x, y)
        counts.update(t[t[:, 0] < copies, 2].tolist())
    n = sum(counts.values())
    assert n == 15 * copies and set(counts) <= set(ref), "sampled a negative beyond the cutoff"
    tv = 0.5 * sum(abs(counts[j] / n - ref.get(j, 0.0)) for j in set(ref) | set(counts))
    assert tv < 0.04, tv


def test_distance_miner_falls_back_to_all_negatives_beyond_the_cutoff():
    x, y = batch(4)
    opt = make_opt("--miner_distance_upper_cutoff", "0.0")
    miner = batch_mining.select("distance", opt)
    probs = miner.negative_probabilities(x.double(), y)
    neg = y[:, None] != y[None, :]
    assert ((probs > 0) == neg).all()
    torch.testing.assert_close(probs.sum(1), torch.ones(len(y), dtype=torch.float64))


def test_semihard_reads_the_margin_flag_of_the_loss_or_its_base():
    def margin(*argv):
        opt = parameters.parse_args(["--batch_mining", "semihard", *argv])
        return batch_mining.select("semihard", opt).margin

    assert margin("--loss", "margin", "--loss_margin_margin", "0.35", "--loss_triplet_margin", "0.1") == 0.35
    assert margin("--loss", "snr", "--loss_snr_margin", "0.45") == 0.45
    assert margin("--loss", "adversarial_separation", "--loss_margin_margin", "0.3") == 0.3  # base: margin
    base = ["--loss", "adversarial_separation", "--loss_adversarial_separation_base", "triplet"]
    assert margin(*base, "--loss_triplet_margin", "0.4", "--loss_margin_margin", "0.3") == 0.4
    assert margin("--loss", "quadruplet", "--loss_triplet_margin", "0.25") == 0.25  # no margin flag: the triplet one
