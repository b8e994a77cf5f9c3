"""Baselines of the vMF loss paper: unnormalised / cosine / hyperbolic softmax, ArcFace warm-up, and the views the
classifiers give the metrics (class probabilities; the hyperbolic softmax's Poincare points). The Poincare k-NN and
retrieval metrics themselves are tested in tests/evaluation/test_poincare.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import criteria
import datasets
import evaluation
import metrics
from criteria._classifier import CLASSIFIER_METRICS
from criteria.hyperbolic_softmax import expmap0, hyperbolic_mlr_logits

CLASSIFIERS = ["unnormalized_softmax", "cosine_softmax", "hyperbolic_softmax", "arcface"]


@pytest.fixture
def make(make_criterion):
    """``make(name, extra=(), n_classes=4, dim=5)``: the criterion of a closed-set digits run."""

    def build(name, extra=(), n_classes=4, dim=5):
        return make_criterion(name, "--digits_split", "classification", *extra, n_classes=n_classes, embed_dim=dim)

    return build


def data(n=12, dim=5, n_classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g, dtype=torch.float64), torch.arange(n) % n_classes


def naive_ce(logits, labels):
    return np.mean([np.log(np.exp(row).sum()) - row[y] for row, y in zip(logits, labels, strict=True)])


def test_unnormalized_softmax_is_plain_ce_on_z_wT(make):
    crit = make("unnormalized_softmax").double()
    z, y = data()
    w = crit.class_weights.detach().numpy()
    logits = np.array([[zi @ wc for wc in w] for zi in z.numpy()])
    assert crit(z, y).item() == pytest.approx(naive_ce(logits, y.numpy()), rel=1e-12)


def test_cosine_softmax_temperature_and_groups(make):
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


def test_hyperbolic_softmax_tends_to_euclidean_mlr_at_small_c(make):
    """c -> 0: logit_k -> 4 <z - p'_k, a'_k> (lambda_p -> 2, asinh(t) -> t, the Mobius addition -> +). The gap is
    O(c): at the default c = 1e-5 about 2e-4 on logits up to ~4 (inputs |z| ~ 2), ten times smaller at c = 1e-6."""
    crit = make("hyperbolic_softmax").double()
    assert crit.c == 1e-5  # the default
    z, y = data()
    logits = crit.logits(z).detach().numpy()
    p, a = crit.p_vals.detach().numpy(), crit.a_vals.detach().numpy()
    euclid = 4 * np.array([[(zi - pk) @ ak for pk, ak in zip(p, a, strict=True)] for zi in z.numpy()])
    gap = np.abs(logits - euclid).max()
    assert gap < 1e-3 * np.abs(euclid).max()
    assert crit(z, y).item() == pytest.approx(naive_ce(logits, y.numpy()), rel=1e-10)
    smaller = make("hyperbolic_softmax", ["--loss_hyperbolic_softmax_c", "1e-6"]).double()
    smaller.load_state_dict(crit.state_dict())
    gap_smaller = np.abs(smaller.logits(z).detach().numpy() - euclid).max()
    assert 5 < gap / gap_smaller < 20, (gap, gap_smaller)


def test_hyperbolic_riemannian_gradient_is_the_original_rescaling(make):
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


def naive_ball_points(z: np.ndarray, c: float) -> np.ndarray:
    """exp_0^c(z) = tanh(sqrt(c) ||z||) z / (sqrt(c) ||z||), row by row."""
    out = np.zeros_like(z)
    for i, zi in enumerate(z):
        n = math.sqrt(sum(v * v for v in zi))
        out[i] = math.tanh(math.sqrt(c) * n) * zi / (math.sqrt(c) * n)
    return out


def test_hyperbolic_poincare_view_is_the_ball_points_and_feeds_the_poincare_metrics(make):
    """The view is (exp_0^c(z) in float64, c); through ``loss_views`` an open-set split gets the loss's default
    Poincare retrieval metrics (the same values as the metrics on the points built here) and no classifier metrics;
    a closed-set split gets accuracy / ece / ece_rms too."""
    defaults = criteria.get_class("hyperbolic_softmax").flag_defaults["evaluation_metrics"]
    assert defaults[: len(metrics.DEFAULT_EVALUATION_METRICS)] == metrics.DEFAULT_EVALUATION_METRICS
    own = defaults[len(metrics.DEFAULT_EVALUATION_METRICS) :]
    assert own == [*CLASSIFIER_METRICS, "poincare_recall@1", "poincare_map_at_r"]
    c = 0.3
    crit = make("hyperbolic_softmax", ["--loss_hyperbolic_softmax_c", str(c)], n_classes=4, dim=4)
    z = torch.randn(20, 4, generator=torch.Generator().manual_seed(0))
    points, curvature = crit.poincare_points(z)
    assert curvature == c and points.dtype == torch.float64
    np.testing.assert_allclose(points.numpy(), naive_ball_points(z.double().numpy(), c), rtol=1e-12)
    y = torch.arange(20) % 4 + 5  # unseen test classes (dml split)
    out = evaluation.compute_metrics(z, y, own, views=evaluation.loss_views(crit, z, closed_set=False, seed=0))
    assert set(out) == {"poincare_recall@1", "poincare_map_at_r"}
    by_hand = (torch.from_numpy(naive_ball_points(z.double().numpy(), c)), c)
    assert out == evaluation.compute_metrics(z, y, ["poincare_recall@1", "poincare_map_at_r"],
                                             views=lambda name: by_hand if name == "poincare" else None)  # fmt: skip
    closed = evaluation.compute_metrics(z, y - 5, own, views=evaluation.loss_views(crit, z, closed_set=True, seed=0))
    assert set(closed) == set(own)


def test_cosine_softmax_learns_temperature_by_default(make):
    """The original's NormalizedSoftmaxCE needs the architecture's learned temp (learn_temp=True)."""
    crit = make("cosine_softmax")
    assert isinstance(crit.temp, torch.nn.Parameter) and "temperature" in [g["name"] for g in crit.param_groups()]
    fixed = make("cosine_softmax", ["--no_learn_temp"])
    assert not isinstance(fixed.temp, torch.nn.Parameter) and [g["name"] for g in fixed.param_groups()] == [
        "cosine_weights"
    ]
    assert not isinstance(make("vmf_softmax", n_classes=4).temp, torch.nn.Parameter)  # vmf_softmax: opt-in


def test_arcface_margin_warmup(make):
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


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_class_probabilities_are_the_softmax_of_the_logits_in_float64(name, make):
    """The ``probabilities`` view of a logit classifier: softmax(logits) (a naive exp / sum here), float64; through
    ``loss_views`` on a closed-set split the classifier metrics read it (accuracy = share of argmax == y), on an
    open-set split they are left out."""
    crit = make(name, n_classes=3)
    z = torch.randn(30, 5, generator=torch.Generator().manual_seed(1))
    y = torch.arange(30) % 3
    probs = crit.class_probabilities(z)
    assert probs.dtype == torch.float64 and probs.shape == (30, 3)
    logits = crit.logits(z).detach().double().numpy()
    naive = np.array([[math.exp(v - max(row)) / sum(math.exp(u - max(row)) for u in row) for v in row]
                      for row in logits])  # fmt: skip
    np.testing.assert_allclose(probs.numpy(), naive, rtol=1e-12, atol=1e-15)
    out = evaluation.compute_metrics(z, y, ["e_recall@1", *CLASSIFIER_METRICS],
                                     views=evaluation.loss_views(crit, z, closed_set=True, seed=0))  # fmt: skip
    assert set(out) == {"e_recall@1", *CLASSIFIER_METRICS}
    assert out["accuracy"] == pytest.approx(np.mean([row.argmax() == t for row, t in zip(naive, y.tolist())]))
    open_set = evaluation.compute_metrics(z, y, ["e_recall@1", *CLASSIFIER_METRICS],
                                          views=evaluation.loss_views(crit, z, closed_set=False, seed=0))  # fmt: skip
    assert set(open_set) == {"e_recall@1"} and open_set["e_recall@1"] == out["e_recall@1"]


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_classifiers_give_probabilities_only(name):
    """Which views a baseline offers (``provides``): class probabilities; the hyperbolic softmax also its ball."""
    cls = criteria.get_class(name)
    assert cls.provides("probabilities") and not cls.provides("samples") and not cls.provides("kappa")
    assert cls.provides("poincare") == (name == "hyperbolic_softmax")
    assert not cls.norm_is_certainty


def test_digits_splits_state_whether_they_are_closed_set(make_opt):
    """Classifier metrics need a closed-set split: the dml split's test classes are unseen, the classification
    split's are the train classes."""
    dml = datasets.select("digits", make_opt())
    assert dml["training"].closed_set and dml["evaluation"].closed_set and not dml["testing"].closed_set
    classification = datasets.select("digits", make_opt(digits_split="classification"))
    assert classification["testing"].closed_set


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_baseline_runs_one_epoch(name, run_main, no_plots):
    """One short closed-set digits run per baseline: the classifier metrics (asked for) reach the test split's CSV;
    the hyperbolic softmax's Poincare retrieval too."""
    extra = ["--loss_arcface_warmup_epochs", "1"] if name == "arcface" else ["--learn_temp"]
    own = [*CLASSIFIER_METRICS] + (["poincare_recall@1"] if name == "hyperbolic_softmax" else [])
    args = ["--loss", name, "--optim", "sgd", "--lr", "0.1", "--momentum", "0.9", "--embed_dim", "3",
            "--data_sampler", "episodic", "--n_episodes", "3", "--episode_classes", "10", "--episode_samples", "13",
            "--dataset", "digits", "--digits_split", "classification", "--n_epochs", "1", "--no_progress",
            "--no_train_metrics", "--evaluation_metrics", "e_recall@1", *own, *extra]  # fmt: skip
    assert run_main(*args) == 0
    header = (run_main.run_dir() / "metrics_testing.csv").read_text().splitlines()[0].split(",")
    assert set(own) <= set(header)


def test_arcface_learned_scale_gradient_and_group(make):
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
