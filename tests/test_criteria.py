"""Criteria: values and gradients against pytorch-metric-learning (PML) or a naive loop
written from the paper, in float64 on the same inputs and the same mined tuples; plus a
registry-wide forward/backward check and the miner-compatibility rules."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import distances, losses, miners, reducers

import batch_mining
import criteria
import parameters
from utilities.errors import UserError

TOL = {"rtol": 1e-9, "atol": 1e-11}


def make_opt(*argv: str, n_classes: int = 4, embed_dim: int = 8):
    """The real flag parser, so every flag default is exercised; n_classes is set as the trainer does."""
    opt = parameters.build_parser().parse_args(["--embed_dim", str(embed_dim), *argv])
    opt.n_classes = n_classes
    return opt


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


def test_triplet_matches_pml_mean_over_all_triplets():
    """Roth's variant: squared distances, MEAN over all mined triplets (PML with MeanReducer;
    PML's default AvgNonZeroReducer would differ, which the zero/non-zero mix below exposes)."""
    x, y = batch(0)
    t = all_triplets(y)[::7]
    opt = make_opt("--loss", "triplet", "--loss_triplet_margin", "0.3")
    ours = criteria.get_class("triplet")(opt)(x, y, triplets=t)
    pml = losses.TripletMarginLoss(margin=0.3, distance=distances.LpDistance(power=2, normalize_embeddings=False),
                                   reducer=reducers.MeanReducer())  # fmt: skip
    ref = pml(x, y, indices_tuple=(t[:, 0], t[:, 1], t[:, 2]))
    per = ((x[t[:, 0]] - x[t[:, 1]]).pow(2).sum(1) - (x[t[:, 0]] - x[t[:, 2]]).pow(2).sum(1) + 0.3).detach()
    assert 0 < (per > 0).sum() < len(t), "inputs must mix active and inactive triplets"
    torch.testing.assert_close(ours, ref, **TOL)
    torch.testing.assert_close(grads(ours, x)[0], grads(ref, x)[0], **TOL)


def test_contrastive_matches_pml_on_mined_pairs():
    x, y = batch(1)
    t = all_triplets(y)[::5]
    opt = make_opt(
        "--loss", "contrastive", "--loss_contrastive_pos_margin", "0.2", "--loss_contrastive_neg_margin", "1.2"
    )
    ours = criteria.get_class("contrastive")(opt)(x, y, triplets=t)
    pml = losses.ContrastiveLoss(pos_margin=0.2, neg_margin=1.2, distance=distances.LpDistance(normalize_embeddings=False),
                                 reducer=reducers.MeanReducer())  # fmt: skip
    ref = pml(x, y, indices_tuple=(t[:, 0], t[:, 1], t[:, 0], t[:, 2]))
    torch.testing.assert_close(ours, ref, **TOL)
    torch.testing.assert_close(grads(ours, x)[0], grads(ref, x)[0], **TOL)


def test_margin_matches_pml_with_learned_betas_and_nu():
    """Same triplets and betas; PML divides the nu term by the active-pair count, as the paper's code."""
    x, y = batch(2)
    t = all_triplets(y)[::6]
    opt = make_opt("--loss", "margin", "--loss_margin_nu", "0.05")
    crit = criteria.get_class("margin")(opt).double()
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


def test_margin_naive_loop_when_no_pair_is_active():
    """PML returns 0 when no pair is active; the paper's formula (divisor 1 then) keeps nu * sum(beta)."""
    y = torch.arange(4).repeat_interleave(3)
    g = torch.Generator().manual_seed(3)
    x = torch.eye(8, dtype=torch.float64)[y] + 0.01 * torch.randn(12, 8, generator=g, dtype=torch.float64)
    x.requires_grad_(True)
    t = all_triplets(y)[::5]
    opt = make_opt("--loss", "margin", "--loss_margin_nu", "0.1", "--loss_margin_beta", "0.7")
    crit = criteria.get_class("margin")(opt).double()
    loss = crit(x, y, triplets=t)
    ref, active = naive_margin(x, y, t, crit.beta, 0.2, 0.1)
    assert active == 0
    torch.testing.assert_close(loss, ref, **TOL)
    torch.testing.assert_close(loss.detach(), 0.1 * crit.beta[0].detach() * len(t), **TOL)
    gb = grads(loss, crit.beta)[0]
    torch.testing.assert_close(gb, 0.1 * torch.bincount(y[t[:, 0]], minlength=4).double(), **TOL)


def test_proxyanchor_matches_pml_with_copied_proxies():
    x, y = batch(4, normalize=False)
    y = y.clamp(max=2)  # class 3 absent from the batch: the positive term averages over present classes only
    opt = make_opt("--loss", "proxyanchor")
    crit = criteria.get_class("proxyanchor")(opt).double()
    pml = losses.ProxyAnchorLoss(num_classes=4, embedding_size=8, margin=0.1, alpha=32)
    pml.proxies = torch.nn.Parameter(crit.proxies.detach().clone())
    ours, ref = crit(x, y), pml(x, y)
    torch.testing.assert_close(ours, ref, **TOL)
    gx, gp = grads(ours, x, crit.proxies)
    rx, rp = grads(ref, x, pml.proxies)
    torch.testing.assert_close(gx, rx, **TOL)
    torch.testing.assert_close(gp, rp, **TOL)
    assert crit.param_groups()[0]["lr"] == pytest.approx(opt.lr * 100)


def test_multisimilarity_matches_pml_when_every_anchor_is_mined():
    """Where each anchor keeps a positive and a negative, the authors' code, the Roth suite and
    PML (MultiSimilarityMiner + MultiSimilarityLoss on dot products of normalised inputs) agree."""
    x, y = batch(5)
    opt = make_opt("--loss", "multisimilarity")
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


def test_multisimilarity_skips_anchors_like_the_authors_code():
    """PML keeps one-sided anchors, so here the reference is a naive loop of the authors' code."""
    x, y = batch(6)
    with torch.no_grad():  # class 0 collapses onto one direction far from the rest: its anchors mine nothing
        u = F.normalize(torch.ones(8, dtype=torch.float64), dim=0)
        x[:3] = u + 0.01 * x[:3]
        x[3:] -= u
    opt = make_opt("--loss", "multisimilarity")
    crit = criteria.get_class("multisimilarity")(opt)
    ours, ref = crit(x, y), naive_multisimilarity(x, y)
    torch.testing.assert_close(ours, ref, **TOL)
    torch.testing.assert_close(grads(ours, x)[0], grads(ref, x)[0], **TOL)
    a1, _, a2, _ = miners.MultiSimilarityMiner(epsilon=0.1)(x.detach(), y)
    kept = set(a1.tolist()) & set(a2.tolist())
    assert 0 < len(kept) < len(y), "the inputs must skip some anchors"


def test_softmax_matches_pml_normalized_softmax():
    x, y = batch(7, normalize=False)
    opt = make_opt("--loss", "softmax")
    crit = criteria.get_class("softmax")(opt).double()
    pml = losses.NormalizedSoftmaxLoss(num_classes=4, embedding_size=8, temperature=0.05)
    pml.W = torch.nn.Parameter(crit.class_map.detach().T.clone())
    ours, ref = crit(x, y), pml(F.normalize(x, dim=1), y)
    torch.testing.assert_close(ours, ref, **TOL)
    gx, gw = grads(ours, x, crit.class_map)
    rx, rw = grads(ref, x, pml.W)
    torch.testing.assert_close(gx, rx, **TOL)
    torch.testing.assert_close(gw, rw.T, **TOL)
    assert crit.param_groups()[0]["lr"] == opt.loss_softmax_lr == 1e-5


def test_arcface_matches_pml_and_the_paper():
    x, y = batch(8, normalize=False)
    opt = make_opt("--loss", "arcface")
    crit = criteria.get_class("arcface")(opt).double()
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


def registry_cases():
    cases = []
    for name in criteria.names():
        allowed = criteria.get_class(name).allowed_miners
        cases += [(name, m) for m in allowed] if allowed else [(name, None)]
    return cases


@pytest.mark.parametrize("name,miner", registry_cases())
def test_every_criterion_and_miner_trains(name, miner):
    """forward + backward on random (normalised) inputs: finite loss and gradients, param groups well formed."""
    torch.manual_seed(0)
    opt = make_opt("--loss", name, n_classes=5, embed_dim=16)
    bm = batch_mining.select(miner, opt) if miner else None
    crit = criteria.select(name, opt, bm)
    raw = torch.randn(20, 16, requires_grad=True)
    labels = torch.arange(5).repeat_interleave(4)
    loss = crit(F.normalize(raw, dim=1), labels)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(raw.grad).all() and raw.grad.abs().sum() > 0
    own = [p for p in crit.parameters() if p.requires_grad]
    grouped = [p for g in crit.param_groups() for p in g["params"]]
    assert {id(p) for p in own} == {id(p) for p in grouped}
    for g in crit.param_groups():
        assert {"params", "lr", "weight_decay", "name"} <= set(g) and g["lr"] > 0
    for p in own:
        assert p.grad is not None and torch.isfinite(p.grad).all()


def test_allowed_miners_are_registered_and_defaults_allowed():
    for name in criteria.names():
        cls = criteria.get_class(name)
        assert set(cls.allowed_miners) <= set(batch_mining.names()), name
        assert (cls.default_miner is None) == (not cls.allowed_miners), name
        assert cls.default_miner is None or cls.default_miner in cls.allowed_miners


def test_incompatible_miner_raises_user_error():
    opt = make_opt("--loss", "proxyanchor")
    with pytest.raises(UserError, match="takes no batch miner"):
        criteria.select("proxyanchor", opt, batch_mining.select("distance", opt))
    with pytest.raises(UserError, match="needs a batch miner"):
        criteria.select("triplet", make_opt("--loss", "triplet"), None)


def test_empty_tuples_give_zero_loss_with_a_graph():
    x, y = batch(9)
    for name in ("triplet", "contrastive", "margin"):
        loss = criteria.get_class(name)(make_opt("--loss", name))(x, y, triplets=torch.zeros(0, 3, dtype=torch.long))
        assert loss.item() == 0.0
        loss.backward()


def test_roth_flag_defaults():
    """Flag names and defaults users paste from the Roth suite."""
    opt = make_opt()
    expected = {
        "loss_triplet_margin": 0.2, "loss_margin_margin": 0.2, "loss_margin_beta_lr": 0.0005,
        "loss_margin_beta": 1.2, "loss_margin_nu": 0.0, "loss_margin_beta_constant": False,
        "loss_contrastive_pos_margin": 0.0, "loss_contrastive_neg_margin": 1.0,
        "loss_multisimilarity_pos_weight": 2.0, "loss_multisimilarity_neg_weight": 40.0,
        "loss_multisimilarity_margin": 0.1, "loss_multisimilarity_thresh": 0.5,
        "loss_softmax_lr": 1e-5, "loss_softmax_temperature": 0.05, "loss_arcface_lr": 0.0005,
        "loss_arcface_angular_margin": 0.5, "loss_arcface_feature_scale": 16.0,
        "loss_proxyanchor_alpha": 32.0, "loss_proxyanchor_delta": 0.1,
        "miner_distance_lower_cutoff": 0.5, "miner_distance_upper_cutoff": 1.4,
    }  # fmt: skip
    assert {k: getattr(opt, k) for k in expected} == expected
