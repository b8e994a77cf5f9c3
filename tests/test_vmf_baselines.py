"""Baselines of the vMF loss paper: unnormalised / cosine / hyperbolic softmax, ArcFace warm-up, closed-set eval."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import criteria
import main
import parameters
from criteria._vmf_eval import is_closed_set
from criteria.hyperbolic_softmax import expmap0, hyperbolic_mlr_logits, poincare_neighbours, poincare_retrieval
from utilities.trainer import Trainer


def make(name, extra=(), n_classes=4, dim=5):
    opt = parameters.parse_args(["--loss", name, "--embed_dim", str(dim), "--dataset", "digits",
                                 "--digits_split", "classification", *extra])  # fmt: skip
    opt.n_classes = n_classes
    return criteria.select(name, opt)


def data(n=12, dim=5, n_classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g, dtype=torch.float64), torch.arange(n) % n_classes


def naive_ce(logits, labels):
    return np.mean([np.log(np.exp(row).sum()) - row[y] for row, y in zip(logits, labels, strict=True)])


def test_unnormalized_softmax_is_plain_ce_on_z_wT():
    crit = make("unnormalized_softmax").double()
    z, y = data()
    w = crit.class_weights.detach().numpy()
    logits = np.array([[zi @ wc for wc in w] for zi in z.numpy()])
    assert crit(z, y).item() == pytest.approx(naive_ce(logits, y.numpy()), rel=1e-12)


def test_cosine_softmax_temperature_and_groups():
    crit = make("cosine_softmax", ["--learn_temp", "--init_temp", "-1.5", "--optim", "sgd", "--temp_lr", "0.02"])
    crit = crit.double()
    z, y = data()
    w = crit.class_weights.detach().numpy()
    beta = math.exp(1.5)
    logits = np.array([[beta * zi @ wc / np.linalg.norm(zi) / np.linalg.norm(wc) for wc in w] for zi in z.numpy()])
    assert crit(z, y).item() == pytest.approx(naive_ce(logits, y.numpy()), rel=1e-6)  # init_temp held in float32
    groups = {g["name"]: g for g in crit.param_groups()}
    assert groups["temperature"]["lr"] == 0.02 and groups["temperature"]["momentum"] == 0.0
    assert groups["cosine_weights"]["weight_decay"] == 0.0


def naive_hyperbolic_logits(x, p, a, c):
    """Ganea et al. 2018 eq. 25 per (example, class), scalar numpy."""
    out = np.zeros((len(x), len(p)))
    for i, xi in enumerate(x):
        for k, (pk, ak) in enumerate(zip(p, a, strict=True)):
            u, v = -pk, xi
            uv, u2, v2 = u @ v, u @ u, v @ v
            m = ((1 + 2 * c * uv + c * v2) * u + (1 - c * u2) * v) / (1 + 2 * c * uv + c**2 * u2 * v2)
            lam = 2 / (1 - c * pk @ pk)
            na = np.linalg.norm(ak)
            out[i, k] = lam * na / np.sqrt(c) * np.arcsinh(2 * np.sqrt(c) * (m @ ak) / ((1 - c * m @ m) * na))
    return out


def test_hyperbolic_mlr_matches_naive_formula():
    rng = np.random.default_rng(0)
    c = 0.3
    x = rng.normal(size=(6, 4)) * 0.3
    p = rng.normal(size=(3, 4)) * 0.3
    a = rng.normal(size=(3, 4))
    got = hyperbolic_mlr_logits(*(torch.from_numpy(t) for t in (x, p, a)), c).numpy()
    np.testing.assert_allclose(got, naive_hyperbolic_logits(x, p, a, c), rtol=1e-10)
    # exp_0 maps into the ball of radius 1/sqrt(c) along the same direction
    e = expmap0(torch.from_numpy(x) * 50, c)
    assert bool((e.norm(dim=1) < 1 / math.sqrt(c)).all())
    np.testing.assert_allclose(F.normalize(e, dim=1).numpy(), x / np.linalg.norm(x, axis=1, keepdims=True), rtol=1e-10)


def test_hyperbolic_softmax_tends_to_euclidean_mlr_at_small_c():
    """c -> 0: logit_k -> 4 <z - p'_k, a'_k> (lambda_p -> 2, asinh(t) -> t, the Mobius addition -> +)."""
    crit = make("hyperbolic_softmax").double()  # c = 1e-5 by default
    z, y = data()
    logits = crit.logits(z).detach().numpy()
    p, a = crit.p_vals.detach().numpy(), crit.a_vals.detach().numpy()
    euclid = 4 * np.array([[(zi - pk) @ ak for pk, ak in zip(p, a, strict=True)] for zi in z.numpy()])
    np.testing.assert_allclose(logits, euclid, rtol=1e-3, atol=1e-4)
    assert crit(z, y).item() == pytest.approx(naive_ce(logits, y.numpy()), rel=1e-10)


def test_hyperbolic_riemannian_gradient_is_the_original_rescaling():
    """Default (the original's ToPoincare(c), riemannian=True): the gradient reaching the ball point x is scaled by
    (1 - c||x||^2)^2 / 4; as that scale is one number per row, dL/dz = scale_i * (plain dL/dz) row by row."""
    c = 0.3
    z = torch.randn(7, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 1.5
    crit = make("hyperbolic_softmax", ["--loss_hyperbolic_softmax_c", str(c)]).double()
    plain = make(
        "hyperbolic_softmax", ["--loss_hyperbolic_softmax_c", str(c), "--loss_hyperbolic_softmax_euclidean_grad"]
    )
    plain.load_state_dict(crit.state_dict())
    plain = plain.double()
    upstream = torch.randn(7, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    grads = []
    for model in (crit, plain):
        zz = z.clone().requires_grad_()
        logits = model.logits(zz)
        grads.append((logits, torch.autograd.grad((logits * upstream).sum(), zz)[0]))
    (l_riem, g_riem), (l_plain, g_plain) = grads
    assert torch.equal(l_riem, l_plain)  # identity forward
    zn = z.numpy()
    norm = np.linalg.norm(zn, axis=1, keepdims=True)
    x = np.tanh(np.sqrt(c) * norm) * zn / (np.sqrt(c) * norm)  # exp_0^c(z)
    scale = (1 - c * (x * x).sum(1, keepdims=True)) ** 2 / 4
    assert scale.max() > 2 * scale.min()  # rows differ (the check sees the per-row scale)
    np.testing.assert_allclose(g_riem.numpy(), scale * g_plain.numpy(), rtol=1e-10, atol=1e-14)
    # class parameters are unaffected (the original rescales only the embedding's gradient)
    for model in (crit, plain):
        model.zero_grad()
        model(z, torch.arange(7) % 4).backward()
    torch.testing.assert_close(crit.a_vals.grad, plain.a_vals.grad, rtol=1e-12, atol=0)


def original_poincare_dist(x, c):
    """The vMF code's hypnn.pairwise_dist_matrix rule per pair: 2/sqrt(c) artanh(sqrt(c) ||(-x) (+)_c y||)."""
    n = len(x)
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            u, v = -x[i], x[j]
            uv, u2, v2 = u @ v, u @ u, v @ v
            m = ((1 + 2 * c * uv + c * v2) * u + (1 - c * u2) * v) / (1 + 2 * c * uv + c**2 * u2 * v2)
            out[i, j] = 2 / np.sqrt(c) * np.arctanh(np.sqrt(c) * np.linalg.norm(m))
    return out


def test_poincare_retrieval_matches_the_original_distance():
    c = 0.8
    rng = np.random.default_rng(4)
    labels = np.repeat(np.arange(3), 7)
    z = rng.normal(size=(3, 4))[labels] * 1.2 + rng.normal(size=(21, 4))
    x = expmap0(torch.from_numpy(z), c)
    dist = original_poincare_dist(x.numpy(), c)
    np.fill_diagonal(dist, np.inf)
    order = np.argsort(dist, axis=1, kind="stable")[:, :6]
    got = poincare_neighbours(x, 6, c, chunk=5)
    np.testing.assert_array_equal(got, order)
    euclid = np.linalg.norm(x.numpy()[:, None] - x.numpy()[None], axis=2)
    np.fill_diagonal(euclid, np.inf)
    assert (np.argsort(euclid, axis=1, kind="stable")[:, :6] != order).any()  # the geometry matters here
    # Recall@1 and MAP@R from the distance matrix by plain loops
    hits = labels[order] == labels[:, None]
    r = 6
    ap = [sum(hits[i, : k + 1].sum() / (k + 1) for k in range(r) if hits[i, k]) / r for i in range(21)]
    out = poincare_retrieval(x, labels, c)
    assert out["poincare_recall@1"] == pytest.approx(hits[:, 0].mean())
    assert out["poincare_map_at_r"] == pytest.approx(np.mean(ap))


def test_hyperbolic_evaluate_open_set_gives_poincare_retrieval():
    opt = parameters.parse_args(["--loss", "hyperbolic_softmax", "--embed_dim", "4", "--dataset", "digits",
                                 "--storage_metrics", "poincare_recall@1"])  # fmt: skip
    opt.n_classes = 5
    crit = criteria.select("hyperbolic_softmax", opt)
    z = torch.randn(20, 4, generator=torch.Generator().manual_seed(0))
    y = torch.arange(20) % 4 + 5  # unseen test classes (dml split)
    out = crit.evaluate(z, y, "testing")
    assert set(out) == {"poincare_recall@1", "poincare_map_at_r"}
    assert out == poincare_retrieval(expmap0(z.double(), crit.c), y, crit.c)
    assert set(crit.evaluate(z, torch.arange(20) % 5, "training")) == {"accuracy", "ece", "ece_rms"}


def test_cosine_softmax_learns_temperature_by_default():
    """The original's NormalizedSoftmaxCE needs the architecture's learned temp (learn_temp=True)."""
    crit = make("cosine_softmax")
    assert isinstance(crit.temp, torch.nn.Parameter) and "temperature" in [g["name"] for g in crit.param_groups()]
    fixed = make("cosine_softmax", ["--no_learn_temp"])
    assert not isinstance(fixed.temp, torch.nn.Parameter) and [g["name"] for g in fixed.param_groups()] == [
        "cosine_weights"
    ]
    assert not isinstance(make("vmf_softmax", n_classes=4).temp, torch.nn.Parameter)  # vmf_softmax: opt-in


def test_arcface_margin_warmup():
    crit = make("arcface", ["--loss_arcface_warmup_epochs", "2", "--loss_arcface_angular_margin", "0.5"])
    z, y = data()
    z = z.float()
    plain = F.cross_entropy(crit.logits(z), y).item()  # margin-free logits s cos
    for epoch, margin in ((1, 0.0), (2, 0.0), (3, 0.5)):
        crit.on_epoch_start(epoch)
        assert crit.current_margin == margin
    crit.on_epoch_start(1)
    assert crit(z, y).item() == pytest.approx(plain, rel=1e-6)
    crit.on_epoch_start(3)
    assert crit(z, y).item() > plain + 0.1
    assert make("arcface").current_margin == 0.5  # no warm-up: the margin from the start


@pytest.mark.parametrize("name", ["unnormalized_softmax", "cosine_softmax", "hyperbolic_softmax", "arcface"])
def test_closed_set_evaluate_reports_accuracy_and_ece(name):
    crit = make(name, n_classes=3)
    z = torch.randn(30, 5)
    y = torch.arange(30) % 3
    out = crit.evaluate(z, y, "testing")
    assert set(out) == {"accuracy", "ece", "ece_rms"}
    probs = torch.softmax(crit.logits(z).double(), 1)
    assert out["accuracy"] == pytest.approx((probs.argmax(1) == y).double().mean().item())
    opt = parameters.parse_args(["--dataset", "digits"])  # dml split: test classes are unseen
    assert not is_closed_set(opt, y, "testing") and is_closed_set(opt, y, "training")


@pytest.mark.parametrize("name", ["unnormalized_softmax", "cosine_softmax", "hyperbolic_softmax", "arcface"])
def test_baseline_runs_one_epoch(tmp_path, monkeypatch, name):
    monkeypatch.setattr(Trainer, "plot", lambda self: None)  # figures: seconds per run, tested elsewhere
    monkeypatch.setattr(Trainer, "plot_uncertainty", lambda self: None)
    extra = ["--loss_arcface_warmup_epochs", "1"] if name == "arcface" else ["--learn_temp"]
    args = ["--save_path", str(tmp_path / "runs"), "--loss", name, "--optim", "sgd", "--lr", "0.1", "--momentum",
            "0.9", "--embed_dim", "3", "--data_sampler", "episodic", "--n_episodes", "3", "--episode_classes", "10",
            "--episode_samples", "13", "--dataset", "digits", "--digits_split", "classification", "--n_epochs", "1",
            "--no_progress", "--no_train_metrics", "--evaluation_metrics", "e_recall@1", *extra]  # fmt: skip
    assert main.main(args) == 0
    (run,) = list((tmp_path / "runs" / "digits").iterdir())
    header = (run / "metrics_testing.csv").read_text().splitlines()[0].split(",")
    assert {"accuracy", "ece", "ece_rms"} <= set(header)


def test_arcface_learned_scale_gradient_and_group():
    """log s gets the gradient of the fixed-scale loss (central finite difference in log s)."""
    crit = make("arcface", ["--loss_arcface_learn_scale", "--loss_arcface_feature_scale", "8", "--temp_lr", "0.01"])
    crit = crit.double()
    x, y = data()
    x = x.double()
    crit(x, y).backward()
    h = 1e-5
    with torch.no_grad():
        base = crit.log_scale.item()
        crit.log_scale.fill_(base + h)
        up = crit(x, y).item()
        crit.log_scale.fill_(base - h)
        down = crit(x, y).item()
        crit.log_scale.fill_(base)
    assert math.exp(base) == pytest.approx(8.0)
    assert crit.log_scale.grad.item() == pytest.approx((up - down) / (2 * h), rel=1e-6, abs=1e-9)
    group = [g for g in crit.param_groups() if g["name"] == "arcface_scale"][0]
    assert group["lr"] == 0.01 and group["momentum"] == 0.0 and group["weight_decay"] == 0.0
    fixed = make("arcface", ["--loss_arcface_feature_scale", "8"])
    assert [g["name"] for g in fixed.param_groups()] == ["arcface_class_map"]
