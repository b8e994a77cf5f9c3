"""Speed, memory and values of ``evaluation.compute_metrics`` on a SOP-sized set, against references timed in the run.

Generates N x D float32 embeddings (default SOP's test split: 60,502 x 512 in 11,316 classes of 2..12 items,
Gaussian blobs with a weak class signal) and times, in one process, on the same threads:

* ``products + top-k``: the floor of the retrieval metrics: the two N x N x D products (raw and L2-normalised
  embeddings) in row blocks, each followed by ``torch.topk`` of k + 1 (self included), k = what the metrics need
  (1000 for mAP@1000): no self removal, no label work, no metric;
* ``compute_metrics``: every default retrieval metric of both geometries (Recall@1/2/4, MAP@R, R-precision,
  mAP@1000, Euclidean and cosine), with its stages (the one k-NN search, the metrics);
* the same metrics through the faiss backend (the suite's previous path): its time and its values next to ours;
* ``k-means alone``: one faiss k-means at the metrics' settings (20 iterations, k = number of classes, seeded);
* ``compute_metrics`` of ``nmi`` and ``f1`` (that k-means + the final assignment + the scores);
* with ``--pml``: pytorch-metric-learning's ``AccuracyCalculator`` on the metrics it has (both geometries).

Prints the table (seconds, ratio to the products + top-k or to the k-means alone, peak RSS increase of the
stage: the peak-RSS mark is reset before each stage where Linux allows) and the metric values with their
largest differences. Not a test: ``python bench/evaluation.py [--quick] [--device cuda] [--pml]``.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import resource
import sys
import time

import faiss
import numpy as np
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from evaluation import compute_metrics  # noqa: E402
from evaluation.clustering import N_ITER  # noqa: E402

RETRIEVAL = ["e_recall@1", "e_recall@2", "e_recall@4", "c_recall@1", "c_recall@2", "c_recall@4",
             "map_at_r", "c_map_at_r", "r_precision", "c_r_precision", "mAP_1000", "c_mAP_1000"]  # fmt: skip
CLUSTERING = ["nmi", "f1"]
SOP = {"n": 60_502, "dim": 512, "classes": 11_316}
QUICK = {"n": 6_000, "dim": 128, "classes": 1_122}
PML_NAMES = {"recall@1": "precision_at_1", "map_at_r": "mean_average_precision_at_r", "r_precision": "r_precision",
             "mAP_1000": "mean_average_precision"}  # fmt: skip


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    """The peak RSS since the last ``reset_peak`` (VmHWM), or of the whole process where /proc is missing."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM"))
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def sop_like(n: int, dim: int, n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n points in n_classes classes of 2..12 items (SOP: 60,502 images, 11,316 classes), Gaussian blobs."""
    if not 2 * n_classes <= n <= 12 * n_classes:
        raise SystemExit(f"--n {n} must lie in [2, 12] x --classes {n_classes}")
    rng = np.random.default_rng(seed)
    sizes = 2 + rng.binomial(10, (n - 2 * n_classes) / (10 * n_classes), n_classes)
    while (gap := n - sizes.sum()) != 0:  # fix the total one item at a time, within 2..12
        step = int(np.sign(gap))
        room = np.flatnonzero((sizes < 12) if step > 0 else (sizes > 2))
        sizes[rng.choice(room, min(abs(gap), len(room)), replace=False)] += step
    labels = rng.permutation(np.repeat(np.arange(n_classes), sizes))
    x = 0.5 * rng.standard_normal((n_classes, dim), dtype=np.float32)[labels]  # weak signal: metrics below 1
    x += rng.standard_normal((n, dim), dtype=np.float32)
    return x, labels


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def products_topk(x: np.ndarray, k: int, device: torch.device) -> None:
    """The floor: per geometry, the N x N x D product in ~64 MB row blocks (256 MB on CUDA), each followed by
    ``torch.topk`` of k + 1 (the block buffer reused, as ours)."""
    xt = torch.from_numpy(x).to(device)
    n = len(xt)
    rows = max(1, min(n, ((1 << 26) if device.type == "cuda" else (1 << 24)) // n))
    buffer = torch.empty((rows, n), device=device)
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    with torch.no_grad():
        for xs, cosine in ((xt, False), (torch.nn.functional.normalize(xt, dim=1), True)):
            sq = (xs * xs).sum(1)
            for s in range(0, n, rows):
                block = torch.mm(xs[s : s + rows], xs.T, out=buffer[: min(rows, n - s)])
                if not cosine:
                    block.mul_(-2.0).add_(sq)
                torch.topk(block, k + 1, dim=1, largest=cosine)
    torch.set_float32_matmul_precision(previous)
    sync(device)


def kmeans_alone(x: np.ndarray, n_classes: int, seed: int) -> None:
    """One faiss k-means at the metrics' settings (``evaluation.clustering.kmeans``), training only."""
    n, d = x.shape
    km = faiss.Kmeans(d, n_classes, niter=N_ITER, seed=seed, min_points_per_centroid=1,
                      max_points_per_centroid=max(1, -(-n // n_classes)), gpu=faiss.get_num_gpus() > 0,
                      verbose=False)  # fmt: skip
    km.train(x)


def pml_values(x: np.ndarray, y: np.ndarray, k: int, device: torch.device) -> dict[str, float]:
    """pytorch-metric-learning's AccuracyCalculator (faiss k-NN) on the metrics it has, both geometries."""
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import FaissKNN

    out = {}
    for prefix, xs, index in (("", x, faiss.IndexFlatL2), ("c_", x / np.linalg.norm(x, axis=1, keepdims=True),
                                                            faiss.IndexFlatIP)):  # fmt: skip
        for k_pml, wanted in (("max_bin_count", ("recall@1", "map_at_r", "r_precision")), (k, ("mAP_1000",))):
            calc = AccuracyCalculator(include=tuple(PML_NAMES[w] for w in wanted), k=k_pml, device=device,
                                      knn_func=FaissKNN(index_init_fn=index))  # fmt: skip
            ref = calc.get_accuracy(torch.from_numpy(xs), torch.from_numpy(y))
            for w in wanted:
                name = (("c" if prefix else "e") + "_" + w) if w == "recall@1" else prefix + w
                out[name] = ref[PML_NAMES[w]]
    return out


def stage(rows: list, name: str, fn, reference: str | None = None):
    """Run ``fn`` with the peak-RSS mark reset; append (name, wall s, CPU s, peak increase MB, reference)."""
    exact_peak = reset_peak()
    before = rss_mb() if exact_peak else peak_mb()
    start, cpu = time.perf_counter(), time.process_time()
    value = fn()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    rows.append((name, seconds, cpu, peak_mb() - before, reference))
    print(f"  {name}: {seconds:.1f} s (CPU {cpu:.1f} s)", flush=True)
    return value, seconds


def row_is(name: str, prefix: str) -> bool:
    return name.startswith(prefix)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=None, help=f"items (default {SOP['n']}, --quick {QUICK['n']})")
    parser.add_argument("--dim", type=int, default=None, help=f"dimension (default {SOP['dim']})")
    parser.add_argument("--classes", type=int, default=None, help=f"classes (default {SOP['classes']})")
    parser.add_argument("--quick", action="store_true", help="a small set for a smoke run")
    parser.add_argument("--device", default="cpu", help="'cpu' or 'cuda' (k-NN and products; falls back to CPU)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch and faiss threads")
    parser.add_argument("--no_faiss", action="store_true", help="skip the faiss backend (the previous path)")
    parser.add_argument("--no_kmeans", action="store_true", help="skip the k-means rows")
    parser.add_argument("--pml", action="store_true", help="also time pytorch-metric-learning (about 7.6 GB at SOP)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    size = QUICK if args.quick else SOP
    n, dim, n_classes = (args.n or size["n"]), (args.dim or size["dim"]), (args.classes or size["classes"])
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available: running on the CPU")
        device = torch.device("cpu")
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)

    x, y = sop_like(n, dim, n_classes, args.seed)
    k = min(1000, n - 1)  # what the metrics need: mAP@1000 (R_max <= 11 here)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} threads"
    print(f"{n} x {dim} float32 ({x.nbytes / 2**20:.0f} MB), {n_classes} classes of 2..12, k = {k}, {where}; "
          f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)  # fmt: skip
    rows: list = []
    floor_name = f"products + top-k (torch, 2 geometries, k + 1 = {k + 1})"
    stage(rows, floor_name, lambda: products_topk(x, k, device))
    timings: dict[str, float] = {}
    ours, _ = stage(rows, f"compute_metrics: {len(RETRIEVAL)} retrieval metrics, 2 geometries",
                    lambda: compute_metrics(x, y, RETRIEVAL, device=device, timings=timings), "floor")  # fmt: skip
    rows.append(("  of which the k-NN search (both geometries, one Gram block)", timings["knn"], None, None, "floor"))
    rows.append(("  of which the metrics (labels, average precisions)", timings["metrics"], None, None, "floor"))
    columns = {"ours": ours}
    if not args.no_faiss:
        columns["faiss path"], _ = stage(rows, "compute_metrics, backend='faiss' (the previous path)",
                                         lambda: compute_metrics(x, y, RETRIEVAL, backend="faiss"), "floor")  # fmt: skip
    if args.pml:
        columns["PML"], _ = stage(rows, "pytorch-metric-learning AccuracyCalculator (its 8 of the 12)",
                                  lambda: pml_values(x, y, k, device), "floor")  # fmt: skip
    if not args.no_kmeans:
        stage(rows, f"k-means alone (faiss, {N_ITER} iterations, k = {n_classes})",
                      lambda: kmeans_alone(x, n_classes, args.seed))  # fmt: skip
        clustering, _ = stage(rows, "compute_metrics: nmi + f1", lambda: compute_metrics(x, y, CLUSTERING), "kmeans")
        columns["ours"] = {**ours, **clustering}

    print(f"\nload average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print("\n| stage | seconds | CPU seconds | ratio to products + top-k (CPU) | ratio to k-means alone (CPU) "
          "| peak RSS increase (MB) |\n|---|---|---|---|---|---|")  # fmt: skip
    base = {r[0]: r for r in rows if r[0].startswith(("products", "k-means alone"))}
    floor_row = next(r for name, r in base.items() if name.startswith("products"))
    km_row = next((r for name, r in base.items() if name.startswith("k-means")), None)
    for name, seconds, cpu, peak, reference in rows:
        against = floor_row if reference == "floor" or row_is(name, "products") else None
        against = km_row if reference == "kmeans" or row_is(name, "k-means alone") else against
        ratio = "" if against is None else f"{seconds / against[1]:.2f}"
        if against is not None and cpu is not None:
            ratio += f" ({cpu / against[2]:.2f})"
        cells = ["", ""]
        cells[0 if against is floor_row else 1] = ratio
        cpu_cell = "" if cpu is None else f"{cpu:.1f}"
        peak_cell = "" if peak is None else f"{peak:.0f}"
        print(f"| {name} | {seconds:.1f} | {cpu_cell} | {cells[0]} | {cells[1]} | {peak_cell} |")

    names = list(columns["ours"])
    print("\n| metric | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns))
    for name in names:
        cells = [f"{col[name]:.6f}" if name in col else "" for col in columns.values()]
        print(f"| {name} | " + " | ".join(cells) + " |")
    for other in [c for c in columns if c != "ours"]:
        diffs = [abs(columns["ours"][m] - columns[other][m]) for m in names if m in columns[other]]
        print(f"largest |ours - {other}| over {len(diffs)} metrics: {max(diffs):.3g}")


if __name__ == "__main__":
    main()
