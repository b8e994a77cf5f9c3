"""DDP with 2 gloo processes (``torchrun --standalone --nproc_per_node 2``): every rank ends
with the same model, the same sampler storage and the same control decisions (early stop,
ReduceLROnPlateau), which rank 0 alone takes.

Run as a script, this file is the per-rank worker: ``python tests/training/test_ddp.py
<out_dir> <scenario> [main.py flags]``; it trains and saves what the tests compare.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
COMMON = ["--no_progress", "--kernels", "0", "--no_train_metrics", "--evaluation_metrics", "e_recall@1"]


# --------------------------------------------------------------------------- the worker (one per rank)
def worker(out_dir: str, scenario: str, argv: list[str]) -> None:
    torch.set_num_threads(1)
    import evaluation
    import parameters
    from training import Trainer, build_run, default_hooks
    from training.plots import ProgressionPlot

    ProgressionPlot.plot = lambda self, trainer: None  # slow and not what is compared

    rank = int(os.environ["RANK"])
    if scenario == "rank_dependent_metrics":
        # Rank 0 never improves after its first evaluation; rank 1 always would. Only rank 0's
        # view may decide: early stop after --early_stop_patience, lr halved on every plateau.
        calls = []

        def fake_metrics(emb, labels, metrics, device="cpu", **kwargs):
            calls.append(1)
            return {m: 0.5 if rank == 0 else 0.1 * len(calls) for m in metrics}

        evaluation.compute_metrics = fake_metrics
    opt = parameters.parse_args(["--save_path", str(Path(out_dir) / "runs"), *COMMON, *argv])
    trainer = Trainer(build_run(opt), default_hooks(opt))
    run = trainer.run
    record = {"global_batches": []}
    if getattr(run.sampler, "requires_storage", False):
        init, batches = run.sampler.init_storage, run.sampler.batches

        def init_storage(emb):
            record["initial_storage"] = emb.clone()
            init(emb)

        def record_batches(rng):
            for batch in batches(rng):
                record["global_batches"].append(batch.copy())
                yield batch

        run.sampler.init_storage, run.sampler.batches = init_storage, record_batches
    trainer.fit()
    record |= {
        "storage": getattr(run.sampler, "storage", None),
        "model": run.model.state_dict(),
        "criterion": run.criterion.state_dict(),
        "epoch": trainer.state.epoch,
        "stop_reason": trainer.state.stop_reason,
        "lrs": [g["lr"] for g in run.optimizer.param_groups],
    }
    torch.save(record, Path(out_dir) / f"rank{rank}.pt")


# --------------------------------------------------------------------------- the tests
def run_ddp(tmp_path, scenario: str, *argv: str) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(Path(__file__).resolve()), str(tmp_path), scenario, *argv]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow  # two processes importing torch and training: about 20-30 s on 2 cores
def test_ddp_ranks_share_storage_and_model(tmp_path):
    r0, r1 = run_ddp(tmp_path, "plain", "--data_sampler", "greedy_coreset", "--data_batchmatch_bigbs", "120",
                     "--n_epochs", "2", "--data_idx_full_prec", "--bs", "40", "--samples_per_class", "4")  # fmt: skip
    assert r0["epoch"] == r1["epoch"] == 2
    # Same initial state everywhere (rank 0's initialisation is broadcast), averaged gradients.
    assert_same_state(r0["model"], r1["model"])
    assert_same_state(r0["criterion"], r1["criterion"])
    assert torch.equal(r0["initial_storage"], r1["initial_storage"])
    # Both ranks drew the same global batches and wrote all of them (both halves) into the storage.
    assert len(r0["global_batches"]) == 2 * 22 and all(
        (a == b).all() for a, b in zip(r0["global_batches"], r1["global_batches"])
    )
    assert torch.equal(r0["storage"], r1["storage"])
    # Rows of epoch 2's batches hold its train-mode embeddings, the others epoch 2's refresh:
    # all differ from the initial storage.
    assert not torch.isclose(r0["storage"], r0["initial_storage"]).all(dim=1).any()


@pytest.mark.slow
def test_ddp_early_stop_and_plateau_follow_rank0(tmp_path):
    r0, r1 = run_ddp(tmp_path, "rank_dependent_metrics", "--n_epochs", "6", "--early_stop_patience", "2",
                     "--scheduler", "plateau", "--plateau_patience", "0", "--lr", "0.001")  # fmt: skip
    # Rank 0: best at evaluation 1, no improvement at 2 and 3 -> stop after epoch 3 on both ranks.
    assert r0["epoch"] == r1["epoch"] == 3
    assert r0["stop_reason"] == r1["stop_reason"] and r0["stop_reason"].startswith("early stop")
    # ReduceLROnPlateau (patience 0) on rank 0's values: halved after epochs 2 and 3, on both ranks.
    assert r0["lrs"][0] == r1["lrs"][0] == pytest.approx(0.001 * 0.5**2)
    assert_same_state(r0["model"], r1["model"])


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    worker(sys.argv[1], sys.argv[2], sys.argv[3:])
