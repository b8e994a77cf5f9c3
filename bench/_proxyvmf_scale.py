"""Scale of proxyvmf_panc: forward+backward time and peak extra memory, batched vs a naive per-image loop.

``proxyvmf_table()`` prints one row per (dataset scale, implementation), B = 64, d = 512, S = 5, CPU. Each case
runs in its own subprocess and reports its peak-RSS increase (resource.getrusage maxrss after the step minus
before, inputs already allocated). The naive loop is the original's structure: per image, an [S, C, d] tensor of
samples x stretched means, summed over d. At SOP scale it runs at B = 4 and the row also shows x16 (its graph
holds B*S*C*d floats, ~7.4 GB at B = 64).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = [("CUB", 100), ("CARS", 98), ("SOP", 11318)]

CHILD = r"""
import json, math, resource, sys, time
import torch
sys.path.insert(0, {root!r})
torch.set_num_threads(1)
from criteria._nivmf import nivmf_offset, stretched
from criteria.proxyvmf_panc import nivmf_mc_similarities
from utilities.vmf import sample_vmf
impl, C, B, d, S = {impl!r}, {C}, {B}, 512, 5
torch.manual_seed(0)
e = (torch.randn(B, d) * 3).requires_grad_()
v = torch.randn(C, d, requires_grad=True)
kappa = (torch.rand(C, d) * 10 + 1).requires_grad_()
temp = torch.tensor(0.01, requires_grad=True)
y = torch.randint(0, C, (B,))
def naive(samples):
    u = v / v.norm(dim=1, keepdim=True)
    rows = []
    for i in range(B):
        m, r = stretched(u, kappa.clamp_min(0.1))
        a = nivmf_offset(kappa.clamp_min(0.1), r, d)
        prod = (samples[:, i, None, :] * m[None]).sum(-1)  # [S, C, d] per image, as the original
        rows.append(torch.logsumexp((a[None] + prod) / temp, 0) - math.log(S))
    return torch.stack(rows)
def step():
    samples = sample_vmf(e / e.norm(dim=1, keepdim=True), e.norm(dim=1), S)
    u = v / v.norm(dim=1, keepdim=True)
    sims = naive(samples) if impl == "naive" else nivmf_mc_similarities(samples, u, kappa.clamp_min(0.1), temp)
    loss = (-sims[torch.arange(B), y] + torch.logsumexp(sims, 1)).mean()
    loss.backward()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter(); step(); dt = time.perf_counter() - t
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"time_s": dt, "extra_mb": (after - before) / 1024}}))
"""


def run_case(impl: str, n_classes: int, batch: int = 64) -> dict:
    code = CHILD.format(root=str(ROOT), impl=impl, C=n_classes, B=batch)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def proxyvmf_table() -> str:
    lines = ["| scale | C | implementation | fwd+bwd time (s) | peak extra memory (MB) |", "|---|---|---|---|---|"]
    for name, c in CASES:
        for impl in ("batched", "naive"):
            if impl == "naive" and c > 1000:  # B = 64 would hold ~7.4 GB: measure B = 4 and scale to 64
                r = run_case(impl, c, batch=4)
                if "error" not in r:
                    lines.append(f"| {name} | {c} | naive per-image loop, measured at B=4 | {r['time_s']:.3f} "
                                 f"(x16 = {16 * r['time_s']:.1f} at B=64) | {r['extra_mb']:.0f} "
                                 f"(x16 = {16 * r['extra_mb']:.0f} at B=64) |")  # fmt: skip
                    continue
            r = run_case(impl, c)
            if "error" in r:
                lines.append(f"| {name} | {c} | {impl} | error: {r['error']} | |")
            else:
                label = "batched (one matmul)" if impl == "batched" else "naive per-image loop"
                lines.append(f"| {name} | {c} | {label} | {r['time_s']:.3f} | {r['extra_mb']:.0f} |")
    table = "\n".join(lines)
    print("proxyvmf_panc forward+backward, B=64, d=512, S=5, CPU, 1 thread")
    print(table)
    return table


if __name__ == "__main__":
    proxyvmf_table()
