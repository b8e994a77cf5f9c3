"""Values AND gradients (float64) of the EL-nivMF family's point-to-proxy losses and of its standalone proxy losses,
against references written from the formulas (docs/methods.md, the EL-nivMF code's conventions) as naive per-image,
per-class Python loops, and against pytorch-metric-learning where it implements the same loss.

Nothing here calls the criteria's own helpers (``_nivmf.stretched``, ``nivmf_offset``, ``oproxy_loss``...): the loops
rebuild directions, clamps, stretched means, log-normalisers (scipy's ``ive``, with d/dk log C_d = -A_d as the
backward) and reductions from scratch.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pytorch_metric_learning import losses
from scipy.special import ive

B, C, D = 10, 5, 6
LABELS = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3, 3, 3])  # unbalanced; class 4 absent
TOL = dict(rtol=1e-9, atol=1e-11)


@pytest.fixture
def make(make_criterion):
    """``make(name, *flags, n_classes=C)``: the float64 criterion of ``--loss name --embed_dim D *flags``, built after
    ``torch.manual_seed(0)``."""
    return lambda name, *flags, n_classes=C: make_criterion(name, *flags, n_classes=n_classes, embed_dim=D).double()


def embeddings(seed=1, scale=4.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, D, generator=g, dtype=torch.float64) * scale).requires_grad_()


def grads(loss, params):
    return torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)


def assert_same(loss, ref, params):
    assert loss.item() == pytest.approx(ref.item(), rel=1e-11, abs=1e-12)
    for a, b in zip(grads(loss, params), grads(ref, params)):
        if b is None:
            assert a is None or (a == 0).all()
        else:
            torch.testing.assert_close(a, b, **TOL)


# ----------------------------------------------------------------------------- loop building blocks
def dot(a, b):
    return sum(a[k] * b[k] for k in range(len(a)))


def norm(a):
    return torch.sqrt(dot(a, a))


def cosine(a, b):
    return dot(a, b) / (norm(a) * norm(b))


def log_sum_exp(terms):
    m = max(t.detach() for t in terms)
    return m + torch.log(sum(torch.exp(t - m) for t in terms))


def log1p_sum_exp(terms):
    """log(1 + sum exp(terms)); 0 for an empty sum."""
    return log_sum_exp([torch.zeros((), dtype=torch.float64)] + list(terms)) if terms else 0.0


class ScipyLogC(torch.autograd.Function):
    """log C_d(k) = (d/2 - 1) log k - (d/2) log 2 pi - log I_{d/2-1}(k) from scipy's ive; backward -A_d(k)."""

    @staticmethod
    def forward(ctx, k, d):
        kv = k.detach().numpy()
        v = d / 2 - 1
        val = v * np.log(kv) - d / 2 * np.log(2 * np.pi) - (np.log(ive(v, kv)) + kv)
        ctx.save_for_backward(k)
        ctx.d = d
        return torch.as_tensor(val, dtype=k.dtype)

    @staticmethod
    def backward(ctx, g):
        (k,) = ctx.saved_tensors
        kv = k.detach().numpy()
        a = ive(ctx.d / 2, kv) / ive(ctx.d / 2 - 1, kv)
        return -g * torch.as_tensor(a, dtype=k.dtype), None


def nca_reduction(sims, y):
    """mean_i [ -sim(i, y_i) + log sum_c exp sim(i, c) ] (positive included)."""
    return sum(-sims[i][int(y[i])] + log_sum_exp(sims[i]) for i in range(len(y))) / len(y)


def clamped(kappa_row, lo=0.1):
    return [
        kappa_row[j] if kappa_row[j] >= lo else torch.tensor(lo, dtype=torch.float64) for j in range(len(kappa_row))
    ]


def family_crit(make, name, *flags):
    crit = make(name, *flags)
    with torch.no_grad():
        crit.kappa.copy_(torch.rand(C, D, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 8 + 0.5)
        crit.kappa[2, 3] = 0.01  # below the clamp
        crit.temp.fill_(0.7)
    return crit


# ----------------------------------------------------------------------------- EL-nivMF family (point-to-proxy)
def naive_nivmf_sims(e, v, kappa, temp):
    """sim(i, c) = l_c(mu_i) / T, l_c(z) = log C_d(r_c) + z^T m_c + sum_j log kappa_cj - log r_c (docs/methods.md)."""
    out = []
    for i in range(B):
        mu = [e[i][k] / norm(e[i]) for k in range(D)]
        row = []
        for c in range(C):
            u = [v[c][k] / norm(v[c]) for k in range(D)]
            kap = clamped(kappa[c])
            m = [kap[k] * u[k] for k in range(D)]
            r = torch.sqrt(sum(mk * mk for mk in m))
            logl = ScipyLogC.apply(r, D) + dot(mu, m) + sum(torch.log(kk) for kk in kap) - torch.log(r)
            row.append(logl / temp)
        out.append(row)
    return out


def naive_l2_sims(e, v, kappa, temp):
    """sim(i, c) = -||e_i - kappa_c * u_c||^2 / T (raw embedding, stretched proxy)."""
    out = []
    for i in range(B):
        row = []
        for c in range(C):
            kap = clamped(kappa[c])
            nv = norm(v[c])
            row.append(-sum((e[i][k] - kap[k] * v[c][k] / nv) ** 2 for k in range(D)) / temp)
        out.append(row)
    return out


def naive_cos_sims(e, v, temp):
    return [[cosine(e[i], v[c]) / temp for c in range(C)] for i in range(B)]


@pytest.mark.parametrize("name", ["proxynca_nivmf", "proxynca_l2", "proxynca_cos"])
def test_point_to_proxy_family_equals_loop(name, make):
    crit = family_crit(make, name)
    e = embeddings(scale=3.0 if name != "proxynca_l2" else 1.5)
    loss = crit(e, LABELS)
    if name == "proxynca_nivmf":
        sims = naive_nivmf_sims(e, crit.proxy_v, crit.kappa, crit.temp)
    elif name == "proxynca_l2":
        sims = naive_l2_sims(e, crit.proxy_v, crit.kappa, crit.temp)
    else:
        sims = naive_cos_sims(e, crit.proxy_v, crit.temp)
    ref = nca_reduction(sims, LABELS)
    params = [e, crit.proxy_v, crit.kappa, crit.temp]
    if name == "proxynca_cos":  # kappa is unused: frozen and out of the optimiser
        assert not crit.kappa.requires_grad
        assert all(crit.kappa is not p for g in crit.param_groups() for p in g["params"])
        params = [e, crit.proxy_v, crit.temp]
    assert_same(loss, ref, params)
    if name != "proxynca_cos":
        g_kappa = grads(loss, [crit.kappa])[0]
        assert g_kappa[2, 3] == 0 and (g_kappa[[0, 1, 3]] != 0).all()  # clamped entry; classes in the batch


def test_proxynca_nivmf_scipy_normaliser_matches_mpmath():
    """The loop's scipy log C_d against mpmath at the radii the test uses (keeps the reference honest)."""
    mpmath = pytest.importorskip("mpmath")
    for r in (0.3, 4.0, 17.0, 60.0):
        v = D / 2 - 1
        want = float(v * mpmath.log(r) - D / 2 * mpmath.log(2 * mpmath.pi) - mpmath.log(mpmath.besseli(v, r)))
        got = ScipyLogC.apply(torch.tensor(r, dtype=torch.float64), D).item()
        assert got == pytest.approx(want, rel=1e-12, abs=1e-12)


# ----------------------------------------------------------------------------- oproxy (the EL-nivMF code's)
OPROXY = dict(pos_alpha=16.0, neg_alpha=24.0, pos_delta=0.2, neg_delta=-0.05)
OPROXY_FLAGS = ["--loss_oproxy_pos_alpha", "16", "--loss_oproxy_neg_alpha", "24", "--loss_oproxy_pos_delta", "0.2",
                "--loss_oproxy_neg_delta", "-0.05"]  # fmt: skip


def naive_oproxy(e, p, y, mode, pos_alpha, neg_alpha, pos_delta, neg_delta):
    """The original criteria/oproxy.py, as loops. Positive weights w+(i, j) = exp(-a+ (cos(e_i, p_{y_j}) - d+)) over
    same-label pairs, negative w-(i, c) = exp(a- (cos(e_i, p_c) - d-)) over c != y_i.
    anchor: (1/B) sum_j log(1 + sum_{i: y_i = y_j} w+) + (1/C) sum_c log(1 + sum_{i: y_i != c} w-);
    nca:    (1/B) sum_i log(1 + sum_{j: y_j = y_i} w+) + (1/B) sum_i log(1 + sum_{c != y_i} w-)."""
    n, n_cls = len(y), p.shape[0]
    cos = [[cosine(e[i], p[c]) for c in range(n_cls)] for i in range(n)]
    y = [int(t) for t in y]
    pos_lin = lambda i, j: -pos_alpha * (cos[i][y[j]] - pos_delta)  # noqa: E731
    neg_lin = lambda i, c: neg_alpha * (cos[i][c] - neg_delta)  # noqa: E731
    if mode == "anchor":
        pos = sum(log1p_sum_exp([pos_lin(i, j) for i in range(n) if y[i] == y[j]]) for j in range(n)) / n
        neg = sum(log1p_sum_exp([neg_lin(i, c) for i in range(n) if y[i] != c]) for c in range(n_cls)) / n_cls
    else:
        pos = sum(log1p_sum_exp([pos_lin(i, j) for j in range(n) if y[j] == y[i]]) for i in range(n)) / n
        neg = sum(log1p_sum_exp([neg_lin(i, c) for c in range(n_cls) if c != y[i]]) for i in range(n)) / n
    return pos + neg


@pytest.mark.parametrize("mode", ["anchor", "nca"])
def test_oproxy_equals_loop(mode, make):
    crit = make("oproxy", "--loss_oproxy_mode", mode, *OPROXY_FLAGS)
    e = embeddings()
    loss = crit(e, LABELS)
    ref = naive_oproxy(e, crit.proxies, LABELS, mode, **OPROXY)
    assert_same(loss, ref, [e, crit.proxies])


def test_oproxy_anchor_equals_pml_proxy_anchor_on_balanced_batches(make):
    """With every present class holding the same count, the original's per-item positive average equals PML's
    per-present-proxy average, so oproxy (alpha 32, delta +-0.1) must equal PML's ProxyAnchorLoss exactly."""
    crit = make("oproxy", n_classes=7)
    y = torch.tensor([0, 0, 2, 2, 3, 3, 5, 5, 6, 6])  # classes 1 and 4 absent
    e = embeddings()
    pml = losses.ProxyAnchorLoss(num_classes=7, embedding_size=D, margin=0.1, alpha=32)
    pml.proxies.data = crit.proxies.detach().clone()
    pml = pml.double()
    loss, ref = crit(e, y), pml(e, y)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-11)
    (g_e,) = torch.autograd.grad(loss, [e], retain_graph=True)
    (g_e_ref,) = torch.autograd.grad(ref, [e], retain_graph=True)
    torch.testing.assert_close(g_e, g_e_ref, **TOL)
    torch.testing.assert_close(torch.autograd.grad(loss, [crit.proxies])[0],
                               torch.autograd.grad(ref, [pml.proxies])[0], **TOL)  # fmt: skip
    # and on the unbalanced LABELS the two reductions differ (the original's is not PML's there)
    crit5 = make("oproxy")
    pml5 = losses.ProxyAnchorLoss(num_classes=C, embedding_size=D, margin=0.1, alpha=32)
    pml5.proxies.data = crit5.proxies.detach().clone()
    assert abs(crit5(e, LABELS).item() - pml5.double()(e, LABELS).item()) > 1e-3


def test_oproxy_keeps_its_own_proxies_as_the_original(make):
    """The original oproxy: proxies randn / 8 (not the family's weight-normalised parametrisation), one group at
    --lr x --loss_oproxy_lrmulti without weight decay."""
    crit = make("oproxy", "--loss_oproxy_lrmulti", "300", "--lr", "2e-5")
    torch.manual_seed(0)
    want = torch.randn(C, D) / 8
    torch.testing.assert_close(crit.proxies.detach().float(), want)
    (group,) = crit.param_groups()
    assert group["params"] == [crit.proxies] and group["lr"] == pytest.approx(2e-5 * 300)
    assert group["weight_decay"] == 0


# ----------------------------------------------------------------------------- proxynca_pp and proxynca
def naive_proxynca(e, p, y, scale, include_positive):
    """x = s e/||e||, q_c = s p_c/||p_c||, d_c = sum_k (x_k - q_ck)^2;
    L = mean_i [ d_{y_i} + log sum_{c (!= y_i unless include_positive)} exp(-d_c) ]."""
    total = 0.0
    for i in range(len(y)):
        x = [scale * e[i][k] / norm(e[i]) for k in range(D)]
        d = [sum((x[k] - scale * p[c][k] / norm(p[c])) ** 2 for k in range(D)) for c in range(p.shape[0])]
        yi = int(y[i])
        total = total + d[yi] + log_sum_exp([d[c] * -1 for c in range(p.shape[0]) if include_positive or c != yi])
    return total / len(y)


@pytest.mark.parametrize("scale", [3.0, 1.7])
def test_proxynca_pp_equals_loop_and_pml(scale, make):
    crit = make("proxynca_pp", "--loss_proxynca_scale", str(scale))
    e = embeddings()
    loss = crit(e, LABELS)
    assert_same(loss, naive_proxynca(e, crit.proxies, LABELS, scale, include_positive=True), [e, crit.proxies])
    pml = losses.ProxyNCALoss(num_classes=C, embedding_size=D, softmax_scale=scale**2)  # ||u - q||^2 on unit vectors
    pml.proxies.data = crit.proxies.detach().clone()
    pml = pml.double()
    ref = pml(e, LABELS)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-10)
    torch.testing.assert_close(torch.autograd.grad(loss, [e])[0], torch.autograd.grad(ref, [e])[0], **TOL)


@pytest.mark.parametrize("scale", [3.0, 5.0])
def test_proxynca_honours_the_scale_flag_and_excludes_the_positive(scale, make):
    """`--loss proxynca --loss_proxynca_scale s`: the EL-nivMF code's registered proxynca (the Roth form, positive
    proxy excluded, per-image reduction) at scale s; 3 = the Roth suite's fixed value."""
    crit = make("proxynca", "--loss_proxynca_scale", str(scale))
    e = embeddings()
    loss = crit(e, LABELS)
    assert_same(loss, naive_proxynca(e, crit.proxies, LABELS, scale, include_positive=False), [e, crit.proxies])
    if scale != 3.0:
        at3 = make("proxynca")
        with torch.no_grad():
            at3.proxies.copy_(crit.proxies)
        assert abs(at3(e, LABELS).item() - loss.item()) > 1e-2  # the flag is not ignored


def test_nca_and_anchor_modes_differ(make):
    """Guard against a mode flag that is parsed but ignored."""
    e = embeddings()
    a = make("oproxy", "--loss_oproxy_mode", "anchor")(e, LABELS)
    n = make("oproxy", "--loss_oproxy_mode", "nca")(e, LABELS)
    assert abs(a.item() - n.item()) > 1e-3 and math.isfinite(a.item()) and math.isfinite(n.item())
