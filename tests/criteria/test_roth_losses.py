"""Roth-suite criteria (proxynca, npair, angular, lifted, snr, histogram, softtriplet, quadruplet,
adversarial_separation) against independent references, values AND gradients in float64.

References: pytorch-metric-learning (PML) where it implements the same variant on the same tuples;
otherwise a naive per-tuple Python loop written from the paper's formula.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import distances, losses, reducers, regularizers

import batch_mining
import criteria
from utilities.errors import UserError

B, C, D = 24, 6, 8  # 6 classes x 4 samples
TOL = dict(rtol=1e-10, atol=1e-12)
LR = 1e-5  # the Roth suite's --lr (the digits default is 1e-3)


@pytest.fixture
def roth_opt(make_opt):
    """``roth_opt(loss, **flags)``: the options of a ``--loss loss`` run with embedding dimension D and the Roth
    suite's --lr."""
    return lambda loss, **flags: make_opt("--loss", loss, embed_dim=D, lr=LR, **flags)


def batch(seed: int = 0, scale: float = 1.0, normalize: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, D, generator=g, dtype=torch.float64) * scale
    if normalize:
        x = F.normalize(x, dim=1)
    labels = torch.arange(C).repeat_interleave(B // C)[torch.randperm(B, generator=g)]
    return x, labels


def leaves(x: torch.Tensor, n: int = 2) -> list[torch.Tensor]:
    return [x.clone().requires_grad_(True) for _ in range(n)]


def assert_close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, **TOL)


def mined(opt, name: str, x: torch.Tensor, labels: torch.Tensor, seed: int = 1):
    """The tuples miner ``name`` (built from ``opt``) draws with a seeded generator."""
    miner = batch_mining.select(name, opt)
    miner.generator = torch.Generator().manual_seed(seed)
    return miner(x, labels)


# ----------------------------------------------------------------------------------- proxynca


def test_proxynca_matches_paper_loop_and_pml(roth_opt):
    """Roth/paper form excludes the positive proxy from the denominator; PML's ProxyNCALoss includes it
    (L_pml = -log p_y). Per sample the two are tied exactly by L_roth = L_pml + log(1 - exp(-L_pml)),
    so PML (softmax_scale 9 = radius 3 squared, per-element losses) is an independent oracle after that map."""
    torch.manual_seed(3)  # fixed proxies: the log(1 - exp(-l)) map needs every per-sample loss away from 0
    crit = criteria.select("proxynca", roth_opt("proxynca"), n_classes=C).double()
    x, labels = batch()
    x1, x2, x3 = leaves(x, 3)
    loss = crit(x1, labels)
    loss.backward()

    pml = losses.ProxyNCALoss(C, D, softmax_scale=9, reducer=reducers.DoNothingReducer())
    pml.proxies.data = crit.proxies.detach().clone()
    per = pml(x2, labels)["loss"]["losses"]
    assert per.min() > 1e-4  # keeps log(1 - exp(-l)) well conditioned
    ref = (per + torch.log(-torch.expm1(-per))).mean()
    ref.backward()
    assert_close(loss, ref)
    assert_close(x1.grad, x2.grad)
    assert_close(crit.proxies.grad, pml.proxies.grad)

    # Naive loop, Movshovitz-Attias et al. 2017 eq. 5 with the Roth suite's radius 3.
    crit.proxies.grad = None
    proxies = crit.proxies
    total = 0.0
    for i in range(B):
        xi = 3 * x3[i] / x3[i].norm()
        d = [((xi - 3 * proxies[c] / proxies[c].norm()) ** 2).sum() for c in range(C)]
        y = int(labels[i])
        total = total - torch.log(torch.exp(-d[y]) / sum(torch.exp(-d[c]) for c in range(C) if c != y))
    (total / B).backward()
    assert_close(loss, total.detach() / B)
    assert_close(x1.grad, x3.grad)
    assert_close(pml.proxies.grad, proxies.grad)


def test_proxynca_param_group(roth_opt):
    crit = criteria.select("proxynca", roth_opt("proxynca", loss_proxynca_lrmulti=7.0), n_classes=C)
    (group,) = crit.param_groups()
    assert group["params"][0] is crit.proxies and group["lr"] == pytest.approx(7e-5) and group["weight_decay"] == 0


# -------------------------------------------------------------------------------- npair / angular


def pml_npair_tuples(labels: torch.Tensor):
    """One (anchor, positive) pair per class, negatives = the other pairs' positives: the
    multi-class N-pair batch of Sohn 2016, which is what PML's NPairsLoss computes."""
    a, p = [], []
    for c in range(C):
        idx = torch.nonzero(labels == c).squeeze(1)
        a.append(idx[0])
        p.append(idx[1])
    a, p = torch.stack(a), torch.stack(p)
    neg = torch.zeros(len(a), B, dtype=torch.bool)
    for i in range(len(a)):
        neg[i, p[torch.arange(len(a)) != i]] = True
    return a, p, neg


def naive_npair(x, tuples):
    anchors, positives, negatives = tuples
    terms = []
    for a, p, nmask in zip(anchors.tolist(), positives.tolist(), negatives):
        s = sum(torch.exp(x[a] @ x[n] - x[a] @ x[p]) for n in torch.nonzero(nmask).squeeze(1).tolist())
        terms.append(torch.log(1 + s))
    return sum(terms) / len(terms)


def test_npair_matches_pml_npairs_loss(roth_opt):
    l2 = 0.02
    opt = roth_opt("npair", loss_npair_l2=l2)
    crit = criteria.select("npair", opt, batch_mining.select("npair", opt)).double()
    x, labels = batch(scale=0.5)
    x1, x2 = leaves(x)
    a, p, neg = pml_npair_tuples(labels)
    loss = crit(x1, labels, tuples=(a, p, neg))
    loss.backward()
    pml = losses.NPairsLoss(
        distance=distances.DotProductSimilarity(normalize_embeddings=False),  # PML normalises by default
        embedding_regularizer=regularizers.LpRegularizer(),
        embedding_reg_weight=l2,
    )
    ref = pml(x2, labels, indices_tuple=(a, p, a, p))
    ref.backward()
    assert_close(loss, ref)
    assert_close(x1.grad, x2.grad)


def test_npair_with_miner_matches_naive_loop_and_index_lists(roth_opt):
    """The npair miner's structure (all other-class negatives), and the Roth suite's list form of it."""
    l2 = 0.005
    opt = roth_opt("npair")
    crit = criteria.select("npair", opt, batch_mining.select("npair", opt)).double()
    x, labels = batch(seed=3, scale=0.5)
    tuples = mined(opt, "npair", x, labels)
    x1, x2, x3 = leaves(x, 3)
    loss = crit(x1, labels, tuples=tuples)
    loss.backward()
    ref = naive_npair(x2, tuples) + l2 * sum(x2[i].norm() for i in range(B)) / B
    ref.backward()
    assert_close(loss, ref)
    assert_close(x1.grad, x2.grad)
    as_lists = (tuples[0].tolist(), tuples[1].tolist(), [np.nonzero(r.numpy())[0] for r in tuples[2]])
    assert_close(crit(x3, labels, tuples=as_lists), loss.detach())
    # Default path: the criterion mines by itself.
    assert torch.isfinite(crit(x, labels))


@pytest.mark.parametrize("alpha", [36.0, 45.0])
def test_angular_matches_pml_angular_plus_npair(alpha, roth_opt):
    """L = L_npair + lambda L_ang + l2 mean||x||: the angular part vs PML's AngularLoss (which takes all
    other-class samples as negatives of a pair, as the npair miner does), the N-pair part vs a naive loop."""
    lam, l2 = 2.0, 0.005
    opt = roth_opt("angular", loss_angular_alpha=alpha, loss_angular_npair_ang_weight=lam, loss_angular_npair_l2=l2)
    crit = criteria.select("angular", opt, batch_mining.select("npair", opt)).double()
    x, labels = batch(seed=5, scale=0.5)
    tuples = mined(opt, "npair", x, labels)
    x1, x2 = leaves(x)
    loss = crit(x1, labels, tuples=tuples)
    loss.backward()
    a, p = tuples[0], tuples[1]
    a2, n = torch.nonzero(labels[:, None] != labels[None, :], as_tuple=True)
    # PML normalises anchors and positives but takes the negatives from its raw input: feed it unit vectors
    # (normalising twice has the same gradient as once).
    ang = losses.AngularLoss(alpha=alpha)(F.normalize(x2, dim=1), labels, indices_tuple=(a, p, a2, n))
    ref = naive_npair(x2, tuples) + lam * ang + l2 * x2.norm(dim=1).mean()
    ref.backward()
    assert_close(loss, ref)
    assert_close(x1.grad, x2.grad)

    # The angular term itself, per pair from the paper's eq. 8 (tan^2 alpha), on normalised embeddings.
    z = F.normalize(x, dim=1)
    t2 = math.tan(math.radians(alpha)) ** 2
    naive_ang = []
    for ai, pi, nmask in zip(a.tolist(), p.tolist(), tuples[2]):
        s = sum(
            torch.exp(4 * t2 * (z[ai] + z[pi]) @ z[k] - 2 * (1 + t2) * z[ai] @ z[pi])
            for k in torch.nonzero(nmask).squeeze(1).tolist()
        )
        naive_ang.append(torch.log(1 + s))
    assert_close(ang.detach(), sum(naive_ang) / len(naive_ang))


# ---------------------------------------------------------------------------------------- lifted


def test_lifted_original_matches_pml_and_paper_loop(roth_opt):
    margin, l2 = 1.0, 0.005
    opt = roth_opt("lifted", loss_lifted_neg_margin=margin, loss_lifted_l2=l2)
    crit = criteria.select("lifted", opt, batch_mining.select("lifted", opt)).double()
    x, labels = batch(seed=7, scale=0.4)
    tuples = mined(opt, "lifted", x, labels)
    x1, x2, x3 = leaves(x, 3)
    loss = crit(x1, labels, tuples=tuples)
    loss.backward()
    pml = losses.LiftedStructureLoss(
        neg_margin=margin,
        pos_margin=0,
        distance=distances.LpDistance(normalize_embeddings=False),
        embedding_regularizer=regularizers.LpRegularizer(),
        embedding_reg_weight=l2,
    )
    ref = pml(x2, labels)
    ref.backward()
    assert_close(loss, ref)
    assert_close(x1.grad, x2.grad)

    # Oh Song et al. 2016 eq. 4, over unordered positive pairs.
    def dist(i, j):
        return torch.sqrt(((x3[i] - x3[j]) ** 2).sum())

    terms = []
    for i in range(B):
        for j in range(i + 1, B):
            if labels[i] != labels[j]:
                continue
            s = sum(torch.exp(margin - dist(i, k)) for k in range(B) if labels[k] != labels[i])
            s = s + sum(torch.exp(margin - dist(j, k)) for k in range(B) if labels[k] != labels[j])
            terms.append(torch.relu(torch.log(s) + dist(i, j)) ** 2)
    naive = sum(terms) / (2 * len(terms)) + l2 * sum(x3[i].norm() for i in range(B)) / B
    naive.backward()
    assert_close(loss, naive)
    assert_close(x1.grad, x3.grad)


def test_lifted_generalized_matches_pml(roth_opt):
    margin, l2 = 0.8, 0.01
    opt = roth_opt("lifted", loss_lifted_neg_margin=margin, loss_lifted_l2=l2, loss_lifted_variant="generalized")
    crit = criteria.select("lifted", opt, batch_mining.select("lifted", opt)).double()
    x, labels = batch(seed=8, scale=0.4)
    tuples = mined(opt, "lifted", x, labels)
    x1, x2, x3 = leaves(x, 3)
    loss = crit(x1, labels, tuples=tuples)
    loss.backward()
    pml = losses.GeneralizedLiftedStructureLoss(
        neg_margin=margin,
        pos_margin=0,
        distance=distances.LpDistance(normalize_embeddings=False),
        embedding_regularizer=regularizers.LpRegularizer(),
        embedding_reg_weight=l2,
    )
    ref = pml(x2, labels)
    ref.backward()
    assert_close(loss, ref)
    assert_close(x1.grad, x2.grad)
    # The Roth suite's index-list structure gives the same loss.
    as_lists = (
        tuples[0].tolist(),
        [np.nonzero(r.numpy())[0] for r in tuples[1]],
        [np.nonzero(r.numpy())[0] for r in tuples[2]],
    )
    assert_close(crit(x3, labels, tuples=as_lists), loss.detach())


def test_lifted_no_positive_pairs_is_finite(roth_opt):
    opt = roth_opt("lifted")
    crit = criteria.select("lifted", opt, batch_mining.select("lifted", opt)).double()
    x = torch.randn(5, D, dtype=torch.float64, requires_grad=True)
    loss = crit(x, torch.arange(5))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


# ------------------------------------------------------------------------------------------- snr


def test_snr_matches_pml_triplet_with_snr_distance(roth_opt):
    """PML's SignalToNoiseRatioContrastiveLoss is the pair (contrastive) variant; the Roth suite's SNR
    loss is the triplet one: PML's TripletMarginLoss on SNRDistance (average over non-zero terms) plus
    its ZeroMeanRegularizer (Yuan et al.'s regulariser) is the same loss."""
    margin, lam = 0.2, 0.05
    opt = roth_opt("snr", loss_snr_margin=margin, loss_snr_reg_lambda=lam, batch_mining="random")
    crit = criteria.select("snr", opt, batch_mining.select("random", opt)).double()
    x, labels = batch(seed=9)
    t = mined(opt, "random", x, labels)
    x1, x2 = leaves(x)
    loss = crit(x1, labels, triplets=t)
    loss.backward()
    pml = losses.TripletMarginLoss(
        margin=margin,
        distance=distances.SNRDistance(normalize_embeddings=False),  # PML normalises by default
        embedding_regularizer=regularizers.ZeroMeanRegularizer(),
        embedding_reg_weight=lam,
    )
    ref = pml(x2, labels, indices_tuple=(t[:, 0], t[:, 1], t[:, 2]))
    ref.backward()
    assert 0 < int((ref > 0).sum()) and len(t) == B
    assert_close(loss, ref)
    assert_close(x1.grad, x2.grad)
    # As the Roth suite: the regulariser is off with the distance miner.
    assert criteria.select("snr", opt, batch_mining.select("distance", opt)).reg_lambda == 0.0


# ------------------------------------------------------------------------------------- histogram


def naive_histogram_loss(x: torch.Tensor, labels: torch.Tensor, nbins: int) -> torch.Tensor:
    """Ustinova & Lempitsky 2016, eqs. 1-4: linear-interpolation histograms, L = sum_r h-_r sum_{q<=r} h+_q."""
    z = x / x.norm(dim=1, keepdim=True)
    delta = 2.0 / (nbins - 1)
    nodes = [-1.0 + r * delta for r in range(nbins)]
    h = {True: [0.0] * nbins, False: [0.0] * nbins}
    count = {True: 0, False: 0}
    for i in range(B):
        for j in range(i + 1, B):
            s = z[i] @ z[j]
            sv, pos = float(s.detach()), bool(labels[i] == labels[j])
            count[pos] += 1
            for r, t in enumerate(nodes):
                if r > 0 and nodes[r - 1] <= sv <= t:
                    h[pos][r] = h[pos][r] + (s - nodes[r - 1]) / delta
                elif r < nbins - 1 and t <= sv <= nodes[r + 1]:
                    h[pos][r] = h[pos][r] + (nodes[r + 1] - s) / delta
    h_pos = [v / count[True] for v in h[True]]
    h_neg = [v / count[False] for v in h[False]]
    return sum(h_neg[r] * sum(h_pos[: r + 1]) for r in range(nbins))


@pytest.mark.parametrize("nbins", [11, 65])
def test_histogram_matches_paper_loop(nbins, roth_opt):
    crit = criteria.select("histogram", roth_opt("histogram", loss_histogram_nbins=nbins)).double()
    x, labels = batch(seed=11)
    x = x + 0.8 * torch.randn(C, D, generator=torch.Generator().manual_seed(2), dtype=torch.float64)[labels]
    x1, x2 = leaves(x)
    loss = crit(x1, labels)
    loss.backward()
    ref = naive_histogram_loss(x2, labels, nbins)
    ref.backward()
    assert 0 < float(ref.detach()) < 1
    assert_close(loss, ref)
    assert_close(x1.grad, x2.grad)


@pytest.mark.filterwarnings("ignore:Using a non-tuple sequence:UserWarning")  # inside PML 2.9
@pytest.mark.parametrize(("nbins", "tol"), [(65, TOL), (11, dict(rtol=1e-7, atol=1e-9))])
def test_histogram_matches_pml_histogram_loss(nbins, tol, roth_opt):
    """PML's HistogramLoss with n_bins = R - 1 intervals (R nodes) is the same loss on unnormalised inputs
    (both normalise: PML through its cosine similarity). PML computes the bin index in float32, which moves
    a few similarities next to a node by ~1e-8 at some bin counts; hence the looser tolerance at R = 11."""
    crit = criteria.select("histogram", roth_opt("histogram", loss_histogram_nbins=nbins)).double()
    x, labels = batch(seed=11, scale=3.0)
    x = x + 2.4 * torch.randn(C, D, generator=torch.Generator().manual_seed(2), dtype=torch.float64)[labels]
    x1, x2 = leaves(x)
    loss = crit(x1, labels)
    loss.backward()
    ref = losses.HistogramLoss(n_bins=nbins - 1)(x2, labels)
    ref.backward()
    assert 0 < float(ref.detach()) < 1
    torch.testing.assert_close(loss, ref, **tol)
    torch.testing.assert_close(x1.grad, x2.grad, **tol)


def test_histogram_without_positive_or_negative_pairs_is_zero(roth_opt):
    crit = criteria.select("histogram", roth_opt("histogram"))
    for labels in (torch.zeros(6, dtype=torch.long), torch.arange(6)):  # no negative pair / no positive pair
        x = torch.randn(6, D, requires_grad=True)
        loss = crit(x, labels)
        loss.backward()
        assert loss.item() == 0.0 and loss.requires_grad
        assert torch.equal(x.grad, torch.zeros_like(x))


# ----------------------------------------------------------------------------------- softtriplet


def test_softtriplet_matches_pml_plus_regulariser_loop(roth_opt):
    """Classification part vs PML's SoftTripleLoss (paper's gamma: softmax(s / gamma) over a class's centres)
    with copied centres; the centre regulariser (reference code's 2 + 1e-5 under the sqrt) vs a loop."""
    k, lam, gamma, delta, tau = 3, 8.0, 0.1, 0.01, 0.2
    opt = roth_opt("softtriplet", loss_softtriplet_n_centroids=k, loss_softtriplet_lambda=lam,
                   loss_softtriplet_gamma=gamma, loss_softtriplet_margin_delta=delta,
                   loss_softtriplet_reg_weight=tau)  # fmt: skip
    crit = criteria.select("softtriplet", opt, n_classes=C).double()
    x, labels = batch(seed=13)
    x1, x2 = leaves(x)
    loss = crit(x1, labels)
    loss.backward()
    pml = losses.SoftTripleLoss(C, D, centers_per_class=k, la=lam, gamma=gamma, margin=delta)
    pml.fc.data = crit.intra_class_centroids.detach().clone()
    w = pml.fc / pml.fc.norm(dim=0, keepdim=True)
    reg = 0.0
    for c in range(C):
        for a in range(k):
            for b in range(a + 1, k):
                reg = reg + torch.sqrt(2 + 1e-5 - 2 * w[:, c * k + a] @ w[:, c * k + b])
    ref = pml(x2, labels) + tau * reg / (C * k * (k - 1))
    ref.backward()
    assert_close(loss, ref)
    assert_close(x1.grad, x2.grad)
    assert_close(crit.intra_class_centroids.grad, pml.fc.grad)
    (group,) = crit.param_groups()
    assert group["params"][0] is crit.intra_class_centroids and group["lr"] == pytest.approx(LR)


def test_softtriplet_single_centre_runs(roth_opt):
    crit = criteria.select("softtriplet", roth_opt("softtriplet", loss_softtriplet_n_centroids=1), n_classes=C)
    x = torch.randn(B, D, requires_grad=True)
    loss = crit(x, batch()[1])
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(crit.intra_class_centroids.grad).all()


# ------------------------------------------------------------------------------------ quadruplet


def naive_quadruplet(x, labels, t, fourth, a1, a2):
    """Chen et al. 2017 (unsquared Euclidean, as the Roth suite): mean over triplets of the triplet hinge, plus the
    mean over the triplets that have a fourth sample k (-1: none) of relu(d(a, p) - d(n, k) + alpha_2)."""
    trip, quad = [], []
    for (a, p, n), k in zip(t.tolist(), fourth):
        d_ap = (x[a] - x[p]).norm()
        trip.append(torch.relu(d_ap - (x[a] - x[n]).norm() + a1))
        if k >= 0:
            quad.append(torch.relu(d_ap - (x[n] - x[k]).norm() + a2))
    return sum(trip) / len(trip) + (sum(quad) / len(quad) if quad else 0.0)


def fourth_candidates(labels, a: int, n: int) -> list[int]:
    """Every batch index k with y_k != y_a and y_k != y_n (the paper's condition), enumerated."""
    return [k for k in range(len(labels)) if labels[k] != labels[a] and labels[k] != labels[n]]


def test_quadruplet_matches_paper_loop_with_fourth_samples_chosen_here(roth_opt):
    """The fourth samples are picked by the test (its own RNG over the enumerated candidates, some triplets left
    without one), so the reference shares nothing with the implementation's draw."""
    a1, a2 = 0.3, 0.15
    opt = roth_opt("quadruplet", loss_quadruplet_margin_alpha_1=a1, loss_quadruplet_margin_alpha_2=a2)
    crit = criteria.select("quadruplet", opt, batch_mining.select("random", opt)).double()
    x, labels = batch(seed=15, normalize=True)
    t = mined(opt, "random", x, labels)
    rng = np.random.default_rng(0)
    fourth = [
        int(rng.choice(fourth_candidates(labels, a, n))) if i % 5 else -1 for i, (a, _, n) in enumerate(t.tolist())
    ]
    x1, x2 = leaves(x)
    loss = crit(x1, labels, triplets=t, fourth=torch.tensor(fourth))
    loss.backward()
    ref = naive_quadruplet(x2, labels, t, fourth, a1, a2)
    ref.backward()
    assert 0 < float(ref.detach())
    assert_close(loss, ref)
    assert_close(x1.grad, x2.grad)


def test_quadruplet_draws_the_fourth_sample_uniformly_among_valid_candidates(roth_opt):
    """Drawn k always satisfies y_k != y_a, y_n; its frequencies per triplet match the uniform law over the
    enumerated candidates (chi-square, 99.9% quantile)."""
    opt = roth_opt("quadruplet")
    crit = criteria.select("quadruplet", opt, batch_mining.select("random", opt))
    crit.generator = torch.Generator().manual_seed(4)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 3, 4, 4, 4])
    t = torch.tensor([[0, 1, 3], [3, 4, 6], [6, 7, 9], [9, 10, 0], [1, 2, 8]])
    draws = 3000
    counts = [dict.fromkeys(fourth_candidates(labels, a, n), 0) for a, _, n in t.tolist()]
    for _ in range(draws):
        for row, k in enumerate(crit.draw_fourth(labels, t).tolist()):
            assert k in counts[row], (row, k)
            counts[row][k] += 1
    for row in counts:
        expected = draws / len(row)
        chi2 = sum((c - expected) ** 2 / expected for c in row.values())
        dof = len(row) - 1
        # Wilson-Hilferty approximation of the chi-square 99.9% quantile.
        q = dof * (1 - 2 / (9 * dof) + 3.09 * math.sqrt(2 / (9 * dof))) ** 3
        assert chi2 < q, (row, chi2, q)


def test_quadruplet_with_random_distance_draws_against_the_shuffled_labels(roth_opt):
    opt = roth_opt("quadruplet")
    miner = batch_mining.select("random_distance", opt)
    miner.generator = torch.Generator().manual_seed(0)
    crit = criteria.select("quadruplet", opt, miner)
    seen = []
    crit.draw_fourth = lambda y, t: seen.append(y.clone()) or torch.full((len(t),), -1)
    x, labels = batch(seed=16, normalize=True)
    crit(x, labels)
    assert torch.equal(seen[0], miner.last_labels) and not torch.equal(seen[0], labels)


def test_quadruplet_without_third_class_keeps_triplet_term(roth_opt):
    opt = roth_opt("quadruplet")
    crit = criteria.select("quadruplet", opt, batch_mining.select("random", opt)).double()
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    x = torch.randn(6, D, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([[0, 1, 3], [4, 5, 2]])
    assert (crit.draw_fourth(labels, t) == -1).all()
    loss = crit(x, labels, triplets=t)
    ref = torch.relu((x[t[:, 0]] - x[t[:, 1]]).norm(dim=1) - (x[t[:, 0]] - x[t[:, 2]]).norm(dim=1) + 0.2).mean()
    assert_close(loss, ref)


# ------------------------------------------------------------------------ adversarial separation


def naive_separation(crit, x: torch.Tensor) -> torch.Tensor:
    """-sum_dir rho * mean_b mean_d (z_j * normalize(r(z_i)))^2, chunks of sizes from tensor_split, no reversal."""
    total = 0.0
    sizes = [len(c) for c in torch.arange(D).tensor_split(crit.n_chunks)]
    starts = np.cumsum([0] + sizes)
    for w, (i, j) in zip(crit.weights, crit.directions):
        reg = crit.regressors[f"{i}-{j}"]
        acc = 0.0
        for b in range(len(x)):
            src = x[b, starts[i] : starts[i + 1]]
            tgt = x[b, starts[j] : starts[j + 1]]
            src, tgt = src / src.norm(), tgt / tgt.norm()
            pred = reg(src)
            pred = pred / pred.norm()
            acc = acc + sum((tgt[d] * pred[d]) ** 2 for d in range(len(tgt))) / len(tgt)
        total = total - w * acc / len(x)
    return total


def test_adversarial_separation_matches_loop_with_reversed_gradient(roth_opt):
    opt = roth_opt("adversarial_separation", diva_decorrelations=["0-1", "2-0"], diva_rho_decorrelation=[3.0, 5.0],
                   diva_decorrnet_dim=16, loss_adversarial_separation_base="none")  # fmt: skip
    crit = criteria.select("adversarial_separation", opt, batch_mining.select("distance", opt)).double()
    assert crit.n_chunks == 3
    x, labels = batch(seed=17)
    x1, x2 = leaves(x)
    loss = crit(x1, labels)
    loss.backward()
    own = [p.grad.clone() for p in crit.regressors.parameters()]
    crit.zero_grad()
    ref = naive_separation(crit, x2)
    ref.backward()
    assert_close(loss, ref)
    assert_close(x1.grad, -x2.grad)  # gradient reversal into the embedding
    for g, p in zip(own, crit.regressors.parameters()):
        assert_close(g, p.grad)  # the regressors descend the plain loss


def test_adversarial_separation_with_base_loss_and_groups(roth_opt):
    opt = roth_opt("adversarial_separation", diva_decorrnet_dim=16, diva_rho_decorrelation=[2.0],
                   loss_adversarial_separation_base="margin")  # fmt: skip
    crit = criteria.select("adversarial_separation", opt, batch_mining.select("distance", opt), n_classes=C).double()
    x, labels = batch(seed=19, normalize=True)
    t = mined(opt, "random", x, labels)
    loss = crit(x, labels, triplets=t)
    assert_close(loss, crit.separation(x) + crit.base(x, labels, triplets=t))
    names = [g["name"] for g in crit.param_groups()]
    assert names == ["margin_beta", "adversarial_separation_regressors"]
    assert crit.param_groups()[1]["lr"] == opt.diva_decorrnet_lr
    with pytest.raises(UserError):
        criteria.select(
            "adversarial_separation",
            roth_opt("adversarial_separation", diva_decorrelations=["0-0"]),
            batch_mining.select("distance", opt),
            n_classes=C,
        )
    with pytest.raises(UserError):
        criteria.select(
            "adversarial_separation",
            roth_opt("adversarial_separation", diva_rho_decorrelation=[1.0, 2.0]),
            batch_mining.select("distance", opt),
            n_classes=C,
        )


def test_wrong_miner_is_a_user_error():
    with pytest.raises(UserError):
        criteria.check_miner("npair", "distance")
    with pytest.raises(UserError):
        criteria.check_miner("proxynca", "distance")
    criteria.check_miner("lifted", "lifted")
