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
    """forward + backward on random (normalised) inputs: finite loss and gradients, param groups well formed;
    a batch of ONE class (no negatives) and one with a singleton class (no positive for it) stay finite too."""
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
    one_class = torch.zeros(20, dtype=torch.long)
    with_singleton = torch.cat([labels[:19] % 4, torch.tensor([4])])  # class 4 has one sample
    for y in (one_class, with_singleton):
        raw.grad = None
        crit.zero_grad()
        value = crit(F.normalize(raw, dim=1), y)
        value.backward()
        assert value.dim() == 0 and torch.isfinite(value), y
        assert torch.isfinite(raw.grad).all(), y
        assert all(torch.isfinite(p.grad).all() for p in own if p.grad is not None), y


def test_allowed_miners_are_registered_and_defaults_allowed():
    for name in criteria.names():
        cls = criteria.get_class(name)
        assert set(cls.allowed_miners) <= set(batch_mining.names()), name
        assert (cls.default_miner is None) == (not cls.allowed_miners), name
        assert cls.default_miner is None or cls.default_miner in cls.allowed_miners


def test_every_miner_is_accepted_by_some_criterion():
    accepted = {m for name in criteria.names() for m in criteria.get_class(name).allowed_miners}
    assert sorted(accepted) == batch_mining.names()


def test_triplet_shaped_miners_are_in_the_shared_miner_lists():
    """The tuple losses accept TRIPLET_MINERS (+ REGULARISING_MINERS): a new miner tagged as a triplet
    miner must be added there, or no triplet loss can take it."""
    from criteria._common import REGULARISING_MINERS, TRIPLET_MINERS

    for m in batch_mining.names():
        tag = batch_mining.output(m)
        assert tag in batch_mining.OUTPUTS, m
        if tag == "triplet":
            assert m in TRIPLET_MINERS, m
        elif tag.endswith("_triplet"):
            assert m in REGULARISING_MINERS, m
        else:
            assert m not in TRIPLET_MINERS + REGULARISING_MINERS, m


def test_every_criterion_miner_pair_is_accepted_or_refused_in_one_line_by_parse_args():
    """Through the real flag path: an accepted pair parses (and keeps the miner); any other registered pair
    raises UserError with a one-line message naming the loss and the miner. Also the loss's own default."""
    refused = 0
    for name in criteria.names():
        allowed = criteria.get_class(name).allowed_miners
        opt = parameters.parse_args(["--loss", name])
        assert opt.batch_mining == criteria.get_class(name).default_miner, name
        for miner in batch_mining.names():
            argv = ["--loss", name, "--batch_mining", miner]
            if miner in allowed:
                assert parameters.parse_args(argv).batch_mining == miner
                continue
            with pytest.raises(UserError) as err:
                parameters.parse_args(argv)
            msg = str(err.value)
            assert "\n" not in msg and f"'{name}'" in msg and f"'{miner}'" in msg, (name, miner, msg)
            refused += 1
    assert refused > 0


def test_adversarial_separation_miners_follow_its_base_loss():
    """Bases that need the npair/lifted miner are refused up front (one line naming the base), with or
    without --batch_mining; a triplet base takes the regularising miners and runs; a miner-free base runs."""
    for argv in ([], ["--batch_mining", "npair"], ["--batch_mining", "distance"]):
        for base in ("npair", "angular", "lifted"):
            with pytest.raises(UserError) as err:
                parameters.parse_args(["--loss", "adversarial_separation", "--loss_adversarial_separation_base", base,
                                       *argv])  # fmt: skip
            msg = str(err.value)
            assert "\n" not in msg and f"'{base}'" in msg and "--loss_adversarial_separation_base" in msg, msg
    with pytest.raises(UserError, match="itself"):
        parameters.parse_args(["--loss", "adversarial_separation", "--loss_adversarial_separation_base",
                               "adversarial_separation"])  # fmt: skip
    x, y = batch(10)
    for base, miner in (("triplet", "rho_distance"), ("margin", "intra_random"), ("multisimilarity", None)):
        argv = ["--loss", "adversarial_separation", "--loss_adversarial_separation_base", base,
                "--embed_dim", "8", "--diva_decorrnet_dim", "8"]  # fmt: skip
        opt = parameters.parse_args(argv + (["--batch_mining", miner] if miner else []))
        assert opt.batch_mining == (miner or "distance")
        opt.n_classes = 4
        bm = batch_mining.select(opt.batch_mining, opt)
        bm.generator = torch.Generator().manual_seed(0)
        crit = criteria.select("adversarial_separation", opt, bm).double()
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
    "proxyanchor": {"loss_proxyanchor_alpha": 32.0, "loss_proxyanchor_delta": 0.1},  # DESIGN 6b
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
def test_roth_flag_defaults(loss):
    """Flag names and defaults users paste from the Roth suite, as ``parse_args`` applies them with that --loss
    (its loss-level and dataset defaults included), and the miner flags with the loss's miners."""
    opt = parameters.parse_args(["--loss", loss])
    expected = ROTH_DEFAULTS[loss]
    assert {k: getattr(opt, k) for k in expected} == expected
    for miner, flags in ROTH_MINER_DEFAULTS.items():
        if miner in criteria.get_class(loss).allowed_miners:
            opt = parameters.parse_args(["--loss", loss, "--batch_mining", miner])
            assert {k: getattr(opt, k) for k in flags} == flags


def test_roth_defaults_cover_the_roth_components():
    """Every Roth-suite criterion with flags is in ROTH_DEFAULTS, and every miner with flags in ROTH_MINER_DEFAULTS
    (``random_distance`` reads the distance miner's flags)."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "docs" / "component_table.py"  # a script: load by path
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
