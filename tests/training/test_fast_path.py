"""The fast training path (docs/scale.md#training-fast-on-one-gpu) inside a run: the decode cache's uint8 batches
reach the network normalised on the device, and a run through a full-size cache (``--decode_cache_size full``,
bit-exact images, the same random draws) trains EXACTLY as the uncached Roth pipeline, whether its cache was built
in that run or found; the GradScaler is enabled exactly for fp16 on CUDA."""

from __future__ import annotations

import csv

import pytest
import torch

from datasets._base import IMAGENET_MEAN, IMAGENET_STD
from datasets._cache import DeviceNormalize
from datasets.synthetic import make_photo_folders
from training import build_run
from utilities import precision

FLAGS = ["--dataset", "cub200", "--arch", "mnist_cnn", "--image_size", "16", "--bs", "8", "--kernels", "0",
         "--loss", "multisimilarity", "--no_progress", "--n_epochs", "2", "--evaluation_metrics", "e_recall@1",
         "c_recall@1", "--seed", "3"]  # fmt: skip


@pytest.fixture(scope="module")
def photo_root(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("photos")
    return make_photo_folders(str(root), "cub200", n_classes=8, per_class=4, width=40, height=30)


def read_rows(path) -> list[dict]:
    with open(path) as f:
        return [{k: v for k, v in row.items() if k != "time" and not k.endswith("_time")} for row in csv.DictReader(f)]


def test_uint8_batches_are_normalised_on_the_device(make_opt, photo_root, tmp_path):
    run = build_run(make_opt(*FLAGS, "--source_path", photo_root, "--decode_cache", str(tmp_path)))
    assert isinstance(run.batch_transform, DeviceNormalize)
    images, _, indices = next(iter(run.train_loader))
    assert images.dtype == torch.uint8 and images.shape == (8, 3, 16, 16)
    ready = run.images_to_device(images)
    assert ready.dtype == torch.float32 and ready.device == run.device
    assert torch.equal(ready, DeviceNormalize(IMAGENET_MEAN, IMAGENET_STD)(images))
    floats = torch.randn(2, 3, 16, 16)
    assert run.images_to_device(floats) is floats or torch.equal(run.images_to_device(floats), floats)
    assert not run.scaler.is_enabled()  # CPU: no loss scaling


def test_full_size_cache_trains_exactly_as_the_uncached_pipeline(run_main, photo_root, tmp_path, no_plots):
    """Same seed: the same losses and metrics, row for row, without a cache, with one built during the run, and
    with the one found (building it draws no random number)."""
    cache = str(tmp_path / "cache")
    rows = {}
    for name, extra in [("plain", []), ("built", ["--decode_cache", cache, "--decode_cache_size", "full"]),
                        ("found", ["--decode_cache", cache, "--decode_cache_size", "full"])]:  # fmt: skip
        assert run_main(*FLAGS, "--source_path", photo_root, "--group", name, *extra) == 0
        folder = run_main.save_path / "cub200" / f"{name}_s3"
        rows[name] = (read_rows(folder / "metrics_training.csv"), read_rows(folder / "metrics_testing.csv"))
    assert rows["plain"][0] and rows["plain"][0][0]["loss"]
    assert rows["built"] == rows["plain"] and rows["found"] == rows["plain"]


def test_grad_scaler_only_for_fp16_on_cuda(monkeypatch):
    assert not precision.grad_scaler("fp16", "cpu").is_enabled()
    assert not precision.grad_scaler("bf16", "cpu").is_enabled()
    assert not precision.grad_scaler("none", "cpu").is_enabled()
    assert precision.resolve_amp("bf16", "cpu") == "none" and precision.resolve_amp("bf16", "cpu", cpu=True) == "bf16"
    # A GPU without bf16: --amp bf16 runs fp16 autocast, so the scaler must be on.
    monkeypatch.setattr(precision, "bf16_supported", lambda device: False)
    assert precision.resolve_amp("bf16", "cuda") == "fp16"
    monkeypatch.setattr(precision, "bf16_supported", lambda device: True)
    assert precision.resolve_amp("bf16", "cuda") == "bf16" and precision.resolve_amp("fp16", "cuda") == "fp16"


def test_cudnn_benchmark_only_on_cuda_when_asked(make_opt, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    precision.configure_backends(make_opt("--cudnn_benchmark"), "cpu")
    precision.configure_backends(make_opt(), "cuda")
    assert torch.backends.cudnn.benchmark is False and torch.backends.cudnn.deterministic is True
    precision.configure_backends(make_opt("--cudnn_benchmark"), "cuda")
    assert torch.backends.cudnn.benchmark is True and torch.backends.cudnn.deterministic is False


def test_an_unwritable_decode_cache_is_one_line_and_exit_2(run_main, photo_root, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    code = run_main(*FLAGS, "--source_path", photo_root, "--decode_cache", str(blocker / "cache"), "--dry_run")
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert f"--decode_cache {blocker}" in err and "--decode_cache none" in err
