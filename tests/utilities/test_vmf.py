"""utilities.vmf against independent references: mpmath (tests/utilities/mpmath_oracle.py, the ``oracle`` fixture), scipy.stats.vonmises_fisher,
Monte-Carlo integrals and closed forms. The dense sweeps are marked slow (run with -m slow)."""

from __future__ import annotations

import functools
import math

import mpmath as mp
import numpy as np
import pytest
import scipy.stats
import torch

from utilities import vmf
from utilities.errors import UserError

DIMS = [2, 3, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]


def kappa_grid(d: int) -> list[float]:
    """0, tiny, small, around d, >> d and the top of the range 1e5."""
    ks = {0.0, 1e-8, 1e-3, 0.5, d / 4, d - 1.0, float(d), d + 1.0, 10.0 * d, 1e3, 1e4, 1e5}
    return sorted(k for k in ks if 0 <= k <= 1e5)


def t64(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


# ------------------------------------------------------------------------------------------------ oracle sanity
def test_oracle_quadrature_matches_mpmath_besseli(oracle):
    """The quadrature oracle agrees with mpmath.besseli where the latter converges quickly."""
    for v, x in [(0, 0.3), (0.5, 7.0), (3, 40.0), (63, 50.0), (255, 2000.0), (1023, 1023.0), (2047, 5000.0), (0, 1e5)]:
        assert float(abs(oracle.log_iv(v, x) - oracle.besseli_log(v, x))) < 1e-20 * max(1, abs(float(oracle.log_iv(v, x))))


# ------------------------------------------------------------------------------------------------ log C_d
@pytest.mark.parametrize("d", DIMS)
def test_log_vmf_norm_matches_mpmath(d, oracle):
    ks = kappa_grid(d)
    exact = [oracle.log_vmf_norm(k, d) for k in ks]
    got64 = vmf.log_vmf_norm(t64(ks), d)
    got32 = vmf.log_vmf_norm(t64(ks).float(), d)
    assert got64.dtype == torch.float64 and got32.dtype == torch.float32
    err64 = max(oracle.rel_err(g, e) for g, e in zip(got64.tolist(), exact))
    err32 = max(oracle.rel_err(g, e) for g, e in zip(got32.tolist(), exact))
    assert err64 < 1e-10, err64  # the target: 1e-6
    assert err32 < 1e-6, err32  # the target: 1e-4 (float32 rounding of the exact value)


def test_log_vmf_norm_at_zero_is_minus_log_sphere_area():
    for d in (2, 3, 7, 512, 4096):
        area = math.lgamma(d / 2) - math.log(2) - d / 2 * math.log(math.pi)
        assert abs(vmf.log_vmf_norm(t64(0.0), d).item() - area) < 1e-12 * max(1, abs(area))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("d", DIMS)
def test_log_vmf_norm_gradient_is_minus_mean_resultant(d, dtype, oracle):
    """Autograd gradient = -A_d(kappa) from mpmath over the whole kappa grid (0 .. 1e5), in float64 and float32
    (the reference at the float32-rounded kappa). Tolerances 1e-10 / 1e-6 relative (the targets: 1e-6 / 1e-4)."""
    ks = kappa_grid(d)
    k = torch.tensor(ks, dtype=dtype).requires_grad_()
    (grad,) = torch.autograd.grad(vmf.log_vmf_norm(k, d).sum(), k)
    assert grad.dtype == dtype
    tol = 1e-10 if dtype == torch.float64 else 1e-6
    for g, kk in zip(grad.tolist(), k.detach().tolist()):
        if kk == 0:
            assert g == 0.0  # A_d(0) = 0
            continue
        exact = -oracle.mean_resultant(kk, d)
        assert float(abs(g - exact) / abs(exact)) < tol, (d, kk, g, float(exact))


@pytest.mark.parametrize("d", [2, 3, 5, 64, 4096])
def test_log_vmf_norm_gradcheck(d):
    k = t64([0.05, 1.3, 17.0, 250.0, 4e3]).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: vmf.log_vmf_norm(x, d), (k,))
    assert torch.autograd.gradgradcheck(lambda x: vmf.log_vmf_norm(x, d), (k,))


def test_half_precision_inputs_get_float32_results(oracle):
    k = torch.tensor([0.5, 40.0, 900.0], dtype=torch.bfloat16, requires_grad=True)
    out = vmf.log_vmf_norm(k, 128)
    assert out.dtype == torch.float32
    exact = [oracle.log_vmf_norm(float(x), 128) for x in k.detach().float().tolist()]  # at the bf16-rounded kappa
    assert max(oracle.rel_err(g, e) for g, e in zip(out.tolist(), exact)) < 1e-6
    out.sum().backward()
    assert k.grad.dtype == torch.bfloat16 and torch.isfinite(k.grad).all()
    assert vmf.vmf_mean_resultant(k.detach().half(), 128).dtype == torch.float32


def test_bad_dim_is_user_error():
    with pytest.raises(UserError):
        vmf.log_vmf_norm(t64(1.0), 1)
    with pytest.raises(UserError):
        vmf.vmf_mean_resultant(t64(1.0), 2.5)


# ------------------------------------------------------------------------------------------------ A_d
@pytest.mark.parametrize("d", [2, 3, 4, 16, 128, 512, 2048, 4096])
def test_mean_resultant_matches_mpmath(d, oracle):
    ks = [k for k in kappa_grid(d) if k > 0]
    a = vmf.vmf_mean_resultant(t64(ks).requires_grad_(), d)
    for got, k in zip(a.tolist(), ks):
        exact = oracle.mean_resultant(k, d)
        assert float(abs(got - exact) / exact) < 1e-11
        if exact > 0.5:  # 1 - A keeps its relative accuracy for k >> d
            assert float(abs((1 - got) - (1 - exact)) / (1 - exact)) < 1e-8
    k = t64(ks).requires_grad_()
    (da,) = torch.autograd.grad(vmf.vmf_mean_resultant(k, d).sum(), k)
    for got, kk in zip(da.tolist(), ks):
        exact = oracle.mean_resultant_derivative(kk, d)
        assert float(abs(got - exact) / exact) < 1e-5
    zero = t64([0.0]).requires_grad_()
    a0 = vmf.vmf_mean_resultant(zero, d)
    assert a0.item() == 0.0
    assert abs(torch.autograd.grad(a0.sum(), zero)[0].item() - 1 / d) < 1e-15


# ------------------------------------------------------------------------------------------------ log I_v
def test_log_iv_matches_mpmath_with_fractional_orders_and_broadcasting(oracle):
    vs = t64([0.0, 0.3, 3.7, 11.9, 12.1, 100.25, 2047.0]).unsqueeze(1)
    xs = t64([1e-6, 0.8, 9.0, 23.9, 24.1, 150.0, 3e4])
    got = vmf.log_iv(vs, xs)
    assert got.shape == (7, 7)
    got32 = vmf.log_iv(vs.float(), xs.float())
    assert got32.dtype == torch.float32
    for i, v in enumerate(vs.squeeze(1).tolist()):
        for j, x in enumerate(xs.tolist()):
            exact = oracle.log_iv(v, x)
            assert oracle.rel_err(got[i, j].item(), exact) < 1e-12
            assert oracle.rel_err(got32[i, j].item(), exact) < 1e-6
    assert vmf.log_iv(0.0, t64(0.0)).item() == 0.0
    assert vmf.log_iv(2.0, t64(0.0)).item() == -math.inf


def test_log_iv_gradient_in_x(oracle):
    v = t64([0.0, 0.5, 3.7, 40.0]).unsqueeze(1)
    x = t64([0.2, 5.0, 60.0]).requires_grad_()
    (g,) = torch.autograd.grad(vmf.log_iv(v, x).sum(), x)
    exact = [
        sum(mp.exp(oracle.log_iv(vv + 1, xx) - oracle.log_iv(vv, xx)) + vv / xx for vv in (0.0, 0.5, 3.7, 40.0)) for xx in x.tolist()
    ]
    for got, e in zip(g.tolist(), exact):
        assert float(abs(got - e) / abs(e)) < 1e-10
    assert torch.autograd.gradcheck(lambda t: vmf.log_iv(v, t), (x,))


# ------------------------------------------------------------------------------------------------ sampling
# 0.5 .. 1000 with values strictly inside 11 < kappa < d (where the originals' b = (d-1)/(4k) shortcut is biased)
SAMPLE_KAPPAS = {3: [0.5, 11.0, 1000.0], 16: [0.5, 11.0, 13.0, 16.0, 1000.0], 128: [0.5, 11.0, 40.0, 128.0, 1000.0],
                 512: [0.5, 11.0, 50.0, 200.0, 512.0, 1000.0]}  # fmt: skip
N_OURS = 20000
N_SCIPY = {3: 4000, 16: 4000, 128: 4000, 512: 1500}  # scipy's rvs is slow at d = 512


def random_unit(rows: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(rows, d, dtype=torch.float64, generator=g), dim=-1)


@pytest.fixture(scope="module")
def our_w():
    """w = mu^T x for N_OURS samples per (d, kappa), one sampler call per d with kappa varying over rows."""
    out = {}
    for d, ks in SAMPLE_KAPPAS.items():
        mu = random_unit(len(ks), d, seed=d)
        x = vmf.sample_vmf(mu, t64(ks), N_OURS, generator=torch.Generator().manual_seed(100 + d))
        out[d] = (x * mu).sum(-1).numpy()  # [N, len(ks)]
    return out


@pytest.mark.parametrize("d", list(SAMPLE_KAPPAS))
def test_sample_mean_matches_mean_resultant(our_w, d, oracle):
    for j, k in enumerate(SAMPLE_KAPPAS[d]):
        w = our_w[d][:, j]
        se = math.sqrt(float(oracle.mean_resultant_derivative(k, d)) / len(w))  # Var[w] = dA/dk
        assert abs(w.mean() - float(oracle.mean_resultant(k, d))) < 4 * se, (d, k)


@functools.cache
def scipy_w(d: int, k: float) -> np.ndarray:
    """mu^T x of N_SCIPY[d] scipy.stats.vonmises_fisher draws (mu = e1)."""
    mu = np.zeros(d)
    mu[0] = 1.0
    seed = 7 + SAMPLE_KAPPAS[d].index(k)
    return scipy.stats.vonmises_fisher(mu, k).rvs(N_SCIPY[d], random_state=np.random.default_rng(seed))[:, 0]


@pytest.mark.parametrize("d", list(SAMPLE_KAPPAS))
def test_sample_distribution_matches_scipy(our_w, d):
    for j, k in enumerate(SAMPLE_KAPPAS[d]):
        p = scipy.stats.ks_2samp(our_w[d][:, j], scipy_w(d, k)).pvalue
        assert p > 1e-3, (d, k, p)


@pytest.mark.parametrize("d,k", [(16, 13.0), (128, 40.0), (512, 200.0)])
def test_float32_samples_match_mean_resultant_and_scipy(d, k, oracle):
    """float32 mu and kappa (inside 11 < kappa < d): float32 unit samples, E[w] = A_d(k), KS against scipy."""
    mu = random_unit(3, d, seed=d + 1).float()
    x = vmf.sample_vmf(mu, torch.full((3,), k), N_OURS // 3, generator=torch.Generator().manual_seed(d))
    assert x.dtype == torch.float32 and torch.allclose(x.norm(dim=-1), torch.ones(()), atol=1e-5)
    w = (x.double() * mu.double()).sum(-1).reshape(-1).numpy()
    se = math.sqrt(float(oracle.mean_resultant_derivative(k, d)) / len(w))
    assert abs(w.mean() - float(oracle.mean_resultant(k, d))) < 4 * se + 1e-6
    assert scipy.stats.ks_2samp(w, scipy_w(d, k)).pvalue > 1e-3


def test_two_sample_tests_have_power(oracle):
    """The same mean / KS checks reject a sampler whose kappa is 10% off (so the checks above can fail)."""
    d, k = 16, 11.0
    mu = random_unit(1, d, seed=3)
    w = (vmf.sample_vmf(mu, t64([k * 1.1]), N_OURS, generator=torch.Generator().manual_seed(5)) * mu).sum(-1)
    w = w.squeeze(1).numpy()
    se = math.sqrt(float(oracle.mean_resultant_derivative(k, d)) / len(w))
    assert abs(w.mean() - float(oracle.mean_resultant(k, d))) > 4 * se
    e1 = np.eye(d)[0]
    ref = scipy.stats.vonmises_fisher(e1, k).rvs(N_SCIPY[d], random_state=np.random.default_rng(7))[:, 0]
    assert scipy.stats.ks_2samp(w, ref).pvalue < 1e-3


def test_d3_inverse_cdf_matches_exact_cdf():
    k = 2.5
    mu = random_unit(1, 3, seed=1)
    w = (vmf.sample_vmf(mu, t64([k]), 20000, generator=torch.Generator().manual_seed(2)) * mu).sum(-1).squeeze(1)

    def cdf(t):  # F(w) = (e^{k w} - e^{-k}) / (e^k - e^{-k})
        return (np.exp(k * t) - np.exp(-k)) / (np.exp(k) - np.exp(-k))

    assert scipy.stats.kstest(w.numpy(), cdf).pvalue > 1e-3
    assert scipy.stats.kstest(w.numpy(), lambda t: cdf(t) ** 1.1).pvalue < 1e-3  # power
    tiny = vmf.sample_vmf(mu, t64([0.0]), 5, generator=torch.Generator().manual_seed(2))
    assert torch.isfinite(tiny).all()


@pytest.mark.parametrize("d", [2, 3, 16])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sample_shape_norm_dtype_and_gradients(d, dtype):
    mu = random_unit(6, d, seed=d).to(dtype).reshape(2, 3, d)
    mu[0, 0] = -mu[0, 0].abs()  # both Householder branches (sign of mu_1)
    mu[0, 1] = mu[0, 1].abs()
    mu[1, 2] = torch.nn.functional.one_hot(torch.tensor(0), d).to(dtype)  # mu = e1 exactly
    mu.requires_grad_()
    kappa = torch.tensor([[0.0, 1.0, 30.0], [200.0, 1e4, 5.0]], dtype=dtype, requires_grad=True)
    x = vmf.sample_vmf(mu, kappa, 4, generator=torch.Generator().manual_seed(0))
    assert x.shape == (4, 2, 3, d) and x.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert torch.allclose(x.norm(dim=-1), torch.ones((), dtype=dtype), atol=tol)
    gm, gk = torch.autograd.grad((x * torch.randn_like(x)).sum(), (mu, kappa))
    assert torch.isfinite(gm).all() and gm.abs().sum() > 0
    assert torch.isfinite(gk).all() and gk[:, 1:].abs().min() > 0
    # reproducible with a generator; trailing-singleton kappa accepted
    again = vmf.sample_vmf(mu, kappa.unsqueeze(-1), 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, again)


def test_sample_mean_direction_is_mu(oracle):
    """E[x] = A_d(k) mu (checks the Householder rotation, not only w)."""
    d, k = 16, 40.0
    mu = random_unit(1, d, seed=11)
    x = vmf.sample_vmf(mu, t64([k]), 40000, generator=torch.Generator().manual_seed(3))
    err = (x.mean(0)[0] - float(oracle.mean_resultant(k, d)) * mu[0]).abs().max().item()
    assert err < 4 * math.sqrt(1 / 40000)


def test_sample_bad_input_is_user_error():
    mu = random_unit(3, 8, seed=0)
    with pytest.raises(UserError):
        vmf.sample_vmf(mu, t64([1.0, 2.0]), 2)
    with pytest.raises(UserError):
        vmf.sample_vmf(mu, t64([1.0, 2.0, 3.0]), 2, grad="score")
    for bad in (math.nan, math.inf, -1.0):  # would never be accepted by the rejection loop
        with pytest.raises(UserError):
            vmf.sample_vmf(mu, t64([1.0, bad, 3.0]), 2)


def _kappa_gradient_estimate(d: int, k: float, grad: str, n: int, rows: int = 10, seed: int = 0):
    """Mean and standard error of the per-sample d w / d kappa (an estimate of dA/dk)."""
    kappa = torch.full((rows,), k, dtype=torch.float64, requires_grad=True)
    mu = random_unit(rows, d, seed=seed)
    x = vmf.sample_vmf(mu, kappa, n, generator=torch.Generator().manual_seed(seed), grad=grad)
    (g,) = torch.autograd.grad((x * mu).sum(-1).sum(), kappa)
    per_row = g / n
    return per_row.mean().item(), per_row.std().item() / math.sqrt(rows)


def test_pathwise_kappa_gradient_is_biased_and_implicit_is_not(oracle):
    """d = 16, k = 20: pathwise dE[w]/dk is ~4% low (documented in sample_vmf), implicit matches dA/dk."""
    d, k = 16, 20.0
    exact = float(oracle.mean_resultant_derivative(k, d))
    path, path_se = _kappa_gradient_estimate(d, k, "pathwise", 10000)
    impl, impl_se = _kappa_gradient_estimate(d, k, "implicit", 10000)
    assert -0.06 < (path - exact) / exact < -0.025 and abs(path - exact) > 8 * path_se
    assert abs(impl - exact) < 4 * impl_se + 2e-3 * exact
    # d = 2: the pathwise bias is large (~ -40%); implicit is still unbiased
    exact2 = float(oracle.mean_resultant_derivative(3.0, 2))
    impl2, impl2_se = _kappa_gradient_estimate(2, 3.0, "implicit", 10000)
    assert abs(impl2 - exact2) < 4 * impl2_se + 2e-3 * exact2


def test_implicit_gradient_matches_finite_difference_of_the_cdf():
    """Per sample: dw/dk = -(dF/dk)/f(w), checked against mpmath quadrature of the marginal."""
    d, k = 7, 9.0
    mu = random_unit(1, d, seed=4)
    kappa = t64([k]).requires_grad_()
    x = vmf.sample_vmf(mu, kappa, 5, generator=torch.Generator().manual_seed(9), grad="implicit")
    w = (x * mu).sum(-1).squeeze(1)
    grads = [torch.autograd.grad(wi, kappa, retain_graph=True)[0].item() for wi in w]
    with mp.workdps(25):

        def cdf(t, kk):
            dens = lambda s: mp.exp(kk * s) * (1 - s * s) ** mp.mpf((d - 3) / 2)  # noqa: E731
            return mp.quad(dens, [-1, t]) / mp.quad(dens, [-1, 1])

        for wi, gi in zip(w.tolist(), grads):
            dfdk = mp.diff(lambda kk, wi=wi: cdf(wi, kk), k)
            f = mp.diff(lambda t: cdf(t, k), wi)
            assert abs(gi - float(-dfdk / f)) < 1e-5 * max(1.0, abs(gi))


@pytest.mark.parametrize("d,k", [(7, 9.0), (2, 40.0), (64, 300.0), (4096, 1e5)])
def test_implicit_quadrature_in_the_tails(d, k, oracle):
    """dw/dk = sin(t) int_0^t (cos s - A) f(s) ds / f(t), t = arccos w (mpmath, 40 digits), from 6 sd below the
    mean of w to the upper tail (1 - w a tenth of its mean)."""
    a = float(oracle.mean_resultant(k, d))
    sd = math.sqrt(float(oracle.mean_resultant_derivative(k, d)))
    ws = [max(-0.999, a - 6 * sd), a - sd, a, min(a + sd, 1 - (1 - a) / 2)] + ([1 - (1 - a) / 10] if d < 100 else [])
    omw = t64([1 - w for w in ws]).unsqueeze(1)
    got = vmf._implicit_dw_dkappa(t64([k]), omw, d).squeeze(1).tolist()
    with mp.workdps(40):
        big_a = oracle.mean_resultant(k, d)
        for w, g in zip(ws, got):
            t = 2 * mp.asin(mp.sqrt(mp.mpf(1 - w) / 2))

            def log_f(s):
                return k * mp.cos(s) + (d - 2) * mp.log(mp.sin(s))

            integral = mp.quad(lambda s, t=t: (mp.cos(s) - big_a) * mp.exp(log_f(s) - log_f(t)), mp.linspace(0, t, 6))
            exact = float(mp.sin(t) * integral)
            assert abs(g - exact) < 5e-5 * abs(exact), (w, g, exact)


# ------------------------------------------------------------------------------------------------ PPK
def _scipy_log_density(x: np.ndarray, mu: np.ndarray, k: float) -> np.ndarray:
    return scipy.stats.vonmises_fisher(mu, k).logpdf(x)


@pytest.mark.parametrize("d,k1,k2", [(3, 4.0, 6.0), (16, 10.0, 25.0)])
def test_log_ppk_matches_monte_carlo(d, k1, k2):
    rng = np.random.default_rng(0)
    mu1, mu2 = (v / np.linalg.norm(v) for v in rng.normal(size=(2, d)))
    mu2 = mu1 + 0.6 * mu2  # close enough that the integral is not dominated by rare draws
    mu2 /= np.linalg.norm(mu2)
    x = scipy.stats.vonmises_fisher(mu1, k1).rvs(200000, random_state=rng)
    log_p1, log_p2 = _scipy_log_density(x, mu1, k1), _scipy_log_density(x, mu2, k2)
    for rho, integrand in ((1.0, np.exp(log_p2)), (0.5, np.exp(0.5 * (log_p2 - log_p1)))):
        # rho = 1: E_{x~p1}[p2(x)]; rho = 1/2: E_{x~p1}[sqrt(p2(x) / p1(x))] (Bhattacharyya coefficient)
        mc, se = integrand.mean(), integrand.std() / math.sqrt(len(integrand))
        closed = vmf.log_ppk_vmf(t64(mu1), t64(k1), t64(mu2), t64(k2), rho).item()
        assert abs(math.exp(closed) - mc) < 4 * se, (rho, math.exp(closed), mc, se)


def test_log_ppk_symmetry_self_kernel_and_broadcasting(oracle):
    mus = random_unit(5, 32, seed=8)
    ks = t64([0.0, 0.3, 10.0, 300.0, 5e4])
    # B x C pairs by broadcasting [B, 1, d] against [1, C, d]
    ppk = vmf.log_ppk_vmf(mus[:, None], ks[:, None], mus[None], ks[None], 1.0)
    assert ppk.shape == (5, 5)
    assert torch.allclose(ppk, ppk.T, rtol=1e-12, atol=1e-9)
    bhat = vmf.log_ppk_vmf(mus, ks, mus, ks, 0.5)  # log Bhattacharyya of identical vMFs = log 1
    assert bhat.abs().max().item() < 1e-8
    # rho = 1, identical: log int p^2 = 2 log C(k) - log C(2k)
    self_el = vmf.log_ppk_vmf(mus, ks, mus, ks, 1.0)
    for got, k in zip(self_el.tolist(), ks.tolist()):
        assert oracle.rel_err(got, 2 * oracle.log_vmf_norm(k, 32) - oracle.log_vmf_norm(2 * k, 32)) < 1e-10
    k1 = ks.clone().requires_grad_()
    mu1 = mus.clone().requires_grad_()
    g_mu, g_k = torch.autograd.grad(vmf.log_ppk_vmf(mu1, k1, mus.flip(0), ks, 1.0).sum(), (mu1, k1))
    assert torch.isfinite(g_mu).all() and torch.isfinite(g_k).all()


# ------------------------------------------------------------------------------------------------ CUDA
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(oracle):
    k = t64([0.0, 0.5, 50.0, 1e4])
    for d in (2, 3, 128, 4096):
        assert torch.allclose(vmf.log_vmf_norm(k.cuda(), d).cpu(), vmf.log_vmf_norm(k, d), rtol=1e-13)
        assert torch.allclose(vmf.vmf_mean_resultant(k.cuda(), d).cpu(), vmf.vmf_mean_resultant(k, d), rtol=1e-13)
    mu = random_unit(4, 64, seed=0).float().cuda()
    x = vmf.sample_vmf(
        mu, torch.full((4,), 20.0, device="cuda"), 3000, generator=torch.Generator("cuda").manual_seed(0)
    )
    assert x.is_cuda and abs((x * mu).sum(-1).mean().item() - float(oracle.mean_resultant(20.0, 64))) < 0.01


# ------------------------------------------------------------------------------------------------ slow sweeps
@pytest.mark.slow
def test_log_vmf_norm_dense_sweep(oracle):
    dims = sorted(set(range(2, 33)) | {int(round(2 ** (i / 4))) for i in range(21, 49)})
    ks = [0.0] + [10 ** (e / 4) for e in range(-32, 21)]
    worst64 = worst32 = 0.0
    for d in dims:
        exact = [oracle.log_vmf_norm(k, d) for k in ks]
        got64 = vmf.log_vmf_norm(t64(ks), d).tolist()
        got32 = vmf.log_vmf_norm(t64(ks).float(), d).tolist()
        worst64 = max(worst64, max(oracle.rel_err(g, e) for g, e in zip(got64, exact)))
        worst32 = max(worst32, max(oracle.rel_err(g, e) for g, e in zip(got32, exact)))
    # float32 includes the rounding of kappa itself (d log C / dk * k * 6e-8)
    assert worst64 < 1e-10 and worst32 < 1e-5, (worst64, worst32)


@pytest.mark.slow
def test_sampler_dense_against_scipy():
    for d in (2, 5, 64, 256, 1024):
        for k in (0.1, 3.0, 11.0, 10.5, d / 4.0, float(d), 5.0 * d, 1e4):  # d / 4: inside 11 < k < d for d >= 64
            mu = random_unit(1, d, seed=d)
            w = (vmf.sample_vmf(mu, t64([k]), 20000, generator=torch.Generator().manual_seed(1)) * mu).sum(-1)
            e1 = np.eye(d)[0]
            ref = scipy.stats.vonmises_fisher(e1, k).rvs(2000, random_state=np.random.default_rng(d))[:, 0]
            assert scipy.stats.ks_2samp(w.squeeze(1).numpy(), ref).pvalue > 1e-3, (d, k)
