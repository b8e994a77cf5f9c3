"""Memory and time of ``evaluation.compute_metrics`` on a SOP-sized embedding set.

Generates N x D float32 embeddings (default 60,000 x 512) in 11,318-ish classes of 2..12
items (SOP's test split: 60,502 images, 11,316 classes), runs the metrics SOP runs log,
and prints the values, the wall time of each stage, and the peak RSS against the size of
the embedding matrix. Not a test: ``python bench/eval_memory.py [--n 10000] [--device cuda]``.
"""

from __future__ import annotations

import argparse
import pathlib
import resource
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from evaluation import compute_metrics  # noqa: E402

DEFAULT_METRICS = ["e_recall@1", "e_recall@2", "e_recall@4", "c_recall@1", "map_at_r", "c_map_at_r", "mAP_1000", "nmi"]
SOP_IMAGES, SOP_CLASSES = 60_000, 11_318


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB (ru_maxrss is KB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def sop_like(n: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n points in round(n * 11318 / 60000) classes of 2..12 items (SOP's mean ~5.3), Gaussian blobs."""
    rng = np.random.default_rng(seed)
    n_classes = max(1, round(n * SOP_CLASSES / SOP_IMAGES))
    extra = n - 2 * n_classes  # items beyond the 2 every class has, at most 10 per class
    sizes = 2 + rng.binomial(10, extra / (10 * n_classes), n_classes)
    while (gap := n - sizes.sum()) != 0:  # fix the total one item at a time, within 2..12
        step = int(np.sign(gap))
        room = np.flatnonzero((sizes < 12) if step > 0 else (sizes > 2))
        sizes[rng.choice(room, min(abs(gap), len(room)), replace=False)] += step
    labels = np.repeat(np.arange(n_classes), sizes)
    x = 0.5 * rng.standard_normal((n_classes, dim), dtype=np.float32)[labels]  # weak signal: metrics below 1
    x += rng.standard_normal((n, dim), dtype=np.float32)
    return x, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=SOP_IMAGES, help="number of embeddings")
    parser.add_argument("--dim", type=int, default=512, help="embedding dimension")
    parser.add_argument("--device", default="cpu", help="'cpu' (faiss) or 'cuda' (torch k-NN)")
    parser.add_argument("--metrics", nargs="+", default=DEFAULT_METRICS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    baseline = peak_rss_mb()
    start = time.perf_counter()
    x, y = sop_like(args.n, args.dim, args.seed)
    generate_s = time.perf_counter() - start
    after_data = peak_rss_mb()
    timings: dict[str, float] = {}
    start = time.perf_counter()
    values = compute_metrics(x, y, args.metrics, device=args.device, timings=timings)
    total_s = time.perf_counter() - start
    peak = peak_rss_mb()

    matrix_mb = x.nbytes / 2**20
    print(f"embeddings: {args.n} x {args.dim} float32 = {matrix_mb:.1f} MB, {len(np.unique(y))} classes "
          f"(sizes {np.bincount(y).min()}..{np.bincount(y).max()}), device {args.device}")  # fmt: skip
    print("\n| metric | value |\n|---|---|")
    for name, value in values.items():
        print(f"| {name} | {value:.4f} |")
    print("\n| stage | wall s |\n|---|---|")
    print(f"| generate data | {generate_s:.2f} |")
    for stage, seconds in timings.items():
        print(f"| {stage} | {seconds:.2f} |")
    print(f"| compute_metrics total | {total_s:.2f} |")
    print("\n| memory | MB |\n|---|---|")
    print(f"| peak RSS before data (interpreter + torch + faiss) | {baseline:.0f} |")
    print(f"| peak RSS after generating data | {after_data:.0f} |")
    print(f"| peak RSS after compute_metrics | {peak:.0f} |")
    print(f"| embedding matrix | {matrix_mb:.0f} |")
    print(f"| compute_metrics peak increase / matrix size | {(peak - after_data) / matrix_mb:.2f}x |")


if __name__ == "__main__":
    main()
