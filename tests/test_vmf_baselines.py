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
from criteria.hyperbolic_softmax import expmap0, hyperbolic_mlr_logits


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
def test_baseline_runs_one_epoch(tmp_path, name):
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
