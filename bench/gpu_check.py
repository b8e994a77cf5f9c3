"""One-GPU check, in about five minutes: mixed precision, GPU k-NN metrics, and training images/s of ResNet-50.

1. **Losses under AMP.** Every registered loss (the headline ones first: margin, triplet, multisimilarity,
   proxyanchor, vmf_softmax, proxyvmf_panc; ``--smoke``: those only) trains ``loss_steps`` steps of a small
   network (ResNet-18, 64 px, 8 classes x 4, the suite's optimiser groups) under bf16 and under fp16 autocast, as
   the training loop runs them (network under ``utilities.precision.autocast``, loss in float32 outside it, a
   GradScaler for fp16); before each step the float32 loss of the same weights and batch is the reference. PASS:
   every value finite and within 5e-2 (bf16: 8 significant bits) / 1e-2 (fp16: 11) of the reference (relative,
   or absolute below 1). Steps the fp16 GradScaler skipped (overflow while it calibrates) are counted.
2. **GPU k-NN metrics.** ``evaluation.compute_metrics`` of the retrieval metrics on the same embeddings
   (10,000 x 128, 500 classes) with ``device='cuda'``, with ``device='cpu'`` and, where faiss is installed, with
   faiss on the CPU (``backend='faiss'``). PASS: every metric within 2/N of each CPU value (a near-tie ordered
   differently by two float32 sums moves a metric by 1/N).
3. **Training images/s, ResNet-50 at 224 px, batch 128** (``--loss multisimilarity``, no miner), on CUB-sized
   photo JPEGs written here (about 500 x 375, ``datasets.synthetic.make_photo_folders``), through
   ``training.build.build_run`` and the training loop's step (device transfer, autocast forward, the finiteness
   check, float32 loss, backward, GradScaler step): (a) the Roth suite's pipeline: PIL decode + crop + float
   conversion in ``--kernels`` workers, float32, cuDNN deterministic; (b) this suite's fast path: decode cache,
   uint8 batches in pinned memory normalised on the GPU, bf16, channels-last, ``--cudnn_benchmark`` (and a row
   with ``--compile`` when it works); (c) the ceiling: the same network alone on random images already on the
   GPU (no loader, no loss). Steady state: ``--warmup`` untimed steps, then ``--steps`` timed; peak GPU memory of
   each row; ``first batch (s)``: a new loader's first batch (every epoch starts one, workers are not persistent).
   Targets: (b) >= 2x (a) and (b) >= 80% of (c) (the compiled row against the compiled ceiling).

Prints one table per part (Markdown), ``--json PATH`` writes every number. Exit code 1 when a check fails.
``--smoke`` runs every part on the CPU at toy sizes (a small CNN, 32 px, a few steps; throughput targets n/a):
the default test suite runs it. Weights are never downloaded (random init); faiss, wandb and pretrainedmodels
are not needed (without faiss, part 2 compares with the torch CPU path only and says so).

    python bench/gpu_check.py [--json out.json] [--no_compile]      # on one GPU, ~5 min
    python bench/gpu_check.py --smoke                               # on the CPU, under a minute
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import multiprocessing
import os
import pathlib
import platform
import shutil
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

try:  # only the k-NN cross-check uses it
    import faiss  # noqa: E402, F401

    HAS_FAISS = True
except ImportError:
    HAS_FAISS = False

import numpy as np  # noqa: E402
import torch  # noqa: E402

import architectures  # noqa: E402
import criteria  # noqa: E402
import datasets  # noqa: E402
import evaluation  # noqa: E402
import parameters  # noqa: E402
from datasets.synthetic import make_photo_folders  # noqa: E402
from training.build import (  # noqa: E402
    build_model_and_loss,
    build_optimizer,
    build_run,
    make_train_loader,
    param_groups,
)
from utilities import precision, seeding  # noqa: E402

HEADLINE = ["margin", "triplet", "multisimilarity", "proxyanchor", "vmf_softmax", "proxyvmf_panc"]
KNN_METRICS = ["e_recall@1", "e_recall@4", "c_recall@1", "c_recall@4", "map_at_r", "c_map_at_r", "r_precision",
               "c_r_precision", "mAP_1000", "c_mAP_1000"]  # fmt: skip
RTOL = {"bf16": 5e-2, "fp16": 1e-2}  # per step, relative (absolute below 1): bf16 keeps 8 significant bits, fp16 11

FULL = dict(loss_arch="resnet18", loss_size=64, loss_classes=8, loss_per_class=4, loss_steps=4, knn_n=10_000,
            knn_dim=128, knn_classes=500, arch="resnet50", size=224, bs=128, classes=128, per_class=8, width=500,
            height=375, warmup=8, steps=25, headline_only=False)  # fmt: skip
SMOKE = dict(loss_arch="mnist_cnn", loss_size=16, loss_classes=4, loss_per_class=2, loss_steps=2, knn_n=300,
             knn_dim=16, knn_classes=30, arch="mnist_cnn", size=32, bs=8, classes=8, per_class=4, width=60,
             height=45, warmup=1, steps=2, headline_only=True)  # fmt: skip


def relative(value: float, reference: float) -> float:
    return abs(value - reference) / max(1.0, abs(reference))


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------------------------- 1. losses under AMP


def train_loss(name: str, amp: str, cfg: dict, device: torch.device) -> dict:
    """``cfg['loss_steps']`` training steps of loss ``name`` under ``--amp amp`` as the training loop takes them;
    before each, the float32 loss of the same weights and batch (the reference)."""
    n_classes, per_class, size = cfg["loss_classes"], cfg["loss_per_class"], cfg["loss_size"]
    opt = parameters.parse_args(["--loss", name, "--arch", cfg["loss_arch"], "--not_pretrained", "--embed_dim", "64",
                                 "--bs", str(n_classes * per_class), "--samples_per_class", str(per_class),
                                 "--amp", amp, "--channels_last", "on" if device.type == "cuda" else "off"])  # fmt: skip
    seeding.set_seed(0)
    model, _, criterion = build_model_and_loss(opt, n_classes, (3, size, size), device)
    optimizer = build_optimizer(param_groups(model, criterion, opt), opt)
    mode = precision.resolve_amp(amp, device, cpu=True)  # --smoke: CPU autocast stands in for the GPU's
    scaler = torch.amp.GradScaler(device.type, enabled=mode == "fp16")
    generator = torch.Generator().manual_seed(1)
    labels = torch.arange(n_classes).repeat_interleave(per_class).to(device)
    values, reference, skipped = [], [], 0
    for step in range(cfg["loss_steps"]):
        images = torch.randn(len(labels), 3, size, size, generator=generator).to(device)
        with torch.no_grad():  # float32 on the same weights (BatchNorm's batch statistics in train mode)
            torch.manual_seed(100 + step)  # the loss's random draws (vMF samples, miners) are the same in both
            reference.append(criterion(model(images).float(), labels).item())
        with precision.autocast(amp, device, cpu=True):
            embeds = model(images)
        embeds = embeds.to(torch.promote_types(embeds.dtype, torch.float32))
        torch.manual_seed(100 + step)
        loss = criterion(embeds, labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        before = scaler.get_scale() if scaler.is_enabled() else None
        scaler.step(optimizer)
        scaler.update()
        skipped += int(before is not None and scaler.get_scale() < before)
        values.append(loss.detach().item())
    return {"values": values, "float32": reference, "skipped": skipped, "mode": mode}


def check_losses(cfg: dict, device: torch.device) -> tuple[list[list], bool, dict]:
    names = HEADLINE + [n for n in criteria.names() if n not in HEADLINE and not cfg["headline_only"]]
    rows, ok, record = [], True, {}
    for name in names:
        for amp in ("bf16", "fp16"):
            got = train_loss(name, amp, cfg, device)
            errors = [relative(v, r) for v, r in zip(got["values"], got["float32"])]
            finite = all(math.isfinite(v) for v in got["values"])
            passed = finite and max(errors) <= RTOL[amp]
            ok &= passed
            record[f"{name}/{amp}"] = {**got, "rel_errors": errors}
            rows.append([name, f"{amp} ({got['mode']})", " ".join(f"{v:.5g}" for v in got["float32"]),
                         " ".join(f"{v:.5g}" for v in got["values"]), f"{max(errors):.1e}", got["skipped"],
                         "PASS" if passed else "FAIL"])  # fmt: skip
    return rows, ok, record


# ------------------------------------------------------------------------------------------------ 2. GPU k-NN metrics


def check_knn(cfg: dict, device: torch.device) -> tuple[list[list], bool, dict]:
    rng = np.random.default_rng(0)
    n, dim, n_classes = cfg["knn_n"], cfg["knn_dim"], cfg["knn_classes"]
    labels = rng.integers(0, n_classes, size=n)
    centres = rng.normal(size=(n_classes, dim))
    embeddings = (centres[labels] + 1.5 * rng.normal(size=(n, dim))).astype(np.float32)
    timings, values = {}, {}
    references = {"cpu": "torch", "faiss": "faiss"} if HAS_FAISS else {"cpu": "torch"}
    for where, backend in {str(device): "torch", **references}.items():
        start = time.perf_counter()
        values[where] = evaluation.compute_metrics(embeddings, labels, KNN_METRICS,
                                                   device="cpu" if where == "faiss" else where, backend=backend)  # fmt: skip
        timings[where] = time.perf_counter() - start
    tolerance = 2.0 / n
    rows, ok = [], True
    for name in KNN_METRICS:
        a = values[str(device)][name]
        diff = max(abs(a - values[ref][name]) for ref in references)
        passed = diff <= tolerance
        ok &= passed
        rows.append([name, f"{a:.6f}", *(f"{values[ref][name]:.6f}" for ref in references), f"{diff:.1e}",
                     "PASS" if passed else "FAIL"])  # fmt: skip
    record = {"values": values, "seconds": timings, "tolerance": tolerance, "n": n}
    return rows, ok, record


# ------------------------------------------------------------------------------------------------ 3. images per second


def _one_class(job: tuple) -> None:
    part, c, per_class, width, height = job
    make_photo_folders(part, "cub200", n_classes=1, per_class=per_class, width=width, height=height, seed=c)


def write_photos(root: str, cfg: dict, workers: int) -> float:
    """``cfg['classes']`` class folders of CUB-sized JPEGs in the cub200 layout, written in parallel; seconds."""
    start = time.perf_counter()
    images = os.path.join(root, "cub200", "images")
    os.makedirs(images, exist_ok=True)
    parts = [(os.path.join(root, "parts", str(c)), c, cfg["per_class"], cfg["width"], cfg["height"])
             for c in range(cfg["classes"])]  # fmt: skip
    if workers > 1:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            pool.map(_one_class, parts)
    else:
        for job in parts:
            _one_class(job)
    for part, c, *_ in parts:
        (folder,) = os.listdir(os.path.join(part, "cub200", "images"))
        os.rename(
            os.path.join(part, "cub200", "images", folder), os.path.join(images, f"{c + 1:03d}.Photo_{c + 1:03d}")
        )
    shutil.rmtree(os.path.join(root, "parts"))
    return time.perf_counter() - start


def suite_options(root: str, cfg: dict, workers: int, extra: list[str]):
    return parameters.parse_args(["--dataset", "cub200", "--source_path", root, "--arch", cfg["arch"],
                                  "--not_pretrained", "--image_size", str(cfg["size"]), "--bs", str(cfg["bs"]),
                                  "--samples_per_class", "2", "--loss", "multisimilarity", "--kernels", str(workers),
                                  "--no_progress", "--embed_dim", "128", *extra])  # fmt: skip


def loop_step(run, images: torch.Tensor, labels: torch.Tensor) -> float:
    """One step as ``training.loop.Trainer.train_epoch`` takes it (single process)."""
    images, labels = run.images_to_device(images), labels.to(run.device)
    with precision.autocast(run.opt.amp, run.device):
        embeds = run.model(images)
    embeds = embeds.to(torch.promote_types(embeds.dtype, torch.float32))
    loss = run.criterion(embeds, labels)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    value = loss.detach().item()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    return value


def peak_memory(device: torch.device) -> str:
    return f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f}" if device.type == "cuda" else "n/a"


def reset_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def time_pipeline(opt, cfg: dict, device: torch.device) -> dict:
    """Images/s of the training step on the suite's loader (steady state), peak memory, first-batch latency."""
    reset_memory(device)
    run = build_run(opt)
    epochs = math.ceil((cfg["warmup"] + cfg["steps"]) / max(1, len(run.sampler)))
    batches = [list(map(int, b)) for _ in range(epochs) for b in run.sampler][: cfg["warmup"] + cfg["steps"]]
    loader = make_train_loader(run.data["training"], batches, opt, run.device)
    start = time.perf_counter()
    it = iter(loader)
    first = next(it)
    first_batch = time.perf_counter() - start
    loop_step(run, first[0], first[1])
    for _ in range(cfg["warmup"] - 1):
        images, labels, _ = next(it)
        loop_step(run, images, labels)
    sync(run.device)
    start = time.perf_counter()
    for _ in range(cfg["steps"]):
        images, labels, _ = next(it)
        loop_step(run, images, labels)
    sync(run.device)
    seconds = time.perf_counter() - start
    out = {"img_s": cfg["steps"] * cfg["bs"] / seconds, "step_ms": 1000 * seconds / cfg["steps"],
           "peak_mb": peak_memory(run.device), "first_batch_s": first_batch,
           "batch_dtype": str(first[0].dtype).replace("torch.", "")}  # fmt: skip
    del it, loader, run
    return out


def time_backbone(opt, cfg: dict, device: torch.device) -> dict:
    """The ceiling: the network alone (same settings) on random images already on the device."""
    reset_memory(device)
    seeding.set_seed(0)
    precision.configure_backends(opt, device)
    model = architectures.select(opt.arch, opt, input_shape=(3, cfg["size"], cfg["size"])).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=opt.lr)
    scaler = precision.grad_scaler(opt.amp, device)
    images = torch.randn(cfg["bs"], 3, cfg["size"], cfg["size"], device=device)

    def step():
        with precision.autocast(opt.amp, device):
            embeds = model(images)
        loss = embeds.float().square().mean()
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    for _ in range(cfg["warmup"]):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(cfg["steps"]):
        step()
    sync(device)
    seconds = time.perf_counter() - start
    out = {"img_s": cfg["steps"] * cfg["bs"] / seconds, "step_ms": 1000 * seconds / cfg["steps"],
           "peak_mb": peak_memory(device), "first_batch_s": None, "batch_dtype": "on device"}  # fmt: skip
    return out


def check_throughput(cfg: dict, device: torch.device, workers: int, compile_rows: bool, budget_s: float,
                     started: float, tmp: str) -> tuple[list[list], bool, dict]:  # fmt: skip
    root, cache = os.path.join(tmp, "data"), os.path.join(tmp, "cache")
    record = {"write_photos_s": write_photos(root, cfg, workers)}
    fast = ["--decode_cache", cache, "--amp", "bf16", "--channels_last", "on", "--cudnn_benchmark"]
    start = time.perf_counter()
    datasets.select("cub200", suite_options(root, cfg, workers, fast))  # builds the cache (train and test images)
    record["decode_cache_build_s"] = time.perf_counter() - start
    # (key, label, flags, network alone, the ceiling it is held against)
    configs = [("a", "(a) Roth: PIL + fp32", ["--decode_cache", "none", "--amp", "none", "--channels_last", "off"],
                False, None),
               ("b", "(b) fast: cache + uint8 + bf16 + channels-last", fast, False, "c"),
               ("c", "(c) ceiling: network alone, bf16 + channels-last", fast, True, None)]  # fmt: skip
    if compile_rows:
        configs += [("b+", "(b) fast + --compile", [*fast, "--compile"], False, "c+"),
                    ("c+", "(c) ceiling + --compile", [*fast, "--compile"], True, None)]  # fmt: skip
    results = {}
    for key, _label, extra, alone, _ in configs:
        if "--compile" in extra and time.perf_counter() - started > budget_s:
            results[key] = {"error": f"skipped: {budget_s:.0f} s budget spent before compiling (--budget_s)"}
            continue
        opt = suite_options(root, cfg, workers, extra)
        try:
            results[key] = time_backbone(opt, cfg, device) if alone else time_pipeline(opt, cfg, device)
        except Exception as err:  # noqa: BLE001 - a failing compile is a result, not a crash
            if "--compile" not in extra:
                raise
            results[key] = {"error": f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:120]}"}
        finally:
            torch._dynamo.reset()
    record["rows"] = {label: results[key] for key, label, *_ in configs}
    on_gpu = device.type == "cuda"
    a = results["a"]["img_s"]
    rows, ok = [], True
    for key, label, _, _, ceiling_key in configs:
        r = results[key]
        if "error" in r:
            rows.append([label, r["error"], *[""] * 8])
            continue
        ceiling = results.get(ceiling_key) if ceiling_key else None
        vs_c = f"{100 * r['img_s'] / ceiling['img_s']:.0f}%" if ceiling and "error" not in ceiling else "-"
        target_a = target_c = "-"
        if key.startswith("b") and not on_gpu:
            target_a = target_c = "n/a (CPU)"
        elif key.startswith("b"):
            target_a = "PASS" if r["img_s"] >= 2 * a else "FAIL"
            target_c = "n/a" if vs_c == "-" else ("PASS" if r["img_s"] >= 0.8 * ceiling["img_s"] else "FAIL")
            ok &= "FAIL" not in (target_a, target_c)
        first = "-" if r["first_batch_s"] is None else f"{r['first_batch_s']:.2f}"
        rows.append([label, r["batch_dtype"], f"{r['img_s']:.0f}", f"{r['step_ms']:.1f}", r["peak_mb"], first,
                     f"{r['img_s'] / a:.2f}x", vs_c, target_a, target_c])  # fmt: skip
    return rows, ok, record


def environment(device: torch.device) -> str:
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none (CPU)"
    bf16 = precision.bf16_supported(device) if device.type == "cuda" else "-"
    stub = "" if HAS_FAISS else "; faiss not installed (k-NN compared with the torch CPU path only)"
    return (f"python {platform.python_version()}, torch {torch.__version__}, GPU {gpu}, bf16 {bf16}, "
            f"{os.cpu_count()} CPUs{stub}")  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="toy sizes on the CPU (the test suite runs this)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workers", type=int, default=None, help="--kernels (default: CPUs - 2; --smoke: 0)")
    parser.add_argument("--no_compile", action="store_true", help="skip the --compile rows")
    parser.add_argument("--budget_s", type=float, default=170.0,
                        help="skip the --compile rows when this many seconds have passed before them")  # fmt: skip
    parser.add_argument("--only", nargs="+", choices=["losses", "knn", "throughput"], default=None)
    parser.add_argument("--json", default="", help="write every number to this file")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    device = torch.device(args.device)
    cfg = SMOKE if args.smoke else FULL
    workers = args.workers if args.workers is not None else (0 if args.smoke else max(1, (os.cpu_count() or 3) - 2))
    compile_rows = not args.no_compile and not args.smoke
    parts = args.only or ["losses", "knn", "throughput"]
    print(f"gpu_check{' --smoke' if args.smoke else ''}: {environment(device)}")
    if device.type != "cuda":
        print("no GPU: every part runs on the CPU (CPU autocast stands in for the GPU's); throughput targets n/a")
    ok, record = True, {"environment": environment(device), "smoke": args.smoke, "config": cfg}
    if "losses" in parts:
        rows, passed, record["losses"] = check_losses(cfg, device)
        ok &= passed
        print(f"\n1. losses under AMP: {cfg['loss_steps']} training steps ({cfg['loss_arch']}, {cfg['loss_size']} px), "
              f"each loss next to the float32 loss of the same weights and batch; PASS: finite and within "
              f"{RTOL['bf16']:g} (bf16) / {RTOL['fp16']:g} (fp16)\n")  # fmt: skip
        print(table(["loss", "amp (runs)", "float32 losses", "amp losses", "max rel diff", "fp16 steps skipped",
                     "check"], rows))  # fmt: skip
    if "knn" in parts:
        rows, passed, record["knn"] = check_knn(cfg, device)
        ok &= passed
        t = record["knn"]["seconds"]
        refs = [r for r in ("cpu", "faiss") if r in t]
        print(f"\n2. k-NN metrics on {device} vs {' and '.join(refs)} ({cfg['knn_n']} x {cfg['knn_dim']}, "
              f"{cfg['knn_classes']} classes; " + ", ".join(f"{w} {t[w]:.2f} s" for w in (str(device), *refs))
              + "; PASS: within 2/N of each)\n")  # fmt: skip
        print(table(["metric", str(device), *refs, "max |diff|", "check"], rows))
    if "throughput" in parts:
        tmp = tempfile.mkdtemp(prefix="gpu_check_")
        try:
            rows, passed, record["throughput"] = check_throughput(cfg, device, workers, compile_rows, args.budget_s,
                                                                  started, tmp)  # fmt: skip
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        ok &= passed
        th = record["throughput"]
        print(f"\n3. training images/s: {cfg['arch']} {cfg['size']} px, batch {cfg['bs']}, --kernels {workers}, "
              f"{cfg['warmup']} warm-up + {cfg['steps']} timed steps (photos written in {th['write_photos_s']:.1f} s, "
              f"decode cache built in {th['decode_cache_build_s']:.1f} s)\n")  # fmt: skip
        print(table(["pipeline", "batches", "img/s", "ms/step", "peak GPU MB", "first batch (s)", "vs (a)", "vs (c)",
                     "(b) >= 2x (a)", "(b) >= 80% (c)"], rows))  # fmt: skip
    print(f"\n{'all checks PASS' if ok else 'some checks FAIL'} ({time.perf_counter() - started:.0f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1, default=str)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
