"""The remaining Roth-suite miners (intra_random, rho_distance, random_distance, npair, lifted,
parametric): each sampling rule against a naive reference (distribution of the drawn negatives, swap rate within a
binomial bound), and the set miners / triplet-shaped miners feeding their criteria. (Validity by output tag and
reproducibility of every miner: test_contract.py.)"""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

import batch_mining
import criteria
from utilities.errors import UserError


@pytest.fixture
def miner_opt(make_opt):
    """``miner_opt(*argv, **flags)``: options with 8-dimensional embeddings."""
    return lambda *argv, **flags: make_opt(*argv, embed_dim=8, **flags)


@pytest.fixture
def assert_valid(assert_valid_for_tag):
    """Every row a valid (anchor, positive, negative) triplet for the labels ``y``."""
    return lambda t, y: assert_valid_for_tag(t, y, "triplet")


# --------------------------------------------------------------------- validity per rule
def test_parametric_triplets_are_valid_one_per_anchor(miner_opt, miner_batch, valid_anchors, assert_valid):
    x, y = miner_batch(1)
    for mode in ["uniform", "hards", "semihards", "veryhards"]:
        t = batch_mining.select("parametric", miner_opt("--miner_parametric_mode", mode))(x, y)
        assert_valid(t, y)
        assert sorted(t[:, 0].tolist()) == sorted(valid_anchors(y))
    assert batch_mining.select("parametric", miner_opt())(x[:4], y[:4]).shape == (0, 3)


def test_rho_distance_without_swaps_is_valid_distance_sampling(miner_opt, miner_batch, valid_anchors, assert_valid):
    x, y = miner_batch(2)
    miner = batch_mining.select("rho_distance", miner_opt("--miner_rho_distance_cp", "0"))
    t = miner(x, y)
    assert_valid(t, y)
    assert sorted(t[:, 0].tolist()) == sorted(valid_anchors(y)) and miner.n_swapped == 0


def test_random_distance_is_valid_for_its_shuffled_labels(
    miner_opt, miner_batch, valid_anchors, assert_valid, wu_probs
):
    x, y = miner_batch(3)
    upper = 1.1  # the --miner_distance_* cutoffs apply, as in the Roth suite
    miner = batch_mining.select("random_distance", miner_opt("--miner_distance_upper_cutoff", str(upper)))
    miner.generator = torch.Generator().manual_seed(0)
    same_true_class, total, shuffled_differs, n_cut = 0, 0, 0, 0
    for _ in range(200):
        t = miner(x, y)
        perm_y = miner.last_labels
        assert sorted(perm_y.tolist()) == sorted(y.tolist())  # a permutation of the batch labels
        assert_valid(t, perm_y)
        assert sorted(t[:, 0].tolist()) == sorted(valid_anchors(perm_y))
        for a, _, n in t.tolist():
            allowed = wu_probs(x, perm_y, a, 0.5, upper)
            assert n in allowed
            n_cut += len(allowed) < int((perm_y != perm_y[a]).sum())
        shuffled_differs += not torch.equal(perm_y, y)
        same_true_class += int((y[t[:, 0]] == y[t[:, 1]]).sum())
        total += len(t)
    assert shuffled_differs > 190 and n_cut > 0
    # Positives share the TRUE class only by chance (about 0.2 here), far from 1.
    assert same_true_class / total < 0.4


def test_intra_random_draws_whole_triplets_within_one_class(miner_opt, miner_batch):
    x, y = miner_batch(4)
    miner = batch_mining.select("intra_random", miner_opt())
    miner.generator = torch.Generator().manual_seed(0)
    sizes = Counter(y.tolist())
    class_counts = Counter()
    for _ in range(300):
        t = miner(x, y)
        assert t.shape == (len(y), 3)
        a, p, n = t.T
        assert (y[a] == y[p]).all() and (y[a] == y[n]).all()
        assert (a != p).all() and (a != n).all()
        big = torch.tensor([sizes[int(c)] >= 3 for c in y[a]])
        assert (p[big] != n[big]).all()  # distinct when the class has three images
        assert (n[~big] == p[~big]).all()
        class_counts.update(y[a].tolist())
    assert 4 not in class_counts  # the singleton class cannot form a triplet
    # Classes drawn uniformly among the 4 eligible ones: 300 * 13 / 4 = 975 each.
    expected = 300 * 13 / 4
    assert all(abs(c - expected) < 5 * math.sqrt(expected) for c in class_counts.values()), class_counts
    assert batch_mining.select("intra_random", miner_opt())(x[-3:], y[-3:]).shape == (3, 3)
    pair_class = batch_mining.select("intra_random", miner_opt())(x[10:], y[10:])  # labels 3, 3, 4
    assert {tuple(r) for r in pair_class.tolist()} <= {(0, 1, 1), (1, 0, 0)} and len(pair_class) == 3
    assert batch_mining.select("intra_random", miner_opt())(x[-1:], y[-1:]).shape == (0, 3)


# --------------------------------------------------------------------------- rho_distance
def test_rho_distance_swap_rate_matches_cp_binomially(miner_opt, miner_batch, assert_valid):
    """Each anchor's triplet becomes (a, a, p') with probability cp (the Roth suite's swap)."""
    x, y = miner_batch(5)
    cp = 0.2
    miner = batch_mining.select("rho_distance", miner_opt("--miner_rho_distance_cp", str(cp)))
    miner.generator = torch.Generator().manual_seed(11)
    swapped, total = 0, 0
    for _ in range(600):
        t = miner(x, y)
        a, p, n = t.T
        swap = a == p
        # Swapped: the negative slot holds another image of the anchor's class.
        assert (y[n[swap]] == y[a[swap]]).all() and (n[swap] != a[swap]).all()
        assert_valid(t[~swap], y)
        assert int(swap.sum()) == miner.n_swapped
        swapped += int(swap.sum())
        total += len(t)
    sd = math.sqrt(total * cp * (1 - cp))
    assert abs(swapped - total * cp) < 4 * sd, (swapped, total)
    for value, expect in (("0", 0), ("1", 1)):
        m = batch_mining.select("rho_distance", miner_opt("--miner_rho_distance_cp", value))
        t = m(x, y)
        assert float((t[:, 0] == t[:, 1]).float().mean()) == expect


def test_rho_distance_negatives_follow_wu_weights_with_its_own_cutoffs(miner_opt, wu_probs, tv_distance):
    dim = 4
    g = torch.Generator().manual_seed(3)
    x = F.normalize(torch.randn(16, dim, generator=g, dtype=torch.float64), dim=1)
    y = torch.arange(4).repeat_interleave(4)
    lower, upper = 0.7, 1.2  # differ from the --miner_distance_* defaults: the rho flags must be used
    opt = miner_opt(
        "--miner_rho_distance_lower_cutoff",
        str(lower),
        "--miner_rho_distance_upper_cutoff",
        str(upper),
        "--miner_rho_distance_cp",
        "0.3",
    )
    miner = batch_mining.select("rho_distance", opt)
    miner.generator = torch.Generator().manual_seed(1)
    counts, draws = [Counter() for _ in range(16)], [0] * 16
    for _ in range(3000):
        for a, p, n in miner(x, y).tolist():
            if a != p:
                counts[a][n] += 1
                draws[a] += 1
    n_cut = 0
    for a in range(16):
        ref = wu_probs(x, y, a, lower, upper)
        assert set(counts[a]) <= set(ref), "a negative outside the upper cutoff was drawn"
        assert tv_distance(counts[a], ref, draws[a]) < 0.06
        n_cut += len(ref) < 12
    assert n_cut > 0, "inputs must exercise the cutoff"


# ----------------------------------------------------------------------------- parametric
def parametric_reference(d: list[float], mode: str, lo: float, hi: float, n_support: int) -> list[float]:
    """Naive per-negative weights: bin of equal width on [lo, hi], mode rule on the bin centre."""
    width = (hi - lo) / (n_support - 1)
    out = []
    for v in d:
        if not lo <= v <= hi:
            out.append(0.0)
            continue
        c = lo + (min(int((v - lo) / width), n_support - 2) + 0.5) * width
        rule = {"uniform": True, "hards": c <= 0.5, "semihards": 0.3 <= c <= 0.7, "veryhards": c <= 0.3}[mode]
        out.append(1.0 if rule else 1e-15)
    if sum(out) == 0:
        out = [1.0] * len(d)
    return out


@pytest.mark.parametrize(("mode", "lim"), [("uniform", (0.6, 1.3)), ("hards", (0.0, 2.0)), ("semihards", (0.0, 2.0))])
def test_parametric_negatives_follow_the_target_distribution(mode, lim, miner_opt, assert_valid, tv_distance):
    n_support = 21
    g = torch.Generator().manual_seed(7)
    x = F.normalize(torch.randn(16, 3, generator=g, dtype=torch.float64), dim=1)
    y = torch.arange(4).repeat_interleave(4)
    opt = miner_opt(
        "--miner_parametric_mode",
        mode,
        "--miner_parametric_n_support",
        str(n_support),
        "--miner_parametric_support_lim",
        *map(str, lim),
    )
    miner = batch_mining.select("parametric", opt)
    miner.generator = torch.Generator().manual_seed(0)
    draws = 2000
    counts = [Counter() for _ in range(16)]
    for _ in range(draws):
        t = miner(x, y)
        assert_valid(t, y)
        for a, _, n in t.tolist():
            counts[a][n] += 1
    n_restricted = 0
    for a in range(16):
        negs = [j for j in range(16) if y[j] != y[a]]
        w = parametric_reference([math.dist(x[a].tolist(), x[j].tolist()) for j in negs], mode, *lim, n_support)
        ref = {j: wj / sum(w) for j, wj in zip(negs, w) if wj > 0}
        assert tv_distance(counts[a], ref, draws) < 0.05, (a, mode)
        n_restricted += sum(v > 1e-9 for v in ref.values()) < len(negs)
    assert n_restricted > 0, "inputs must exercise the restriction"


def test_parametric_rejects_bad_flags(miner_opt):
    with pytest.raises(UserError):
        batch_mining.select("parametric", miner_opt("--miner_parametric_support_lim", "1", "0"))


# ------------------------------------------------------------------------- npair / lifted
def test_npair_structure_against_naive_loop(miner_opt, miner_batch):
    x, y = miner_batch(6)
    miner = batch_mining.select("npair", miner_opt())
    anchors, positives, negatives = miner(x, y)
    assert [a for a in range(len(y)) if (y == y[a]).sum() > 1] == anchors.tolist()
    assert positives.shape == anchors.shape and negatives.shape == (len(anchors), len(y))
    for i, a in enumerate(anchors.tolist()):
        assert positives[i] != a and y[positives[i]] == y[a]
        assert negatives[i].tolist() == [bool(y[j] != y[a]) for j in range(len(y))]
    # Every positive gets drawn: the class of size 4 offers 3 to each anchor.
    seen = Counter()
    miner.generator = torch.Generator().manual_seed(1)
    for _ in range(200):
        seen.update(miner(x, y).positives[:4].tolist())
    assert set(seen) == {0, 1, 2, 3}


def test_lifted_structure_against_naive_loop(miner_opt, miner_batch):
    x, y = miner_batch(7)
    anchors, positives, negatives = batch_mining.select("lifted", miner_opt())(x, y)
    assert [a for a in range(len(y)) if (y == y[a]).sum() > 1] == anchors.tolist()
    for i, a in enumerate(anchors.tolist()):
        assert positives[i].tolist() == [bool(j != a and y[j] == y[a]) for j in range(len(y))]
        assert negatives[i].tolist() == [bool(y[j] != y[a]) for j in range(len(y))]


@pytest.mark.parametrize(("loss", "miner"), [("npair", "npair"), ("angular", "npair"), ("lifted", "lifted")])
def test_set_miners_feed_their_criteria(loss, miner, miner_opt, miner_batch):
    opt = miner_opt("--loss", loss)
    x, y = miner_batch(8)
    x = x.clone().requires_grad_(True)
    crit = criteria.select(loss, opt, batch_mining.select(miner, opt), n_classes=5)
    value = crit(x, y)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name", ["parametric", "rho_distance", "random_distance", "intra_random"])
@pytest.mark.parametrize("loss", ["triplet", "contrastive"])
def test_triplet_shaped_miners_feed_triplet_losses(name, loss, miner_opt, miner_batch):
    """The criterion mines with the miner itself; its value and gradient equal a naive loop of the loss formula over
    the same draw (re-mined with the same seed), push / intra-class "negatives" included."""
    x, y = miner_batch(9, dtype=torch.float64)
    opt = miner_opt("--loss", loss)
    miner = batch_mining.select(name, opt)
    crit = criteria.select(loss, opt, miner)
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    miner.generator = torch.Generator().manual_seed(2)
    value = crit(x1, y)
    value.backward()
    miner.generator = torch.Generator().manual_seed(2)
    t = miner(x, y).tolist()
    if loss == "triplet":  # Roth suite: squared distances, mean over all mined triplets
        terms = [F.relu((x2[a] - x2[p]).pow(2).sum() - (x2[a] - x2[n]).pow(2).sum() + 0.2) for a, p, n in t]
        ref = sum(terms) / len(t)
    else:  # mean positive-pair term + mean negative-pair term, margins 0 and 1, plain distances
        pos = [(x2[a] - x2[p]).norm() for a, p, _ in t]  # a push triplet (a, a, p) adds 0 here
        neg = [F.relu(1.0 - (x2[a] - x2[n]).norm()) for a, _, n in t]
        ref = sum(pos) / len(t) + sum(neg) / len(t)
    ref.backward()
    assert len(t) > 0 and float(ref.detach()) > 0
    torch.testing.assert_close(value, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-10, atol=1e-12)
