"""The fast paths of utilities.vmf against its general path, mpmath and each other: the per-dimension polynomial
kernels (cached per dimension and result precision), the chunked evaluation, the small-call (stacked Horner)
evaluation, log_vmf_norm_sq and the per-class interpolation of log_vmf_mgf (and its exact fallback)."""

from __future__ import annotations

import math

import pytest
import torch

from utilities import vmf

F64, F32 = torch.float64, torch.float32
KERNEL_DIMS = sorted(set(range(2, 61)) | {64, 100, 127, 128, 200, 256, 511, 512, 1000, 1024, 2048, 4096})


def kappas() -> torch.Tensor:
    """0, tiny, both sides of the series / Hankel switch (24) and 1e-3 .. 1e5."""
    return torch.cat([torch.tensor([0.0, 1e-8, 1e-3, 23.99, 24.0, 24.01], dtype=F64), torch.logspace(-3, 5, 1500, dtype=F64)])


def general(d: int, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log C_d and A_d through the general (any order, per-element region) path of log_iv."""
    v = torch.full_like(k, d / 2 - 1)
    return -(d / 2) * vmf._LOG_2PI - vmf._scaled_log_iv64(v, k), torch.exp(vmf._log_ratio64(v, k))


def rel(got: torch.Tensor, ref: torch.Tensor, floor: float = 1.0) -> float:
    return ((got - ref).abs() / ref.abs().clamp_min(floor)).max().item()


# ------------------------------------------------------------------------------------------------ kernel cache
def test_kernels_are_cached_per_dimension_and_result_precision():
    k32, k64 = vmf._kernel(128, F32), vmf._kernel(128, F64)
    assert vmf._kernel(128, F32) is k32 and vmf._kernel(128, F64) is k64 and k32 is not k64
    # half precisions get float32 results, so they share the float32 kernel; another d is another kernel
    assert vmf._kernel(128, torch.bfloat16) is k32 and vmf._kernel(128, torch.float16) is k32
    assert vmf._kernel(130, F32) is not k32 and vmf._kernel(130, F32).v == 64.0 and k32.v == 63.0
    # the float32 kernel keeps fewer terms (its tolerance is 2^-40 instead of 2^-57), both are Debye for d >= 26
    assert k32.debye and k64.debye and len(k32.p) < len(k64.p) and len(k32.dp) < len(k64.dp)
    assert not vmf._kernel(25, F64).debye and vmf._kernel(26, F64).debye
    # coefficients are Python floats: one kernel serves every device (the stacked small-call tables are per device)
    assert all(isinstance(c, float) for c in k64.p)
    vmf.log_vmf_norm(torch.rand(10, dtype=F64), 128)
    assert all(key[1] == torch.device("cpu") for key in k64._stacked)


def test_kernel_cache_gives_identical_results_on_reuse():
    k = torch.logspace(-2, 4, 50, dtype=F64)
    first = vmf.log_vmf_norm(k, 300)
    vmf._dim_kernel.cache_clear()
    assert torch.equal(vmf.log_vmf_norm(k, 300), first)  # rebuilt from the exact rationals: the same floats


# ------------------------------------------------------------------------------------------------ exactness
@pytest.mark.parametrize("d", KERNEL_DIMS)
def test_per_dimension_polynomials_equal_the_general_path(d):
    """The collapsed (and economised) per-d polynomials reproduce the general path to float64 round-off, in
    log C_d and in A_d (A_d relative, so k -> 0 and k >> d are both covered)."""
    k = kappas()
    ref_log, ref_a = general(d, k)
    log_c, g = vmf._kernel(d, F64)(k * k, k, want_log=True, want_g=True)
    assert rel(log_c, ref_log) < 1e-13
    assert rel((g * k)[1:], ref_a[1:], floor=0.0) < 1e-13
    assert g[0].item() == pytest.approx(1.0 / d, rel=1e-14)  # G_d(0) = A_d'(0) = 1/d
    # the same without k (squared argument only): the Hankel region takes sqrt(k^2)
    log_c2, g2 = vmf._kernel(d, F64)(k * k, None, want_log=True, want_g=True)
    assert torch.equal(log_c2[k <= 24], log_c[k <= 24]) and rel(log_c2, log_c) < 1e-15
    assert rel(g2, g, floor=0.0) < 1e-15


@pytest.mark.parametrize("d", [2, 3, 7, 25, 26, 31, 128, 512, 4096])
def test_float32_kernel_is_exact_far_below_float32_rounding(d):
    """The float32 kernel's looser truncation (2^-40) stays 1e-11 from the float64 kernel: float32 results remain
    the float32 rounding of the exact value."""
    k = kappas()
    l64, g64 = vmf._kernel(d, F64)(k * k, k, True, True)
    l32, g32 = vmf._kernel(d, F32)(k * k, k, True, True)
    assert rel(l32, l64) < 1e-11 and rel(g32, g64, floor=0.0) < 1e-11


@pytest.mark.parametrize("d", [2, 3, 16, 25, 26, 128, 512, 4096])
def test_small_calls_and_large_calls_agree(d):
    """Up to _SMALL_CALL elements a kernel's polynomials share one stacked Horner pass, beyond it each has its own
    in-place Horner pass: the same values."""
    k = kappas()
    kern = vmf._kernel(d, F64)
    big_k = k.repeat(vmf._SMALL_CALL // k.numel() + 1)  # > _SMALL_CALL: separate passes
    assert big_k.numel() > vmf._SMALL_CALL >= k.numel()
    log_big, g_big = kern(big_k * big_k, big_k, True, True)
    log_small, g_small = kern(k * k, k, True, True)  # <= _SMALL_CALL: stacked
    n = k.numel()
    assert rel(log_small, log_big[:n]) < 1e-14 and rel(g_small, g_big[:n], floor=0.0) < 1e-14


def test_chunked_evaluation_equals_chunk_by_chunk_calls():
    """Inputs beyond _CHUNK elements are evaluated chunk by chunk into the output: bitwise the per-chunk results."""
    n = 2 * vmf._CHUNK + 17
    k = (torch.rand(n, generator=torch.Generator().manual_seed(0)) * 600).reshape(-1, 1).requires_grad_()
    out = vmf.log_vmf_norm(k, 128)
    (grad,) = torch.autograd.grad(out.sum(), k)
    assert out.shape == k.shape and out.dtype == F32
    flat = k.detach().reshape(-1)
    parts = [flat[i : i + vmf._CHUNK] for i in range(0, n, vmf._CHUNK)]
    assert torch.equal(out.reshape(-1), torch.cat([vmf.log_vmf_norm(p, 128) for p in parts]))
    assert torch.equal(-grad.reshape(-1), torch.cat([vmf.vmf_mean_resultant(p, 128) for p in parts]))
    assert torch.equal(vmf.vmf_mean_resultant(k.detach(), 128).reshape(-1), -grad.reshape(-1))


# ------------------------------------------------------------------------------------------------ log C_d(sqrt(q))
@pytest.mark.parametrize("d", [2, 3, 17, 128, 512])
def test_log_vmf_norm_sq_is_log_vmf_norm_of_the_root(d, oracle):
    k = torch.tensor([0.0, 1e-4, 0.7, 23.0, 30.0, float(d), 3.0 * d, 4e3], dtype=F64)
    q = (k * k).requires_grad_()
    out = vmf.log_vmf_norm_sq(q, d)
    assert rel(out, vmf.log_vmf_norm(k, d)) < 1e-14
    (grad,) = torch.autograd.grad(out.sum(), q)
    assert grad[0].item() == pytest.approx(-1.0 / (2 * d), rel=1e-13)  # -A_d(k)/(2k) -> -1/(2d)
    for g, kk in zip(grad[1:].tolist(), k[1:].tolist()):
        exact = -float(oracle.mean_resultant(kk, d)) / (2 * kk)
        assert abs(g - exact) < 1e-12 * abs(exact)
    out32 = vmf.log_vmf_norm_sq(q.detach().float(), d)
    assert out32.dtype == F32 and rel(out32.double(), out.detach()) < 1e-6


# ------------------------------------------------------------------------------------------------ log MGF
def mgf_inputs(d: int, beta: float, dtype, c: int = 30, m: int = 200, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(c, d, generator=g, dtype=F64) * (0.476 * (d - 1) / math.sqrt(d))
    z = torch.nn.functional.normalize(torch.randn(m, d, generator=g, dtype=F64), dim=1)
    return (w * w).sum(1).to(dtype), (2 * beta * z @ w.T + beta**2).to(dtype)


def direct_mgf(q: torch.Tensor, delta: torch.Tensor, d: int) -> torch.Tensor:
    """The exact difference, every element evaluated (float64)."""
    return vmf.log_vmf_norm_sq(q, d)[None, :] - vmf.log_vmf_norm_sq(q[None, :] + delta, d)


def spy_interpolation(monkeypatch) -> list:
    """Records, per log_vmf_mgf call, whether the interpolants were used (a polynomial returned) or not."""
    used, real = [], vmf._class_polynomials

    def spy(values, tol):
        out = real(values, tol)
        used.append(out is not None)
        return out

    monkeypatch.setattr(vmf, "_class_polynomials", spy)
    return used


@pytest.mark.parametrize("d,beta", [(128, 1.0), (512, 1.0), (26, 3.0), (16, 1.0), (5, 0.7), (3, 1.0), (128, 20.0)])
@pytest.mark.parametrize("dtype", [F64, F32])
def test_log_vmf_mgf_equals_the_exact_difference(d, beta, dtype):
    """Values and both gradients against the direct float64 difference of two exact log-normalisers."""
    q, delta = mgf_inputs(d, beta, dtype)
    q, delta = q.requires_grad_(), delta.requires_grad_()
    out = vmf.log_vmf_mgf(q, delta, d)
    assert out.dtype == dtype and out.shape == delta.shape
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    gq, gd = torch.autograd.grad((out * weights.to(dtype)).sum(), (q, delta))
    q64, d64 = q.detach().double().requires_grad_(), delta.detach().double().requires_grad_()
    ref = direct_mgf(q64, d64, d)
    rq, rd = torch.autograd.grad((ref * weights).sum(), (q64, d64))
    if dtype == F64:  # the exact difference itself errs by a few ulps of |log C_d| (not of the small difference)
        value_tol, tol = 2e-15 * vmf.log_vmf_norm_sq(q64.detach(), d).abs().max().clamp_min(1.0).item(), 5e-12
    else:  # float32: a few ulps of the result (the values are O(beta))
        value_tol, tol = 1e-6 * ref.abs().max().item(), 1e-6
    assert (out.double() - ref).abs().max().item() < value_tol
    assert (gd.double() - rd).abs().max().item() < tol * rd.abs().max().item()
    # dF/dq_c sums grad * (G(q_c + delta) - G(q_c))/2 over the rows: the reference (autograd through two exact
    # log-normalisers) subtracts the G(q_c) part afterwards, so both are compared on the scale of the summands
    assert (gq.double() - rq).abs().max().item() < tol * rd.abs().sum(0).max().item()


def test_log_vmf_mgf_interpolates_where_it_converges_and_is_exact_elsewhere(monkeypatch, oracle):
    used = spy_interpolation(monkeypatch)
    q, delta = mgf_inputs(128, 1.0, F64, c=5, m=40)
    out = vmf.log_vmf_mgf(q, delta, 128)
    assert used and used[-1]  # d = 128, beta = 1: interpolated (9 or 17 points)
    for c in range(5):  # against mpmath, independently of utilities.vmf
        k0 = math.sqrt(q[c].item())
        for r in (0, 17, 39):
            k1 = math.sqrt(q[c].item() + delta[r, c].item())
            exact = oracle.log_vmf_norm(k0, 128) - oracle.log_vmf_norm(k1, 128)
            assert abs(out[r, c].item() - float(exact)) < 1e-11 * max(1.0, abs(float(oracle.log_vmf_norm(k0, 128))))
    # d = 3 with a huge shift (beta = 40 against kappa ~ 1): the series in delta does not converge on the interval
    used.clear()
    q, delta = mgf_inputs(3, 40.0, F64, c=4, m=30)
    out = vmf.log_vmf_mgf(q, delta, 3)
    assert used and not any(used)  # neither 9 nor 17 points converged: every element evaluated exactly
    assert (out - direct_mgf(q, delta, 3)).abs().max().item() < 1e-12 * direct_mgf(q, delta, 3).abs().max().item()


def test_log_vmf_mgf_edge_cases():
    # one row (every interval a single point), rows of equal delta, a class of zero concentration
    q = torch.tensor([0.0, 4.0, 900.0], dtype=F64)
    delta = torch.tensor([[1.0, -3.0, 50.0]], dtype=F64)
    assert (vmf.log_vmf_mgf(q, delta, 64) - direct_mgf(q, delta, 64)).abs().max().item() < 1e-13
    delta = torch.tensor([[1.0, -3.0, 50.0]] * 4, dtype=F64)
    assert (vmf.log_vmf_mgf(q, delta, 64) - direct_mgf(q, delta, 64)).abs().max().item() < 1e-13
    # batch axes before the class axis broadcast like log_vmf_norm_sq's
    q, delta = mgf_inputs(64, 1.0, F64, c=6, m=12)
    got = vmf.log_vmf_mgf(q, delta.reshape(3, 4, 6), 64)
    assert got.shape == (3, 4, 6) and torch.allclose(got.reshape(12, 6), vmf.log_vmf_mgf(q, delta, 64), rtol=0, atol=0)
    with pytest.raises(vmf.UserError):
        vmf.log_vmf_mgf(q, delta[:, :5], 64)


def test_log_vmf_mgf_also_gives_the_mean_resultant():
    q, delta = mgf_inputs(128, 1.0, F32)
    k = (torch.rand(20, generator=torch.Generator().manual_seed(3)) * 200).requires_grad_()
    out, a = vmf.log_vmf_mgf(q, delta, 128, mean_resultant_of=k)
    assert torch.equal(out, vmf.log_vmf_mgf(q, delta, 128))
    ref = vmf.vmf_mean_resultant(k, 128)
    assert a.dtype == F32 and (a - ref).abs().max().item() <= 1e-7 * ref.abs().max().item()
    (ga,) = torch.autograd.grad(a.sum(), k)
    (gr,) = torch.autograd.grad(ref.sum(), k)
    assert torch.allclose(ga, gr, rtol=1e-6, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_fast_paths_on_cuda_match_cpu():
    k = torch.logspace(-3, 5, 5000, dtype=F64)
    for d in (3, 25, 128, 4096):
        for fn in (vmf.log_vmf_norm, vmf.vmf_mean_resultant):
            assert torch.allclose(fn(k.cuda(), d).cpu(), fn(k, d), rtol=1e-13, atol=0)
    q, delta = mgf_inputs(128, 1.0, F64)
    assert torch.allclose(vmf.log_vmf_mgf(q.cuda(), delta.cuda(), 128).cpu(), vmf.log_vmf_mgf(q, delta, 128),
                          rtol=1e-12, atol=1e-14)  # fmt: skip
