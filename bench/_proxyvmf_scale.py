"""Scale of proxyvmf_panc: forward+backward time and peak extra memory of the real criterion vs a naive loop.

    python bench/_proxyvmf_scale.py                # B = 64, d = 512, S = 5, guidance_w 0.3, CPU, 1 thread
    python bench/_proxyvmf_scale.py --repeats 9    # more timed steps per case (median reported)

``proxyvmf_table()`` (also printed by ``bench/losses.py``) prints one row per (dataset scale, implementation):

* batched: ``criteria.select("proxyvmf_panc", opt, n_classes=C)`` with ``--loss_proxyvmf_guidance_w 0.3``, called as in training
  (``criterion(embeddings, labels).backward()``: vMF sampling, the one-matmul EL-nivMF similarity, NCA, ProxyAnchor
  guidance).
* naive: the same criterion's parameters through the original's per-image loop (``naive_panc_loss``:
  ``log_ppk_vmf_vec`` of the EL-nivMF code, exact log-normaliser): per image, S samples expanded to [S*C, d] next to the [S*C, d] stretched means and
  their cosine similarity, so the graph holds ~2*S*C*d floats per image. At SOP scale it runs at B = 4 and the row
  also shows x16 (B = 64 would hold ~15 GB).

Each case runs in a fresh subprocess (``MALLOC_MMAP_THRESHOLD_`` fixed, so freed blocks leave the RSS): one warm-up
step, gradients dropped, the peak-RSS mark reset (``/proc/self/clear_refs``), then ``repeats`` timed steps. Time =
median step; peak extra memory = peak RSS during the timed steps minus the RSS just before them (imports, model
inputs and criterion already resident, so the import baseline is subtracted). Needs Linux /proc.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = [("CUB", 100), ("CARS", 98), ("SOP", 11318)]
B, D, S, GUIDANCE_W = 64, 512, 5, 0.3
GB = 2**30

CHILD = r"""
import json, statistics, sys, time
sys.path.insert(0, {root!r})
import torch
torch.set_num_threads({threads})
import criteria, parameters
from bench._proxyvmf_scale import naive_panc_loss

impl, C, B, d, S = {impl!r}, {C}, {B}, {d}, {S}
opt = parameters.parse_args(["--loss", "proxyvmf_panc", "--embed_dim", str(d), "--loss_proxyvmf_n_samples", str(S),
                             "--loss_proxyvmf_guidance_w", {w!r}])
torch.manual_seed(0)
crit = criteria.select("proxyvmf_panc", opt, n_classes=C)
with torch.no_grad():
    crit.kappa.uniform_(1.0, 11.0)  # non-isotropic proxies
e = (torch.randn(B, d) * 3).requires_grad_()  # norms ~ 68: concentrated image vMFs
y = torch.randperm(C)[: B // 2].repeat_interleave(2) if C >= B // 2 else torch.randint(0, C, (B,))


def step():
    loss = crit(e, y) if impl == "batched" else naive_panc_loss(crit, e, y)
    loss.backward()
    e.grad = None
    for p in crit.parameters():
        p.grad = None


def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096


def hwm():
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM"))


step()  # warm-up: lazy allocations, code pages of the kernels used
open("/proc/self/clear_refs", "w").write("5")  # reset the peak-RSS mark
base = rss()
times = []
for _ in range({repeats}):
    t = time.perf_counter()
    step()
    times.append(time.perf_counter() - t)
print(json.dumps({{"time_s": statistics.median(times), "extra_bytes": hwm() - base, "repeats": len(times)}}))
"""


def naive_panc_loss(crit, e, y, log_norm=None, samples=None):
    """proxyvmf_panc's loss through the original's structure (criteria/proxyvmf_panc.py + utilities/misc.py
    log_ppk_vmf_vec of the EL-nivMF code), on ``crit``'s parameters: per image, S samples expanded to [S*C, d]
    next to the [S*C, d] stretched means and their cosine similarity, then the NCA loss and the ProxyAnchor
    guidance. ``log_norm(kappa, d)``: the log-normaliser (default the exact ``utilities.vmf.log_vmf_norm``;
    ``bench/vmf_losses.py`` passes the original's fit). ``samples`` [S, B, d]: fixed draws (default: drawn per
    image with ``utilities.vmf.sample_vmf``, as the original draws per image)."""
    import math

    import torch
    import torch.nn.functional as F

    from criteria._nivmf import oproxy_loss
    from utilities.vmf import log_vmf_norm, sample_vmf

    log_norm = log_vmf_norm if log_norm is None else log_norm
    n_b, d = e.shape
    n_c, n_s = crit.n_classes, crit.n_samples if samples is None else samples.shape[0]
    u, kappa = crit.directions(), crit.concentrations()
    mu, k = F.normalize(e, dim=1), e.norm(dim=1)
    rows = []
    for i in range(n_b):
        z = sample_vmf(mu[i : i + 1], k[i : i + 1], n_s) if samples is None else samples[:, i : i + 1]  # [S, 1, d]
        z = z.expand(n_s, n_c, d).reshape(-1, d)  # [S*C, d]
        m = kappa * u
        r = m.norm(dim=1)
        m_rep = m.unsqueeze(0).expand(n_s, -1, -1).reshape(-1, d)  # [S*C, d]
        cos = F.cosine_similarity(z, m_rep).reshape(n_s, n_c)
        logl = (log_norm(r, d) + r * cos + torch.log(kappa).sum(1) - torch.log(r)) / crit.temp
        rows.append(torch.logsumexp(logl - math.log(n_s), dim=0))
    sims = torch.stack(rows)
    loss = (-sims[torch.arange(n_b), y] + torch.logsumexp(sims, 1)).mean()
    if crit.guidance_w:
        cos_g = F.normalize(e, dim=1) @ crit.directions().T
        loss = loss + crit.guidance_w * oproxy_loss(cos_g, y, **crit.oproxy_kw)
    return loss


def run_case(impl: str, n_classes: int, batch: int = B, repeats: int = 5, threads: int = 1) -> dict:
    code = CHILD.format(root=str(ROOT), impl=impl, C=n_classes, B=batch, d=D, S=S, w=str(GUIDANCE_W),
                        repeats=repeats, threads=threads)  # fmt: skip
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1200, env=env)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def proxyvmf_table(repeats: int = 5, threads: int = 1) -> str:
    if not Path("/proc/self/clear_refs").exists():
        print("bench/_proxyvmf_scale.py: needs Linux /proc (peak-RSS reset); skipped")
        return ""
    lines = ["| scale | C | implementation | B | fwd+bwd median (s) | peak extra memory (MB) | within 1 GB |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, c in CASES:
        for impl in ("batched", "naive"):
            scaled = impl == "naive" and c > 1000  # B = 64 would need ~15 GB: measure B = 4, scale x16
            batch = 4 if scaled else B
            r = run_case(impl, c, batch=batch, repeats=max(3, repeats // 2) if scaled else repeats, threads=threads)
            label = "criterion (batched, one matmul)" if impl == "batched" else "naive per-image loop (original)"
            if "error" in r:
                lines.append(f"| {name} | {c} | {label} | {batch} | error: {r['error']} | | |")
                continue
            t, mb = r["time_s"], r["extra_bytes"] / 2**20
            ok = "yes" if r["extra_bytes"] * (16 if scaled else 1) <= GB else "no"
            if scaled:
                lines.append(f"| {name} | {c} | {label} | 4 (x16 = 64) | {t:.3f} (x16 = {16 * t:.1f}) | "
                             f"{mb:.0f} (x16 = {16 * mb:.0f}) | {ok} |")  # fmt: skip
            else:
                lines.append(f"| {name} | {c} | {label} | {batch} | {t:.3f} | {mb:.0f} | {ok} |")
    table = "\n".join(lines)
    print(f"proxyvmf_panc forward+backward (guidance_w {GUIDANCE_W}), B={B}, d={D}, S={S}, CPU, {threads} thread(s), "
          f"median of {repeats} steps after a warm-up, one fresh process per row")  # fmt: skip
    print(table)
    return table


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="timed steps per case (median reported)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = ap.parse_args()
    proxyvmf_table(args.repeats, args.threads)
