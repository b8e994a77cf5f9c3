"""Forward + backward time of the vMF losses next to the same loss with the original's approximate normaliser.

    python bench/vmf_losses.py                # C 100, B 64, S 10, d 128 and 512, float32, 1 thread (about 1 min)
    python bench/vmf_losses.py --steps 201    # more timed rounds per row (median reported)
    python bench/vmf_losses.py --clock wall   # gate on the wall-clock ratio instead of thread CPU time
    python bench/vmf_losses.py --no_fail      # exit 0 even when a ratio exceeds 1.0
    python bench/vmf_losses.py --losses vmf_softmax --dims 128   # one loss, one dimension

Each row times ``loss.backward()`` of (a) this suite's criterion (exact normaliser, ``criteria.select``) and (b) the
same loss formula on the same parameters and inputs, written here in the original's structure with the original's
approximation of the normaliser:

* vmf_softmax: google-research/vmf_embeddings methods/methods.py ``VMFSoftmax.__call__``: class normalisers
  ``log_vmf_normalizer_approx(||w_c||^2)``, posterior normalisers of the [B, S, C] squared norms
  ``||w_c||^2 + beta^2 + 2 beta z^T w_c`` through the same approximation, ``log(sum(exp(.)))`` over the classes, and
  the mean resultant lengths of the linear term by ``ratio_of_bessel_approx`` (``bench/vmf.py`` holds both).
* proxyvmf_panc: ExplainableML/Probabilistic_Deep_Metric_Learning criteria/proxyvmf_panc.py with
  utilities/misc.py ``log_ppk_vmf_vec``: the per-image loop of ``bench/_proxyvmf_scale.naive_panc_loss`` with the
  original's quadratic fit ``approx_log_cp`` (``bench/vmf.py: elnivmf_log_norm``) as log-normaliser.
* proxyvmf: the same code's criteria/proxyvmf.py ``log_sim``: per image, the closed-form log PPK with
  ``approx_log_cp`` (here on this suite's isotropic proxy vMF(m_c / r_c, r_c), the loss ``proxyvmf`` computes).

Inputs: "given samples" passes the same S unit samples [S, B, d] to both sides (the loss alone); "sampling" draws
them inside the timed step with ``utilities.vmf.sample_vmf`` on both sides (the sampler is the same on both sides:
the comparison is about the normaliser; the originals' own samplers are not reimplemented here). ours/orig is the
median over ``--steps`` rounds of the per-round ratio ours/orig (each round times one step of each side back to
back, the order alternating, so that load from other processes hits both alike and its drifts cancel), after
``--warmup`` untimed steps per side; the ms columns are each side's median step. Slow references (the per-image
loops) get fewer rounds: about ``--budget`` seconds of them, at least 5. The gate (``--max_ratio`` 1.0, exit
status 1 unless ``--no_fail``) uses ``--clock``: ``cpu`` (default) is the thread's CPU time (time.thread_time, immune
to waiting for a core on a shared machine), ``wall`` is time.perf_counter; both are printed.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pathlib
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import criteria  # noqa: E402
import parameters  # noqa: E402
from criteria._nivmf import stretched  # noqa: E402
from utilities.vmf import sample_vmf  # noqa: E402

_ref = importlib.import_module("bench.vmf")  # the originals' approximations (bench/vmf.py)
naive_panc_loss = importlib.import_module("bench._proxyvmf_scale").naive_panc_loss
C, B, S = 100, 64, 10
MAX_RATIO = 1.0


# ----------------------------------------------------------------------------------------------------- originals
def original_vmf_softmax(crit, embeddings, labels, samples=None):
    """vmf_embeddings methods.py VMFSoftmax.__call__ on ``crit``'s parameters (scale, class weights, temperature)."""
    z = crit.scale * embeddings
    weights = crit.class_weights
    beta = 1.0 / torch.exp(crit.temp)
    batch_size, dim = z.shape
    kappa_z = z.norm(dim=1, keepdim=True)
    exp_z = z / kappa_z * _ref.scott_ratio(kappa_z, dim)  # utils.vmf_projection
    w_y = weights[labels]
    norm_y = w_y.norm(dim=1, keepdim=True)
    exp_c = w_y / norm_y * _ref.scott_ratio(norm_y, dim)
    second_term = beta * (exp_z * exp_c).sum(dim=1)
    if samples is None:
        samples = sample_vmf(z / kappa_z, kappa_z.squeeze(1), crit.n_samples)  # [S, B, d] (the original: rsample)
    n_samples = samples.shape[0]
    z_s = beta * samples.permute(1, 0, 2)  # [B, S, d]
    kappa_w_sq = (weights**2).sum(dim=1)
    log_c_d_kappa_w = _ref.scott_log_norm_sq(kappa_w_sq, dim)
    log_c_d_denom = _ref.scott_log_norm_sq(
        kappa_w_sq.unsqueeze(0).unsqueeze(0)
        + beta**2
        + 2.0 * torch.mm(z_s.reshape(-1, dim), weights.T).view(batch_size, n_samples, -1),
        dim,
    )
    first_term = torch.log(torch.exp(log_c_d_kappa_w.unsqueeze(0).unsqueeze(0) - log_c_d_denom).sum(dim=2)).mean(1)
    return (first_term - second_term).mean()


def original_proxyvmf(crit, embeddings, labels):
    """Probabilistic_Deep_Metric_Learning criteria/proxyvmf.py (per-image ``log_sim``, closed-form log PPK with the
    quadratic-fit normaliser), on ``crit``'s proxies read as vMF(m_c / r_c, r_c) as ``proxyvmf`` reads them."""
    d = embeddings.shape[1]
    m, r = stretched(crit.directions(), crit.concentrations())
    mu2 = F.normalize(m / r[:, None], dim=1)
    kappa2 = r[:, None]
    mu1_all, kappa1_all = F.normalize(embeddings, dim=1), torch.norm(embeddings, dim=1)
    rows = []
    for i in range(embeddings.shape[0]):
        mu1, kappa1 = mu1_all[i].unsqueeze(0), kappa1_all[i]
        kappa3 = torch.linalg.norm(kappa1 * mu1 + kappa2 * mu2, dim=1).unsqueeze(1)
        ppk = crit.rho * (_ref.elnivmf_log_norm(kappa1, d) + _ref.elnivmf_log_norm(kappa2, d))
        ppk = (ppk - _ref.elnivmf_log_norm(crit.rho * kappa3, d)) / crit.temp
        rows.append(ppk.squeeze(1))
    sims = torch.stack(rows)
    return torch.mean(-sims[range(len(labels)), labels] + torch.logsumexp(sims, dim=1))


# ----------------------------------------------------------------------------------------------------- cases
def vmf_softmax_case(d: int, given: bool):
    opt = parameters.parse_args(["--loss", "vmf_softmax", "--embed_dim", str(d), "--loss_vmf_softmax_n_samples",
                                 str(S)])  # fmt: skip
    torch.manual_seed(0)
    crit = criteria.select("vmf_softmax", opt, n_classes=C)
    e = torch.randn(B, d).requires_grad_()  # scale 1 (prepare() not run): kappa_z ~ sqrt(d), kappa_c ~ r/(1-r^2) d
    y = torch.randint(0, C, (B,))
    if given:
        x = crit.scale * e.detach()
        smp = sample_vmf(F.normalize(x, dim=1), x.norm(dim=1), S, generator=torch.Generator().manual_seed(1))
        return (lambda: crit(e, y, samples=smp)), (lambda: original_vmf_softmax(crit, e, y, smp)), [e, *crit.parameters()]
    return (lambda: crit(e, y)), (lambda: original_vmf_softmax(crit, e, y)), [e, *crit.parameters()]


def nivmf_case(name: str, d: int, given: bool):
    extra = ["--loss_proxyvmf_guidance_w", "0.3"] if name == "proxyvmf_panc" else []
    opt = parameters.parse_args(["--loss", name, "--embed_dim", str(d), "--loss_proxyvmf_n_samples", str(S), *extra])
    torch.manual_seed(0)
    crit = criteria.select(name, opt, n_classes=C)
    with torch.no_grad():
        crit.kappa.uniform_(1.0, 11.0)  # non-isotropic proxies (as bench/_proxyvmf_scale.py)
    e = (torch.randn(B, d) * 3).requires_grad_()  # norms 3 sqrt(d): concentrated image vMFs
    y = torch.randperm(C)[: B // 2].repeat_interleave(2)
    params = [e, *crit.parameters()]
    if name == "proxyvmf":
        return (lambda: crit(e, y)), (lambda: original_proxyvmf(crit, e, y)), params
    fit = _ref.elnivmf_log_norm
    if given:
        smp = sample_vmf(F.normalize(e.detach(), dim=1), e.detach().norm(dim=1), S,
                         generator=torch.Generator().manual_seed(1))  # fmt: skip
        return (lambda: crit(e, y, samples=smp)), (lambda: naive_panc_loss(crit, e, y, fit, smp)), params
    return (lambda: crit(e, y)), (lambda: naive_panc_loss(crit, e, y, fit)), params


# ----------------------------------------------------------------------------------------------------- timing
def time_pair(ours, orig, params, steps: int, warmup: int, budget_s: float) -> dict:
    """Medians (ms) of forward+backward per side, wall and thread-CPU clock, the sides alternating step by step."""

    def step(fn):
        fn().backward()
        for p in params:
            p.grad = None

    for _ in range(warmup):
        step(ours)
        step(orig)
    t0 = time.perf_counter()
    step(orig)
    n = max(5, min(steps, int(budget_s / max(time.perf_counter() - t0, 1e-6))))  # slow references: fewer steps
    times = {("ours", "wall"): [], ("orig", "wall"): [], ("ours", "cpu"): [], ("orig", "cpu"): []}
    for i in range(n):
        for side, fn in (("ours", ours), ("orig", orig)) if i % 2 == 0 else (("orig", orig), ("ours", ours)):
            w0, c0 = time.perf_counter(), time.thread_time()
            step(fn)
            c1, w1 = time.thread_time(), time.perf_counter()
            times[(side, "wall")].append(w1 - w0)
            times[(side, "cpu")].append(c1 - c0)
    out = {f"{side}_{clock}": statistics.median(v) * 1e3 for (side, clock), v in times.items()}
    for clock in ("wall", "cpu"):  # paired: the two steps of a round ran back to back (load drifts cancel)
        out[f"ratio_{clock}"] = statistics.median(a / b for a, b in zip(times[("ours", clock)], times[("orig", clock)]))
    out["steps"] = n
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--losses", nargs="+", default=["vmf_softmax", "proxyvmf_panc", "proxyvmf"],
                        choices=["vmf_softmax", "proxyvmf_panc", "proxyvmf"], help="which losses to time")
    parser.add_argument("--dims", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--steps", type=int, default=101, help="timed steps per side (median reported)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per side first")
    parser.add_argument("--budget", type=float, default=4.0, help="seconds of timed reference steps per row at most")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu", help="clock of the ratio gate")
    parser.add_argument("--max_ratio", type=float, default=MAX_RATIO, help="flag rows slower than this x original")
    parser.add_argument("--no_fail", action="store_true", help="exit 0 even when a row is flagged")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), C={C} B={B} S={S}, float32, "
          f"{os.cpu_count()} cores, load average {load:.2f} at start")  # fmt: skip
    print(f"forward+backward: median ms per step and median per-round ratio ours/orig ('n' rounds); gate on the "
          f"{args.clock} clock")  # fmt: skip
    head = (f"{'loss':<14} {'d':>4} {'inputs':<14} {'n':>3} | {'ours cpu':>9} {'orig cpu':>9} {'ratio':>6} | "
            f"{'ours wall':>9} {'orig wall':>9} {'ratio':>6}")  # fmt: skip
    print(head)
    print("-" * len(head))
    rows = []
    for name in args.losses:
        for d in args.dims:
            for given in (True, False) if name != "proxyvmf" else (False,):
                if name == "vmf_softmax":
                    ours, orig, params = vmf_softmax_case(d, given)
                else:
                    ours, orig, params = nivmf_case(name, d, given)
                r = time_pair(ours, orig, params, args.steps, args.warmup, args.budget)
                ratio_cpu, ratio_wall = r["ratio_cpu"], r["ratio_wall"]
                ratio = ratio_cpu if args.clock == "cpu" else ratio_wall
                inputs = "given samples" if given else ("sampling" if name != "proxyvmf" else "closed form")
                slow = ratio > args.max_ratio
                rows.append((name, d, inputs, ratio, slow))
                mark = f"  << over {args.max_ratio:g}" if slow else ""
                print(f"{name:<14} {d:>4} {inputs:<14} {r['steps']:>3} | {r['ours_cpu']:>9.2f} {r['orig_cpu']:>9.2f} "
                      f"{ratio_cpu:>6.2f} | {r['ours_wall']:>9.2f} {r['orig_wall']:>9.2f} {ratio_wall:>6.2f}{mark}",
                      flush=True)  # fmt: skip
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average {load:.2f} at the end (other processes share the cores: see the cpu columns)")
    slow = [f"{n} d={d} {i} ({ratio:.2f}x)" for n, d, i, ratio, s in rows if s]
    print(f"over {args.max_ratio:g}x the original: " + (", ".join(slow) if slow else "none"))
    if slow and not args.no_fail:
        sys.exit(1)


if __name__ == "__main__":
    main()
