"""Training input pipeline throughput: the decode cache (``--decode_cache``) vs the Roth suite's PIL pipeline.

Writes CUB200-sized photo JPEGs (about 500 x 375, ~40 KB, ``datasets.synthetic.make_photo_folders``) in the
``cub200`` layout, builds the training split of ``--dataset cub200`` twice through ``datasets.select`` (the
suite's code: ``--decode_cache none`` and ``--decode_cache <tmp>``) and times the training loader of
``training.build.make_train_loader`` (``--kernels`` workers, batches of ``--bs`` images drawn at random), in
alternating rounds in one process:

* ``PIL (Roth suite)``: JPEG decode + RandomResizedCrop + flip + ToTensor + Normalize in the workers, float batches;
* ``decode cache``: crop + flip from the memory-mapped uint8 cache in the workers, uint8 batches.

Rows: ``decode cache``: the batches the loader delivers (what a GPU receives: there the uint8 -> float
conversion runs on the GPU); ``decode cache + conversion here``: plus that conversion on THIS machine's device
(the CPU, serially in the main process), i.e. CPU-only training. Ratios are against the PIL pipeline's rate in
the same run; the target is >= 3x for the loader. The cache's one-off build time and size are printed.

    python bench/train_throughput.py [--images 1200] [--workers 2] [--bs 112] [--batches 20] [--augmentation base]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import datasets  # noqa: E402
import parameters  # noqa: E402
from datasets.synthetic import make_photo_folders  # noqa: E402
from training.build import make_train_loader  # noqa: E402

TARGET = 3.0


def folder_mb(path: str) -> float:
    return sum(f.stat().st_size for f in pathlib.Path(path).rglob("*") if f.is_file()) / 2**20


def options(root: str, cache: str, args) -> object:
    return parameters.parse_args(["--dataset", "cub200", "--source_path", root, "--decode_cache", cache,
                                  "--augmentation", args.augmentation, "--kernels", str(args.workers),
                                  "--bs", str(args.bs), "--image_size", str(args.image_size), "--no_progress"])  # fmt: skip


def time_loader(train, opt, args, seed: int, convert: bool) -> float:
    """Images/s over ``args.batches`` batches after ``args.warmup`` warm-up batches (a new loader: its workers
    start during the warm-up); ``convert``: each uint8 batch is also converted on this machine's device (the
    CPU, in the main process) before the next is taken, as the training loop does."""
    rng = np.random.default_rng(seed)
    n_batches = args.warmup + args.batches
    batches = [rng.choice(len(train), args.bs, replace=False).tolist() for _ in range(n_batches)]
    loader = make_train_loader(train, batches, opt, torch.device("cpu"))
    transform = getattr(train, "device_transform", None) if convert else None
    it = iter(loader)
    for i in range(n_batches):
        if i == args.warmup:
            start = time.perf_counter()
        images, _, _ = next(it)
        if transform is not None and images.dtype == torch.uint8:
            images = transform(images)
    seconds = time.perf_counter() - start
    del it
    return args.batches * args.bs / seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1200, help="photos written (half of the classes train)")
    parser.add_argument("--classes", type=int, default=60)
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--height", type=int, default=375)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="--kernels")
    parser.add_argument("--bs", type=int, default=112)
    parser.add_argument("--batches", type=int, default=30, help="timed batches per round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches per round (worker start-up)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; the best of each is kept")
    parser.add_argument("--augmentation", default="base", choices=["base", "big", "adv", "red", "none"])
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--root", default="", help="folder for the photos and the cache (default: a temporary one)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    tmp = args.root or tempfile.mkdtemp(prefix="train_throughput_")
    root, cache = os.path.join(tmp, "data"), os.path.join(tmp, "cache")
    try:
        if not os.path.isdir(os.path.join(root, "cub200")):
            start = time.perf_counter()
            make_photo_folders(root, "cub200", n_classes=args.classes, per_class=max(1, args.images // args.classes),
                               width=args.width, height=args.height)  # fmt: skip
            print(f"wrote {args.images} JPEGs of about {args.width}x{args.height} ({folder_mb(root):.0f} MB) "
                  f"in {time.perf_counter() - start:.1f} s")  # fmt: skip
        pil = datasets.select("cub200", options(root, "none", args))["training"]
        found = os.path.isdir(cache) and bool(os.listdir(cache))
        start = time.perf_counter()
        data = datasets.select("cub200", options(root, cache, args))
        cached = data["training"]
        how = (
            "found (built before)"
            if found
            else f"built in {time.perf_counter() - start:.1f} s ({args.workers} workers)"
        )
        print(f"decode cache of the {len(cached)} training and {len(data['testing'])} test images: {how}, "
              f"{folder_mb(cache):.0f} MB")  # fmt: skip
        rows = [("PIL (Roth suite)", "float32 (normalised in the workers)", pil, "none", False),
                ("decode cache", "uint8", cached, cache, False),
                ("decode cache + conversion here", "uint8, normalised by the CPU in the main process", cached, cache,
                 True)]  # fmt: skip
        rates: dict[str, list[float]] = {name: [] for name, *_ in rows}
        for r in range(args.rounds):  # alternating rounds: a load change on the machine hits every row
            for name, _, train, decode_cache, convert in rows:
                rates[name].append(time_loader(train, options(root, decode_cache, args), args, r, convert))
        best = {name: max(values) for name, values in rates.items()}
        base = best["PIL (Roth suite)"]
        print(f"\ntraining loader throughput, --augmentation {args.augmentation}, --image_size {args.image_size}, "
              f"--kernels {args.workers}, --bs {args.bs}, {args.batches} batches after {args.warmup} warm-up, best of "
              f"{args.rounds} alternating rounds, {os.cpu_count()} CPUs, torch threads 1\n")  # fmt: skip
        print("| pipeline | batches | img/s | ratio vs PIL |")
        print("|---|---|---|---|")
        for name, batch, *_ in rows:
            print(f"| {name} | {batch} | {best[name]:.0f} | {best[name] / base:.2f}x |")
        ratio = best["decode cache"] / base
        print(f"\ntarget: decode cache loader >= {TARGET:g}x the PIL pipeline's: "
              f"{'PASS' if ratio >= TARGET else 'FAIL'} ({ratio:.2f}x; on a GPU the conversion runs there)")  # fmt: skip
        return 0
    finally:
        if not args.root:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
