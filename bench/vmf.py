"""Benchmark of utilities.vmf: accuracy of log C_d, sampler bias, sampler throughput, evaluations per second of
log C_d / A_d and their gradients. Prints four tables.

    python bench/vmf.py            # about a minute on 2 CPU cores
    python bench/vmf.py --n_bias 4000000   # tighter sampler-bias standard errors
    python bench/vmf.py --threads 2        # torch intra-op threads (default 1, as scipy)
    python bench/vmf.py --tables d         # only table (d)

(a) max |error| / max(1, |log C_d|) of log_vmf_norm over k in {0} U [1e-4, 1e5] vs mpmath, next to the two original
    approximations: the vMF loss code (Scott et al. 2021, google-research/vmf_embeddings,
    methods/bessel_approx.py: log_vmf_normalizer_approx, correct only up to an additive constant, so it is shown
    after subtracting its best (minimax) constant offset per d), and the EL-nivMF code (Kirchhof et al. 2022,
    ExplainableML/Probabilistic_Deep_Metric_Learning, utilities/misc.py: approx_log_cp, a quadratic fitted for
    d = 128 and 512; every other d silently gets the 512 fit).
(b) sampler bias: mean of w = mu^T x minus A_d(k), in standard errors, for our sampler and for the originals'
    shortcut b = (d-1)/(4k) for k >= 11 (blended with the exact b on 10 < k < 11, as in the EL-nivMF / vMF code's
    vmf_sampler.py); the shortcut is implemented here only, as the reference being criticised.
(c) samples per second of sample_vmf vs scipy.stats.vonmises_fisher(...).rvs in the same run.
(d) evaluations per second (float32 input of 1e6 kappas, one thread) of log_vmf_norm and vmf_mean_resultant, the
    value alone and value + gradient, next to the originals' approximations timed in the same run (Scott et al.'s
    log_vmf_normalizer_approx and ratio_of_bessel_approx, the EL-nivMF quadratic fit) and to the 1e7 / s target.
"""

from __future__ import annotations

import argparse
import math
import os
import pathlib
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "utilities"))

import numpy as np  # noqa: E402
import scipy.stats  # noqa: E402
import torch  # noqa: E402
from mpmath_oracle import log_vmf_norm as mp_log_norm  # noqa: E402
from mpmath_oracle import mean_resultant, mean_resultant_derivative  # noqa: E402

from utilities import vmf  # noqa: E402


# ----------------------------------------------------------------------------------------------------- originals
def scott_log_norm_sq(k_squared: torch.Tensor, d: int) -> torch.Tensor:
    """vmf_embeddings methods/bessel_approx.py: log_vmf_normalizer_approx(k_squared, d) (up to a constant)."""
    d_m_half = (d / 2.0) - 0.5
    sqrt_d_m_half = torch.sqrt(d_m_half**2 + k_squared)
    d_p_half = (d / 2.0) + 0.5
    sqrt_d_p_half = torch.sqrt(d_p_half**2 + k_squared)
    return 0.5 * (
        d_m_half * torch.log(d_m_half + sqrt_d_m_half)
        - sqrt_d_m_half
        + d_m_half * torch.log(d_m_half + sqrt_d_p_half)
        - sqrt_d_p_half
    )


def scott_log_norm(kappa: torch.Tensor, d: int) -> torch.Tensor:
    """The same from kappa (the original squares kappa before calling it)."""
    return scott_log_norm_sq(kappa**2, d)


def scott_ratio(kappa: torch.Tensor, d: int) -> torch.Tensor:
    """vmf_embeddings methods/bessel_approx.py: ratio_of_bessel_approx(kappa, d) (the original's A_d)."""
    kappa_squared = kappa**2
    d_m_half = (d / 2.0) - 0.5
    sqrt_d_m_half = torch.sqrt(d_m_half**2 + kappa_squared)
    d_p_half = (d / 2.0) + 0.5
    sqrt_d_p_half = torch.sqrt(d_p_half**2 + kappa_squared)
    return 0.5 * ((kappa / (d_m_half + sqrt_d_p_half)) + (kappa / (d_m_half + sqrt_d_m_half)))


def elnivmf_log_norm(kappa: torch.Tensor, d: int) -> torch.Tensor:
    """Probabilistic_Deep_Metric_Learning utilities/misc.py: approx_log_cp(kappa, p, mode='new')."""
    if d == 128:
        return 127 - 0.01909 * kappa - 0.003355 * kappa**2
    return 868 - 0.0002662 * kappa - 0.0009685 * kappa**2


def shortcut_w(kappa: float, d: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """w = mu^T x from the originals' rejection sampler (vmf_sampler.py __sample_w_rej): b blended from the exact
    value to (d-1)/(4k) on 10 < k < 11 and equal to the shortcut for k >= 11; a exact; c from the blended b."""
    k = torch.full((n,), kappa, dtype=torch.float64)
    root = torch.sqrt(4 * k * k + (d - 1) ** 2)
    b_true = (-2 * k + root) / (d - 1)
    s = (k - 10).clamp(0, 1)
    b = (d - 1) / (4 * k) * s + b_true * (1 - s)
    a = (d - 1 + 2 * k + root) / 4
    c = 4 * a * b / (1 + b) - (d - 1) * math.log(d - 1)
    w = torch.empty(n, dtype=torch.float64)
    pending = torch.arange(n)
    while pending.numel():
        conc = torch.full((2, pending.numel()), (d - 1) / 2, dtype=torch.float64)
        g = torch._standard_gamma(conc, generator=gen)
        e = g[0] / (g[0] + g[1])
        u = torch.rand(pending.numel(), dtype=torch.float64, generator=gen)
        bp, ap, cp = b[pending], a[pending], c[pending]
        t = 2 * ap * bp / (1 - (1 - bp) * e)
        ok = (d - 1) * torch.log(t) - t + cp > torch.log(u)
        w[pending[ok]] = ((1 - (1 + bp) * e) / (1 - (1 - bp) * e))[ok]
        pending = pending[~ok]
    return w


def our_w(kappa: float, d: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """w = mu^T x from sample_vmf's w stage (the rotation does not change w)."""
    k = torch.full((n,), kappa, dtype=torch.float64)
    e, ome = vmf._wood_accepted_beta(k, d, gen)
    return vmf._w_from_beta(e, ome, vmf._wood_b(k, d))[0]


# ----------------------------------------------------------------------------------------------------- tables
def table_accuracy(dims: list[int]) -> None:
    ks = [0.0] + [10 ** (e / 4) for e in range(-16, 21)]  # 0 and 1e-4 .. 1e5
    print("(a) log C_d(k): max |err| / max(1, |log C_d|) over k in {0} U [1e-4, 1e5] (37 values) vs mpmath")
    heads = ["ours f64", "ours f32", "Scott*", "Scott* abs", "EL-nivMF", "EL abs"]
    print(f"{'d':>5} | " + " | ".join(f"{h:>{10 if h == 'Scott* abs' else 9}}" for h in heads))
    print("-" * 78)
    k64 = torch.tensor(ks, dtype=torch.float64)
    el_rows = []
    for d in dims:
        exact = np.array([float(mp_log_norm(k, d)) for k in ks])
        scale = np.maximum(1.0, np.abs(exact))
        ours64 = vmf.log_vmf_norm(k64, d).numpy()
        ours32 = vmf.log_vmf_norm(k64.float(), d).double().numpy()
        scott = scott_log_norm(k64, d).numpy() - exact
        scott = scott - 0.5 * (scott.max() + scott.min())  # best constant offset (minimax)
        cells = [np.max(np.abs(ours64 - exact) / scale), np.max(np.abs(ours32 - exact) / scale)]
        cells += [np.max(np.abs(scott) / scale), np.max(np.abs(scott))]
        if d in (128, 512):
            el = elnivmf_log_norm(k64, d).numpy() - exact
            cells += [np.max(np.abs(el) / scale), np.max(np.abs(el))]
            el_rows.append((d, exact))
        line = f"{d:>5} | " + " | ".join(f"{c:>9.1e}" for c in cells[:3]) + f" | {cells[3]:>10.2e}"
        line += (" | " + " | ".join(f"{c:>9.1e}" for c in cells[4:])) if len(cells) > 4 else f" | {'-':>9} | {'-':>9}"
        print(line)
    print("Scott* = Scott et al.'s closed form after subtracting its best constant offset (it is exact only up to a")
    print("constant); 'abs' columns: max absolute error in nats. EL-nivMF: fits exist for d = 128 / 512 only (other d")
    print("silently use the 512 fit). Error of the EL-nivMF fit (nats, signed) at selected k:")
    pick = [10.0, 50.0, 100.0, 135.0, 200.0, 300.0, 1000.0]
    print(f"{'d':>5} | " + " | ".join(f"k={k:<6g}" for k in pick))
    for d, _ in el_rows:
        errs = [
            elnivmf_log_norm(torch.tensor(k, dtype=torch.float64), d).item() - float(mp_log_norm(k, d)) for k in pick
        ]
        print(f"{d:>5} | " + " | ".join(f"{e:>8.2f}" for e in errs))
    print()


def table_bias(n: int) -> None:
    print(f"(b) sampler: mean of w = mu^T x minus A_d(k) over {n} draws, in units of its standard error")
    print(f"{'d':>5} {'k':>6} | {'A_d(k)':>9} | {'ours bias':>10} {'z':>6} | {'shortcut bias':>13} {'z':>7}")
    print("-" * 68)
    for d in (16, 128, 512):
        for k in (11.0, 50.0, 200.0, 1000.0):
            a = float(mean_resultant(k, d))
            se = math.sqrt(float(mean_resultant_derivative(k, d)) / n)
            gen = torch.Generator().manual_seed(d * 7919 + int(k))
            ours = our_w(k, d, n, gen).mean().item() - a
            short = shortcut_w(k, d, n, gen).mean().item() - a
            print(
                f"{d:>5} {k:>6g} | {a:>9.6f} | {ours:>+10.2e} {ours / se:>+6.1f} | {short:>+13.2e} {short / se:>+7.1f}"
            )
    print("|z| > 4 is a detectable bias; the shortcut's b is not the b of Wood's envelope, so its w are biased.")
    print()


def table_speed() -> None:
    print("(c) throughput (samples / s, single mean direction, float64 for both, best of 2)")
    print(f"{'d':>5} {'k':>6} {'n':>7} | {'sample_vmf':>11} | {'scipy rvs':>11} | {'speedup':>7}")
    print("-" * 58)
    for d, k, n in [(3, 10.0, 100000), (16, 50.0, 100000), (128, 50.0, 20000), (512, 200.0, 5000)]:
        mu = torch.nn.functional.normalize(
            torch.randn(d, dtype=torch.float64, generator=torch.Generator().manual_seed(0)), dim=0
        )
        kap = torch.tensor(k, dtype=torch.float64)
        t_ours = t_scipy = math.inf
        for rep in range(2):
            t0 = time.perf_counter()
            vmf.sample_vmf(mu, kap, n, generator=torch.Generator().manual_seed(rep))
            t_ours = min(t_ours, time.perf_counter() - t0)
            t0 = time.perf_counter()
            scipy.stats.vonmises_fisher(mu.numpy(), k).rvs(n, random_state=np.random.default_rng(rep))
            t_scipy = min(t_scipy, time.perf_counter() - t0)
        print(f"{d:>5} {k:>6g} {n:>7} | {n / t_ours:>11.3g} | {n / t_scipy:>11.3g} | {t_scipy / t_ours:>7.1f}")
    print("speedup = scipy time / sample_vmf time (both single-threaded on CPU by default).")
    print()


def _median_time(fn, repeats: int) -> float:
    """Median thread CPU time (time.thread_time: waiting for a core on a shared machine does not count) of fn()."""
    fn()  # warm-up: caches (our per-dimension kernel), allocator
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.thread_time()
        fn()
        times.append(time.thread_time() - t0)
    return statistics.median(times)


def _evals_per_s(fn, kappa: torch.Tensor, grad: bool, repeats: int) -> float:
    """Evaluations per second of fn(kappa, d) over all elements: the value alone (no autograd), or value + gradient
    (forward with requires_grad, then backward of the sum), as a training step uses it."""
    if grad:
        k = kappa.clone().requires_grad_()

        def step():
            (g,) = torch.autograd.grad(fn(k).sum(), k)
            return g
    else:

        def step():
            with torch.no_grad():
                return fn(kappa)

    return kappa.numel() / _median_time(step, repeats)


def table_throughput(dims: list[int], n: int, repeats: int, target: float = 1e7) -> None:
    print(f"(d) evaluations / s, float32 input of {n:.0e} kappas uniform in (0, 4d], {torch.get_num_threads()} thread(s), "
          f"median thread CPU time of {repeats} calls after 2 warm-up calls")  # fmt: skip
    print(f"{'d':>5} {'function':<22} {'mode':<8} | {'ours':>9} {'/ 1e7':>6} | {'original':<16} {'orig':>9} | "
          f"{'ours/orig':>9}")  # fmt: skip
    print("-" * 100)
    gen = torch.Generator().manual_seed(0)
    for d in dims:
        kappa = (torch.rand(n, generator=gen) * 4 * d).clamp_min(1e-3)
        rows = [
            ("log_vmf_norm", lambda k, d=d: vmf.log_vmf_norm(k, d), "Scott (+const)", lambda k, d=d: scott_log_norm(k, d)),
            ("", None, "EL-nivMF fit", lambda k, d=d: elnivmf_log_norm(k, d)),
            ("vmf_mean_resultant", lambda k, d=d: vmf.vmf_mean_resultant(k, d), "Scott ratio", lambda k, d=d: scott_ratio(k, d)),
        ]  # fmt: skip
        for grad in (False, True):
            mode = "val+grad" if grad else "value"
            ours = None
            for name, fn, orig_name, orig in rows:
                if fn is not None:
                    ours = _evals_per_s(fn, kappa, grad, repeats)
                    head = f"{d:>5} {name:<22} {mode:<8} | {ours:>9.3g} {ours / target:>6.2f} |"
                else:
                    head = f"{'':>5} {'':<22} {'':<8} | {'':>9} {'':>6} |"
                if orig_name.startswith("EL") and d not in (128, 512):
                    print(f"{head} {orig_name:<16} {'-':>9} | {'-':>9}")
                    continue
                o = _evals_per_s(orig, kappa, grad, repeats)
                print(f"{head} {orig_name:<16} {o:>9.3g} | {ours / o:>9.2f}")
    print("value: the function alone (torch.no_grad); val+grad: forward with requires_grad + backward of the sum, per")
    print("element (ours fuses A_d into log C_d's forward). '/ 1e7': ours against the 1e7 evaluations/s target.")
    print("ours/orig: throughput ratio (> 1: ours faster). Ours is exact (float32-rounded), the originals are not:")
    print("Scott's log C_d is right only up to a constant, the EL-nivMF fit only near its training range (table a).")
    print()

def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n_bias", type=int, default=1000000, help="draws per (d, k) in table (b)")
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 3, 16, 64, 128, 512, 1024, 4096])
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (1: same footing as scipy's single thread)"
    )
    parser.add_argument("--n_eval", type=int, default=1000000, help="kappas per call in table (d)")
    parser.add_argument("--eval_dims", type=int, nargs="+", default=[128, 512], help="dimensions of table (d)")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per cell of table (d) (median)")
    parser.add_argument("--tables", default="abcd", help="which tables to print (subset of 'abcd')")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, scipy {scipy.__version__}, {torch.get_num_threads()} threads, "
          f"load average {load:.2f}\n")  # fmt: skip
    t0 = time.perf_counter()
    if "a" in args.tables:
        table_accuracy(args.dims)
    if "b" in args.tables:
        table_bias(args.n_bias)
    if "c" in args.tables:
        table_speed()
    if "d" in args.tables:
        table_throughput(args.eval_dims, args.n_eval, args.repeats)
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
