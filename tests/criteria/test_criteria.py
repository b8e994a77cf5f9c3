"""Criteria: values and gradients against pytorch-metric-learning (PML) or a naive loop
written from the paper, in float64 on the same inputs and the same mined tuples; plus the
shared miner-output lists, the adversarial-separation base rules and the Roth suite's flag defaults.
(Registry-wide checks of every criterion live in test_contract.py.)"""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import distances, losses, miners, reducers

import batch_mining
import criteria
from utilities.errors import UserError

TOL = {"rtol": 1e-9, "atol": 1e-11}
C, D = 4, 8  # classes and embedding dimension of the batches below


def batch(seed: int = 0, n_classes: int = 4, per_class: int = 3, dim: int = 8, normalize: bool = True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_classes * per_class, dim, generator=g, dtype=torch.float64)
    if normalize:
        x = F.normalize(x, dim=1)
    y = torch.arange(n_classes).repeat_interleave(per_class)
    return x.requires_grad_(True), y


def all_triplets(y: torch.Tensor) -> torch.Tensor:
    """Every valid (a, p, n): a naive enumeration, independent of the miners."""
    out = [(a, p, n) for a in range(len(y)) for p in range(len(y)) for n in range(len(y))
           if a != p and y[a] == y[p] and y[n] != y[a]]  # fmt: skip
    return torch.tensor(out)


def grads(loss: torch.Tensor, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return torch.autograd.grad(loss, tensors)


def test_triplet_matches_pml_mean_over_all_triplets(make_opt):
    """Roth's variant: squared distances, MEAN over all mined triplets (PML with MeanReducer;
    PML's default AvgNonZeroReducer would differ, which the zero/non-zero mix below exposes)."""
    x, y = batch(0)
    t = all_triplets(y)[::7]
    opt = make_opt("--loss", "triplet", embed_dim=D, loss_triplet_margin=0.3)
    ours = criteria.get_class("triplet")(opt)(x, y, triplets=t)
    pml = losses.TripletMarginLoss(margin=0.3, distance=distances.LpDistance(power=2, normalize_embeddings=False),
                                   reducer=reducers.MeanReducer())  # fmt: skip
    ref = pml(x, y, indices_tuple=(t[:, 0], t[:, 1], t[:, 2]))
    per = ((x[t[:, 0]] - x[t[:, 1]]).pow(2).sum(1) - (x[t[:, 0]] - x[t[:, 2]]).pow(2).sum(1) + 0.3).detach()
    assert 0 < (per > 0).sum() < len(t), "inputs must mix active and inactive triplets"
    torch.testing.assert_close(ours, ref, **TOL)
    torch.testing.assert_close(grads(ours, x)[0], grads(ref, x)[0], **TOL)


def test_contrastive_matches_pml_on_mined_pairs(make_opt):
    x, y = batch(1)
    t = all_triplets(y)[::5]
    opt = make_opt("--loss", "contrastive", embed_dim=D, loss_contrastive_pos_margin=0.2,
                   loss_contrastive_neg_margin=1.2)  # fmt: skip
    ours = criteria.get_class("contrastive")(opt)(x, y, triplets=t)
    pml = losses.ContrastiveLoss(pos_margin=0.2, neg_margin=1.2, distance=distances.LpDistance(normalize_embeddings=False),
                                 reducer=reducers.MeanReducer())  # fmt: skip
    ref = pml(x, y, indices_tuple=(t[:, 0], t[:, 1], t[:, 0], t[:, 2]))
    torch.testing.assert_close(ours, ref, **TOL)
    torch.testing.assert_close(grads(ours, x)[0], grads(ref, x)[0], **TOL)


def test_margin_matches_pml_with_learned_betas_and_nu(make_opt):
    """Same triplets and betas; PML divides the nu term by the active-pair count, as the paper's code."""
    x, y = batch(2)
    t = all_triplets(y)[::6]
    opt = make_opt("--loss", "margin", embed_dim=D, loss_margin_nu=0.05)
    crit = criteria.get_class("margin")(opt, n_classes=C).double()
    with torch.no_grad():
        crit.beta.copy_(torch.tensor([1.0, 1.1, 1.25, 1.4]))
    pml = losses.MarginLoss(margin=0.2, nu=0.05, learn_beta=True, num_classes=4,
                            distance=distances.LpDistance(normalize_embeddings=False))  # fmt: skip
    pml.beta = torch.nn.Parameter(crit.beta.detach().clone())
    ours = crit(x, y, triplets=t)
    ref = pml(x, y, indices_tuple=(t[:, 0], t[:, 1], t[:, 2]))
    torch.testing.assert_close(ours, ref, **TOL)
    gx, gb = grads(ours, x, crit.beta)
    rx, rb = grads(ref, x, pml.beta)
    torch.testing.assert_close(gx, rx, **TOL)
    torch.testing.assert_close(gb, rb, **TOL)
    assert gb.abs().sum() > 0


def naive_margin(x, y, t, beta, margin, nu):
    """Per-triplet loop of Wu et al. 2017 (reference code): (sum of pair terms + nu sum beta) / max(#active, 1)."""
    total, active = torch.zeros((), dtype=x.dtype), 0
    for a, p, n in t.tolist():
        b = beta[y[a]]
        lp = F.relu(torch.linalg.vector_norm(x[a] - x[p]) - b + margin)
        ln = F.relu(b - torch.linalg.vector_norm(x[a] - x[n]) + margin)
        total = total + lp + ln + nu * b
        active += int(lp > 0) + int(ln > 0)
    return total / max(active, 1), active


def test_margin_naive_loop_when_no_pair_is_active(make_opt):
    """PML returns 0 when no pair is active; the paper's formula (divisor 1 then) keeps nu * sum(beta)."""
    y = torch.arange(4).repeat_interleave(3)
    g = torch.Generator().manual_seed(3)
    x = torch.eye(8, dtype=torch.float64)[y] + 0.01 * torch.randn(12, 8, generator=g, dtype=torch.float64)
    x.requires_grad_(True)
    t = all_triplets(y)[::5]
    opt = make_opt("--loss", "margin", embed_dim=D, loss_margin_nu=0.1, loss_margin_beta=0.7)
    crit = criteria.get_class("margin")(opt, n_classes=C).double()
    loss = crit(x, y, triplets=t)
    ref, active = naive_margin(x, y, t, crit.beta, 0.2, 0.1)
    assert active == 0
    torch.testing.assert_close(loss, ref, **TOL)
    torch.testing.assert_close(loss.detach(), 0.1 * crit.beta[0].detach() * len(t), **TOL)
    gb = grads(loss, crit.beta)[0]
    torch.testing.assert_close(gb, 0.1 * torch.bincount(y[t[:, 0]], minlength=4).double(), **TOL)


def test_proxyanchor_matches_pml_with_copied_proxies(make_opt):
    x, y = batch(4, normalize=False)
    y = y.clamp(max=2)  # class 3 absent from the batch: the positive term averages over present classes only
    opt = make_opt("--loss", "proxyanchor", embed_dim=D)
    crit = criteria.get_class("proxyanchor")(opt, n_classes=C).double()
    pml = losses.ProxyAnchorLoss(num_classes=4, embedding_size=8, margin=0.1, alpha=32)
    pml.proxies = torch.nn.Parameter(crit.proxies.detach().clone())
    ours, ref = crit(x, y), pml(x, y)
    torch.testing.assert_close(ours, ref, **TOL)
    gx, gp = grads(ours, x, crit.proxies)
    rx, rp = grads(ref, x, pml.proxies)
    torch.testing.assert_close(gx, rx, **TOL)
    torch.testing.assert_close(gp, rp, **TOL)
    assert crit.param_groups()[0]["lr"] == pytest.approx(opt.lr * 100)


def test_multisimilarity_matches_pml_when_every_anchor_is_mined(make_opt):
    """Where each anchor keeps a positive and a negative, the authors' code, the Roth suite and
    PML (MultiSimilarityMiner + MultiSimilarityLoss on dot products of normalised inputs) agree."""
    x, y = batch(5)
    opt = make_opt("--loss", "multisimilarity", embed_dim=D)
    ours = criteria.get_class("multisimilarity")(opt)(x, y)
    dot = distances.DotProductSimilarity()
    xn = F.normalize(x, dim=1)
    a1, p, a2, n = miners.MultiSimilarityMiner(epsilon=0.1, distance=dot)(xn.detach(), y)
    assert set(a1.tolist()) == set(a2.tolist()) == set(range(len(y)))
    ref = losses.MultiSimilarityLoss(alpha=2, beta=40, base=0.5, distance=dot)(xn, y, indices_tuple=(a1, p, a2, n))
    torch.testing.assert_close(ours, ref, **TOL)
    torch.testing.assert_close(grads(ours, x)[0], grads(ref, x)[0], **TOL)


def naive_multisimilarity(x, y, alpha=2.0, beta=40.0, eps=0.1, lam=0.5):
    """Per-anchor loop following the authors' code: skip anchors with an empty mined set, divide by B."""
    xn = F.normalize(x, dim=1)
    s = xn @ xn.T
    total = torch.zeros((), dtype=x.dtype)
    for i in range(len(y)):
        pos = [j for j in range(len(y)) if j != i and y[j] == y[i]]
        neg = [j for j in range(len(y)) if y[j] != y[i]]
        if not pos or not neg:
            continue
        min_pos, max_neg = min(s[i, j].item() for j in pos), max(s[i, j].item() for j in neg)
        neg_m = [j for j in neg if s[i, j].item() + eps > min_pos]
        pos_m = [j for j in pos if s[i, j].item() - eps < max_neg]
        if not pos_m or not neg_m:
            continue
        total = total + torch.log(1 + sum(torch.exp(-alpha * (s[i, j] - lam)) for j in pos_m)) / alpha
        total = total + torch.log(1 + sum(torch.exp(beta * (s[i, j] - lam)) for j in neg_m)) / beta
    return total / len(y)


def test_multisimilarity_skips_anchors_like_the_authors_code(make_opt):
    """PML keeps one-sided anchors, so here the reference is a naive loop of the authors' code."""
    x, y = batch(6)
    with torch.no_grad():  # class 0 collapses onto one direction far from the rest: its anchors mine nothing
        u = F.normalize(torch.ones(8, dtype=torch.float64), dim=0)
        x[:3] = u + 0.01 * x[:3]
        x[3:] -= u
    opt = make_opt("--loss", "multisimilarity", embed_dim=D)
    crit = criteria.get_class("multisimilarity")(opt)
    ours, ref = crit(x, y), naive_multisimilarity(x, y)
    torch.testing.assert_close(ours, ref, **TOL)
    torch.testing.assert_close(grads(ours, x)[0], grads(ref, x)[0], **TOL)
    a1, _, a2, _ = miners.MultiSimilarityMiner(epsilon=0.1)(x.detach(), y)
    kept = set(a1.tolist()) & set(a2.tolist())
    assert 0 < len(kept) < len(y), "the inputs must skip some anchors"


def test_softmax_matches_pml_normalized_softmax(make_opt):
    x, y = batch(7, normalize=False)
    opt = make_opt("--loss", "softmax", embed_dim=D)
    crit = criteria.get_class("softmax")(opt, n_classes=C).double()
    pml = losses.NormalizedSoftmaxLoss(num_classes=4, embedding_size=8, temperature=0.05)
    pml.W = torch.nn.Parameter(crit.class_map.detach().T.clone())
    ours, ref = crit(x, y), pml(F.normalize(x, dim=1), y)
    torch.testing.assert_close(ours, ref, **TOL)
    gx, gw = grads(ours, x, crit.class_map)
    rx, rw = grads(ref, x, pml.W)
    torch.testing.assert_close(gx, rx, **TOL)
    torch.testing.assert_close(gw, rw.T, **TOL)
    assert crit.param_groups()[0]["lr"] == opt.loss_softmax_lr == 1e-5


def test_arcface_matches_pml_and_the_paper(make_opt):
    x, y = batch(8, normalize=False)
    opt = make_opt("--loss", "arcface", embed_dim=D)
    crit = criteria.get_class("arcface")(opt, n_classes=C).double()
    cos = F.normalize(x, dim=1) @ F.normalize(crit.class_map, dim=1).T
    theta_y = torch.acos(cos[torch.arange(len(y)), y])
    assert (theta_y < math.pi - 0.5).all(), "PML switches to another formula beyond pi - m"
    assert (cos < 0).any(), "negative cosines must keep their gradient (the Roth suite clamps them to 0)"
    pml = losses.ArcFaceLoss(num_classes=4, embedding_size=8, margin=math.degrees(0.5), scale=16)
    pml.W = torch.nn.Parameter(crit.class_map.detach().T.clone())
    ours, ref = crit(x, y), pml(x, y)
    torch.testing.assert_close(ours, ref, **TOL)
    gx, gw = grads(ours, x, crit.class_map)
    rx, rw = grads(ref, x, pml.W)
    torch.testing.assert_close(gx, rx, **TOL)
    torch.testing.assert_close(gw, rw.T, **TOL)
    # Paper pseudocode: margin on the target logit only.
    logits = cos.detach().clone()
    logits[torch.arange(len(y)), y] = torch.cos(theta_y.detach() + 0.5)
    torch.testing.assert_close(ours.detach(), F.cross_entropy(16 * logits, y), **TOL)


def test_triplet_shaped_outputs_are_in_the_shared_output_lists():
    """The tuple losses accept TRIPLET_OUTPUTS (+ REGULARISING_OUTPUTS): a new ``*_triplet`` output tag must be added
    there, or no triplet loss can take a miner declaring it; the set structures (npair, lifted) are not."""
    from criteria._common import REGULARISING_OUTPUTS, TRIPLET_OUTPUTS, TUPLE_OUTPUTS

    assert TUPLE_OUTPUTS == TRIPLET_OUTPUTS + REGULARISING_OUTPUTS
    assert set(TUPLE_OUTPUTS) <= set(batch_mining.OUTPUTS)
    for tag in batch_mining.OUTPUTS:
        assert (tag in TUPLE_OUTPUTS) == tag.endswith("triplet"), tag
    assert set(TRIPLET_OUTPUTS) == {"triplet"}
    for name in ("triplet", "margin", "contrastive", "snr", "quadruplet"):  # the Roth suite's tuple losses
        assert set(criteria.get_class(name).accepts) == set(TUPLE_OUTPUTS), name
    assert criteria.accepted_miners("triplet") == [m for m in batch_mining.names()
                                                   if batch_mining.output(m).endswith("triplet")]  # fmt: skip


def test_views_are_provided_exactly_by_the_losses_that_override_them():
    """``provides(view)``: the class (or a base below ``Criterion``) defines the view's method; the vMF paper's
    classifiers give class probabilities, vmf_softmax its samples and concentrations, hyperbolic_softmax its ball,
    the EL-nivMF family its images' concentrations (their norms)."""
    from criteria._base import Criterion
    from criteria._classifier import LogitClassifier

    providers = {}
    for view, method in Criterion.VIEW_METHODS.items():
        overriding = {n for n in criteria.names()
                      if any(method in vars(k) for k in criteria.get_class(n).__mro__[: -len(Criterion.__mro__)])}  # fmt: skip
        providers[view] = {n for n in criteria.names() if criteria.get_class(n).provides(view)}
        assert providers[view] == overriding, view
    classifiers = {n for n in criteria.names() if issubclass(criteria.get_class(n), LogitClassifier)}
    assert {"arcface", "cosine_softmax", "hyperbolic_softmax", "unnormalized_softmax"} <= classifiers
    assert classifiers | {"vmf_softmax"} <= providers["probabilities"]
    assert {"vmf_softmax"} <= providers["samples"] & providers["kappa"]
    assert {"hyperbolic_softmax"} <= providers["poincare"]
    for name in ("triplet", "margin", "proxyanchor", "softmax"):  # deterministic metric-learning losses: none
        assert not any(name in p for p in providers.values()), name
    family = {"proxyvmf_panc", "proxyvmf", "proxyvmf_kl", "proxynca_nivmf", "proxynca_l2", "proxynca_cos"}
    assert family <= providers["kappa"] and not family & (providers["samples"] | providers["probabilities"])


def test_adversarial_separation_miners_follow_its_base_loss(make_opt):
    """Bases that need the npair/lifted miner are refused up front (one line naming the base), with or
    without --batch_mining; a triplet base takes the regularising miners and runs; a miner-free base runs."""
    for argv in ([], ["--batch_mining", "npair"], ["--batch_mining", "distance"]):
        for base in ("npair", "angular", "lifted"):
            with pytest.raises(UserError) as err:
                make_opt("--loss", "adversarial_separation", "--loss_adversarial_separation_base", base, *argv)
            msg = str(err.value)
            assert "\n" not in msg and f"'{base}'" in msg and "--loss_adversarial_separation_base" in msg, msg
    with pytest.raises(UserError, match="itself"):
        make_opt("--loss", "adversarial_separation", loss_adversarial_separation_base="adversarial_separation")
    x, y = batch(10)
    for base, miner in (("triplet", "rho_distance"), ("margin", "intra_random"), ("multisimilarity", None)):
        opt = make_opt("--loss", "adversarial_separation", loss_adversarial_separation_base=base, embed_dim=D,
                       diva_decorrnet_dim=8, batch_mining=miner)  # fmt: skip
        assert opt.batch_mining == (miner or "distance")
        bm = batch_mining.select(opt.batch_mining, opt)
        bm.generator = torch.Generator().manual_seed(0)
        crit = criteria.select("adversarial_separation", opt, bm, n_classes=C).double()
        loss = crit(x, y)
        if base == "triplet":  # the base saw the rho miner's tuples: naive triplet loop on the same draw
            bm.generator = torch.Generator().manual_seed(0)
            t = bm(x.detach(), y)
            assert (t[:, 0] == t[:, 1]).any(), "the draw must contain push triplets (a, a, p)"
            ref = sum(F.relu((x[a] - x[p]).pow(2).sum() - (x[a] - x[n]).pow(2).sum() + 0.2) for a, p, n in t.tolist())
            torch.testing.assert_close(loss, crit.separation(x) + ref / len(t), **TOL)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
        x.grad = None


def test_adversarial_separation_without_n_classes_fails_only_for_a_base_that_needs_it(make_opt):
    """n_classes is passed on to the base: a proxy base without it is a ValueError naming the fix; a
    triplet base needs none."""
    opt = make_opt("--loss", "adversarial_separation", loss_adversarial_separation_base="proxyanchor", embed_dim=D)
    with pytest.raises(ValueError, match="n_classes"):
        criteria.select("adversarial_separation", opt, batch_mining.select("distance", opt))
    crit = criteria.select("adversarial_separation", opt, batch_mining.select("distance", opt), n_classes=C)
    assert crit.base.proxies.shape == (C, D)
    opt = make_opt("--loss", "adversarial_separation", loss_adversarial_separation_base="triplet", embed_dim=D)
    assert criteria.select("adversarial_separation", opt, batch_mining.select("distance", opt)).base is not None


def test_miner_margin_is_the_margin_of_the_loss_or_its_base(make_opt):
    """The margin a semihard miner gets when serving a loss (``Criterion.miner_margin``)."""

    def margin(loss, **flags):
        return criteria.get_class(loss).miner_margin(make_opt("--loss", loss, **flags))

    assert margin("margin", loss_margin_margin=0.35, loss_triplet_margin=0.1) == 0.35
    assert margin("snr", loss_snr_margin=0.45, loss_triplet_margin=0.1) == 0.45
    assert margin("adversarial_separation", loss_margin_margin=0.3) == 0.3  # default base: margin
    assert margin("adversarial_separation", loss_adversarial_separation_base="triplet", loss_triplet_margin=0.4,
                  loss_margin_margin=0.3) == 0.4  # fmt: skip
    assert margin("adversarial_separation", loss_adversarial_separation_base="none", loss_triplet_margin=0.15) == 0.15
    assert margin("quadruplet", loss_triplet_margin=0.25) == 0.25  # no margin flag: the triplet one
    assert margin("triplet", loss_triplet_margin=0.3) == 0.3


def test_incompatible_miner_raises_user_error(make_opt):
    opt = make_opt("--loss", "proxyanchor", embed_dim=D)
    with pytest.raises(UserError, match="takes no batch miner"):
        criteria.select("proxyanchor", opt, batch_mining.select("distance", opt), n_classes=C)
    with pytest.raises(UserError, match="needs a batch miner"):
        criteria.select("triplet", make_opt("--loss", "triplet", embed_dim=D), None)
    with pytest.raises(UserError, match="cannot use batch miner 'npair'"):
        criteria.select("triplet", opt, batch_mining.select("npair", opt))


def test_proxy_and_classifier_losses_need_n_classes(make_opt):
    for name in ("proxyanchor", "softmax", "arcface", "margin"):
        opt = make_opt("--loss", name, embed_dim=D)
        with pytest.raises(ValueError, match="number of train classes"):
            criteria.get_class(name)(opt)


def test_empty_tuples_give_zero_loss_with_a_graph(make_opt):
    x, y = batch(9)
    for name in ("triplet", "contrastive", "margin"):
        crit = criteria.get_class(name)(make_opt("--loss", name, embed_dim=D), n_classes=C)
        loss = crit(x, y, triplets=torch.zeros(0, 3, dtype=torch.long))
        assert loss.item() == 0.0
        loss.backward()


# Roth et al. 2020 suite's parameters.py (and DiVA's for adversarial_separation), per loss: what
# ``python main.py --loss <loss>`` gets when the flags are not given.
ROTH_DEFAULTS = {
    "triplet": {"loss_triplet_margin": 0.2},
    "margin": {"loss_margin_margin": 0.2, "loss_margin_beta_lr": 0.0005, "loss_margin_beta": 1.2,
               "loss_margin_nu": 0.0, "loss_margin_beta_constant": False},
    "contrastive": {"loss_contrastive_pos_margin": 0.0, "loss_contrastive_neg_margin": 1.0},
    "proxynca": {"loss_proxynca_lrmulti": 50.0, "loss_proxynca_scale": 3.0},  # scale: the Roth code's constant
    "npair": {"loss_npair_l2": 0.005},
    "angular": {"loss_angular_alpha": 45.0, "loss_angular_npair_ang_weight": 2.0, "loss_angular_npair_l2": 0.005},
    "multisimilarity": {"loss_multisimilarity_pos_weight": 2.0, "loss_multisimilarity_neg_weight": 40.0,
                        "loss_multisimilarity_margin": 0.1, "loss_multisimilarity_thresh": 0.5},
    "lifted": {"loss_lifted_neg_margin": 1.0, "loss_lifted_l2": 0.005},
    "quadruplet": {"loss_quadruplet_margin_alpha_1": 0.2, "loss_quadruplet_margin_alpha_2": 0.2},
    "softtriplet": {"loss_softtriplet_n_centroids": 2, "loss_softtriplet_margin_delta": 0.01,
                    "loss_softtriplet_gamma": 0.1, "loss_softtriplet_lambda": 8.0,
                    "loss_softtriplet_reg_weight": 0.2, "loss_softtriplet_lrmulti": 1.0},
    "softmax": {"loss_softmax_lr": 1e-5, "loss_softmax_temperature": 0.05},
    "histogram": {"loss_histogram_nbins": 65},
    "snr": {"loss_snr_margin": 0.2, "loss_snr_reg_lambda": 0.005},
    "arcface": {"loss_arcface_lr": 0.0005, "loss_arcface_angular_margin": 0.5, "loss_arcface_feature_scale": 16.0},
    "adversarial_separation": {"diva_rho_decorrelation": [1500.0], "diva_decorrnet_dim": 512,
                               "diva_decorrnet_lr": 1e-5},
    "proxyanchor": {"loss_proxyanchor_alpha": 32.0, "loss_proxyanchor_delta": 0.1},
}  # fmt: skip
ROTH_MINER_DEFAULTS = {
    "distance": {"miner_distance_lower_cutoff": 0.5, "miner_distance_upper_cutoff": 1.4},
    "rho_distance": {"miner_rho_distance_lower_cutoff": 0.5, "miner_rho_distance_upper_cutoff": 1.4,
                     "miner_rho_distance_cp": 0.2},
    # The Roth code reads these but never declares them: this suite's values (uniform over [0, 2], 100 nodes).
    "parametric": {"miner_parametric_mode": "uniform", "miner_parametric_n_support": 100,
                   "miner_parametric_support_lim": [0.0, 2.0]},
}  # fmt: skip


@pytest.mark.parametrize("loss", sorted(ROTH_DEFAULTS))
def test_roth_flag_defaults(loss, make_opt):
    """Flag names and defaults users paste from the Roth suite, as ``parse_args`` applies them with that --loss
    (its loss-level and dataset defaults included), and the miner flags with the loss's miners."""
    opt = make_opt("--loss", loss)
    expected = ROTH_DEFAULTS[loss]
    assert {k: getattr(opt, k) for k in expected} == expected
    for miner, flags in ROTH_MINER_DEFAULTS.items():
        if miner in criteria.accepted_miners(loss):
            opt = make_opt("--loss", loss, "--batch_mining", miner)
            assert {k: getattr(opt, k) for k in flags} == flags


def test_roth_defaults_cover_the_roth_components(repo_root):
    """Every Roth-suite criterion with flags is in ROTH_DEFAULTS, and every miner with flags in ROTH_MINER_DEFAULTS
    (``random_distance`` reads the distance miner's flags)."""
    path = repo_root / "docs" / "component_table.py"  # a script: load by path
    spec = importlib.util.spec_from_file_location("component_table", path)
    component_table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(component_table)
    module_flags = component_table.module_flags

    roth = ["triplet", "margin", "proxynca", "npair", "angular", "contrastive", "lifted", "snr", "multisimilarity",
            "histogram", "softmax", "softtriplet", "arcface", "quadruplet", "adversarial_separation", "proxyanchor"]  # fmt: skip
    extra = {  # flags this suite adds beyond the Roth code (documented in their modules)
        "lifted": {"loss_lifted_variant"},
        "arcface": {"loss_arcface_learn_scale", "loss_arcface_warmup_epochs"},
        "proxyanchor": {"loss_proxyanchor_lrmulti"},
        "adversarial_separation": {"diva_decorrelations", "loss_adversarial_separation_base"},
    }
    for name in roth:
        flags = {f.removeprefix("--") for f in module_flags(criteria.REGISTRY.get(name).module)}
        assert flags == set(ROTH_DEFAULTS[name]) | extra.get(name, set()), name
    for name in batch_mining.names():
        flags = {f.removeprefix("--") for f in module_flags(batch_mining.REGISTRY.get(name).module)}
        assert flags <= set(ROTH_MINER_DEFAULTS.get(name, {})), name
