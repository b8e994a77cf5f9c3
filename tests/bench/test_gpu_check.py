"""``bench/gpu_check.py`` (the one-GPU check, docs/scale.md#training-fast-on-one-gpu) runs end to end: ``--smoke``
on the CPU, where faiss, wandb and pretrainedmodels are not importable (the GPU machine it is written for has none
of them), and ``bench/train_throughput.py`` at toy sizes (``-m slow``). Values are checked inside the scripts (exit code 1 on a
failed check); here only that they run and print their tables."""

from __future__ import annotations

import subprocess
import sys

import pytest

BLOCKED = ("import sys; sys.modules['faiss'] = None; sys.modules['wandb'] = None; sys.modules['pretrainedmodels'] = None; "
           "import runpy; sys.argv = ['bench/gpu_check.py', '--smoke', '--json', sys.argv[1]]; "
           "runpy.run_path('bench/gpu_check.py', run_name='__main__')")  # fmt: skip


def test_gpu_check_smoke_runs_without_faiss_wandb_pretrainedmodels(repo_root, tmp_path):
    import json

    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([sys.executable, "-c", BLOCKED, str(out)], cwd=repo_root, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout
    assert "all checks PASS" in text and "faiss not installed (k-NN compared with the torch CPU path only)" in text
    for part in ("1. losses under AMP", "2. k-NN metrics", "3. training images/s"):
        assert part in text
    for row in ("(a) Roth: PIL + fp32", "(b) fast: cache + uint8", "(c) ceiling"):
        assert row in text
    record = json.loads(out.read_text())
    assert {"losses", "knn", "throughput"} <= set(record)
    assert {"proxyvmf_panc/bf16", "vmf_softmax/fp16", "margin/bf16"} <= set(record["losses"])
    rows = record["throughput"]["rows"]
    assert all(r["img_s"] > 0 for r in rows.values())
    assert rows["(b) fast: cache + uint8 + bf16 + channels-last"]["batch_dtype"] == "uint8"


@pytest.mark.slow  # ~10 s, mostly imports; the loader code it times is tested in tests/datasets/test_decode_cache.py
def test_train_throughput_prints_its_table(repo_root, tmp_path):
    proc = subprocess.run([sys.executable, "bench/train_throughput.py", "--images", "32", "--classes", "8",
                           "--width", "60", "--height", "45", "--bs", "8", "--batches", "2", "--warmup", "1",
                           "--rounds", "1", "--workers", "0", "--image_size", "32", "--root", str(tmp_path)],
                          cwd=repo_root, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| PIL (Roth suite) | float32" in proc.stdout and "| decode cache | uint8 |" in proc.stdout
    assert "target: decode cache loader >= 3x" in proc.stdout
