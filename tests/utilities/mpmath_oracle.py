"""mpmath reference values for the vMF tests and benchmark (test/bench helper, never used at run time).

log I_v(x) comes from the integral representation (DLMF 10.32.2)

    I_v(x) = (x/2)^v / (sqrt(pi) Gamma(v + 1/2)) int_0^pi exp(x cos t) sin(t)^{2v} dt,   v > -1/2,

integrated with mpmath's tanh-sinh quadrature in log space, with breakpoints around the integrand's peak. Unlike
``mpmath.besseli`` (whose hypergeometric series can stall for orders near 2047 and x in 2.7e4..6.5e4), the work per
value is bounded (about 0.05 s at 30 digits) for every order and argument; ``besseli_log`` (the independent check
of the quadrature itself) runs under a wall-clock bound.
"""

from __future__ import annotations

import functools
import math
import signal
from contextlib import contextmanager

import mpmath as mp

DPS = 30


@contextmanager
def time_bound(seconds: float):
    """Raise TimeoutError if the block runs longer than ``seconds`` (main thread, Unix)."""

    def _raise(signum, frame):
        raise TimeoutError(f"mpmath oracle exceeded {seconds} s")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@functools.cache
def log_iv(v: float, x: float) -> mp.mpf:
    """log I_v(x) for v >= 0, x > 0, by quadrature of DLMF 10.32.2 at DPS digits."""
    with mp.workdps(DPS):
        v, x = mp.mpf(v), mp.mpf(x)
        cos0 = x / (v + mp.sqrt(v * v + x * x))  # peak of x cos t + 2v log sin t
        t0 = mp.acos(cos0)

        def g(t):
            return x * mp.cos(t) + (2 * v * mp.log(mp.sin(t)) if v != 0 else 0)

        g0 = g(t0)
        curv = x * cos0 + (2 * v / mp.sin(t0) ** 2 if v != 0 else 0)
        sig = 1 / mp.sqrt(curv)
        pts = {mp.mpf(0), +mp.pi}
        pts.update(min(max(t0 + k * sig, mp.mpf(0)), +mp.pi) for k in (-60, -20, -6, 0, 6, 20, 60))
        integral = mp.quad(lambda t: mp.exp(g(t) - g0), sorted(pts))
        return v * mp.log(x / 2) - mp.log(mp.pi) / 2 - mp.loggamma(v + mp.mpf(1) / 2) + g0 + mp.log(integral)


def besseli_log(v: float, x: float, seconds: float = 5.0) -> mp.mpf:
    """log of mpmath.besseli (independent check of ``log_iv``), bounded in time."""
    with time_bound(seconds), mp.workdps(DPS):
        return mp.log(mp.besseli(v, x, maxterms=10**6))


@functools.cache
def log_vmf_norm(kappa: float, d: int) -> mp.mpf:
    """log C_d(k) = v log k - (d/2) log(2 pi) - log I_v(k); at k = 0 minus the log area of S^{d-1}."""
    with mp.workdps(DPS):
        if kappa == 0:
            return mp.loggamma(mp.mpf(d) / 2) - mp.log(2) - mp.mpf(d) / 2 * mp.log(mp.pi)
        v = mp.mpf(d) / 2 - 1
        return v * mp.log(kappa) - mp.mpf(d) / 2 * mp.log(2 * mp.pi) - log_iv(d / 2 - 1, kappa)


@functools.cache
def mean_resultant(kappa: float, d: int) -> mp.mpf:
    """A_d(k) = I_{d/2}(k) / I_{d/2-1}(k) (0 at k = 0)."""
    with mp.workdps(DPS):
        if kappa == 0:
            return mp.mpf(0)
        return mp.exp(log_iv(d / 2, kappa) - log_iv(d / 2 - 1, kappa))


def mean_resultant_derivative(kappa: float, d: int) -> mp.mpf:
    """dA/dk = 1 - A^2 - (d - 1) A / k (= Var[mu^T x]); 1/d at k = 0."""
    with mp.workdps(DPS):
        if kappa == 0:
            return mp.mpf(1) / d
        a = mean_resultant(kappa, d)
        return 1 - a * a - (d - 1) * a / mp.mpf(kappa)


def rel_err(approx: float, exact) -> float:
    """|approx - exact| / max(1, |exact|) (the accuracy measure of docs/methods.md)."""
    exact = float(exact) if not isinstance(exact, mp.mpf) else exact
    return float(abs(mp.mpf(approx) - exact) / max(1, abs(exact))) if math.isfinite(approx) else math.inf
