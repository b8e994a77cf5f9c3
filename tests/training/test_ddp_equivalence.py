"""Two gloo processes train as one: for every registered loss (with its default miner), and for the triplet loss
with every miner that can feed it, the losses of each step and the model's and the loss's parameters after a few
SGD steps under ``torchrun --nproc_per_node 2`` equal those of a single process on the same global batches.

The reference is the same training step (``training.loop.Trainer.train_epoch``) in a process without a process
group. Both use a small BatchNorm-free MLP (train-mode BatchNorm statistics are per rank, a model matter outside
the loss) and float64 model and loss, so that summation-order noise stays far below the tolerance. Controls
with a per-rank loss (``global_batch = False``): for a mean of per-sample terms (softmax) averaging the ranks'
gradients is still exact; for a pair-based loss (triplet) it is not, and the comparison must see that.

Run as a script, this file is the worker: ``python tests/training/test_ddp_equivalence.py <out_dir>``
(under torchrun: one DDP run per case; plain: the single-process reference).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import batch_mining  # noqa: E402
import criteria  # noqa: E402

STEPS = 3
# digits: 5 train classes; 4 classes x 6 images per global batch, 2 whole classes per rank.
FLAGS = ["--dataset", "digits", "--bs", "24", "--samples_per_class", "6", "--embed_dim", "8", "--optim", "sgd",
         "--lr", "0.05", "--momentum", "0.9", "--scheduler", "none", "--n_epochs", "1", "--kernels", "0",
         "--no_progress", "--no_train_metrics", "--seed", "3"]  # fmt: skip
RTOL, ATOL = 1e-7, 1e-9  # float64 with a different summation order; a wrong scaling is off by O(1)

# Losses that cannot train the same on N processes as on one, with the reason. None: the loss and its miner run
# on the gathered global batch, and their random draws (random miners, vMF samples, ProxyAnchor negatives
# subsampling) come from a stream seeded per step, the same on every rank and for any N
# (``utilities.distributed.shared_rng``), so random losses are exact too.
NOT_EQUIVALENT: dict[str, str] = {}

TRIPLET_MINERS = [m for m in batch_mining.names() if batch_mining.output(m) in criteria.get_class("triplet").accepts]
# case -> (loss, extra flags, global_batch override or None)
CASES = {name: (name, [], None) for name in criteria.names()}
CASES |= {f"triplet+{m}": ("triplet", ["--batch_mining", m], None) for m in TRIPLET_MINERS}
CASES["softmax[per_rank]"] = ("softmax", [], False)  # per-sample mean: per-rank gradients average exactly
CASES["triplet[per_rank]"] = ("triplet", [], False)  # control: mining within each slice is another objective
MUST_DIFFER = {"triplet[per_rank]"}


class TinyNet(torch.nn.Module):
    """A BatchNorm-free MLP in float64 (digits images are float32 [1, 8, 8])."""

    def __init__(self, n_in: int, dim: int):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(n_in, 32), torch.nn.Tanh(), torch.nn.Linear(32, dim))

    def forward(self, x):
        return self.net(x.flatten(1).to(self.net[0].weight.dtype))


# --------------------------------------------------------------------------- the worker (one per process)
def worker(out_dir: str) -> None:
    torch.set_num_threads(1)
    import parameters
    from training import Hook, Trainer, build_run
    from training.build import build_optimizer, param_groups
    from utilities import distributed

    class StepLosses(Hook):  # rank 0 only; every rank's value is the same mean
        def __init__(self):
            self.values = []

        def after_step(self, trainer, epoch, step, loss):
            self.values.append(loss)

    rank = int(os.environ.get("RANK", "0"))
    results = {}
    for case, (loss, argv, global_batch) in CASES.items():
        opt = parameters.parse_args(["--save_path", str(Path(out_dir) / "runs" / case), *FLAGS, "--loss", loss,
                                     *argv])  # fmt: skip
        run = build_run(opt)
        # Built from the rank's own RNG stream (seeded --seed + rank, as in a real run); trainer.start() broadcasts
        # rank 0's, which is the single process's. No reseeding: the ranks' streams must differ, as they do.
        run.model = TinyNet(int(torch.tensor(run.input_shape).prod()), opt.embed_dim).double()
        if global_batch is not None:
            cls = type(run.criterion)
            run.criterion = type(f"{cls.__name__}PerRank", (cls,), {"global_batch": global_batch})(
                opt, run.miner, n_classes=run.n_classes
            )
        run.criterion.double()
        run.optimizer = build_optimizer(param_groups(run.model, run.criterion, opt), opt)
        run.scheduler = None
        run.sampler.n_batches = STEPS
        hook = StepLosses()
        trainer = Trainer(run, [hook])
        trainer.start()  # broadcast of rank 0's model and loss, the loss's prepare / warm start
        init = {"model": clone(run.model.state_dict()), "criterion": clone(run.criterion.state_dict())}
        batches = []
        draw = run.sampler.batches

        def record(rng, draw=draw, batches=batches):
            for b in draw(rng):
                batches.append(b.tolist())
                yield b

        run.sampler.batches = record
        trainer.train_epoch(1)
        results[case] = {"init": init, "model": clone(run.model.state_dict()),
                         "criterion": clone(run.criterion.state_dict()), "losses": hook.values,
                         "batches": batches}  # fmt: skip
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    distributed.cleanup()


def clone(state: dict) -> dict:
    return {k: v.detach().clone() for k, v in state.items()}


# --------------------------------------------------------------------------- the tests
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(single-process reference, [rank 0, rank 1] of the 2-process run): both launched at once."""
    base = tmp_path_factory.mktemp("ddp_equivalence")
    single, ddp = base / "single", base / "ddp"
    single.mkdir()
    ddp.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env |= {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    script = str(Path(__file__).resolve())
    procs = [
        subprocess.Popen([sys.executable, script, str(single)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True),
        subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          script, str(ddp)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True),
    ]  # fmt: skip
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-6000:]
    load = lambda path: torch.load(path, weights_only=False)  # noqa: E731
    return load(single / "rank0.pt"), [load(ddp / f"rank{r}.pt") for r in range(2)]


def max_relative_gap(a: dict, b: dict) -> float:
    """max |a - b| / (ATOL + RTOL |b|) over every tensor of two state dicts (<= 1: within tolerance)."""
    assert a.keys() == b.keys()
    gaps = [((x.double() - y.double()).abs() / (ATOL + RTOL * y.double().abs())).max().item()
            for x, y in ((a[k], b[k]) for k in a) if x.numel()]  # fmt: skip
    return max(gaps, default=0.0)


def test_every_case_ran(runs):
    single, (r0, r1) = runs
    assert set(single) == set(r0) == set(r1) == set(CASES)
    assert set(NOT_EQUIVALENT) <= set(criteria.names())


@pytest.mark.parametrize("case", sorted(CASES))
def test_two_processes_train_as_one(case, runs):
    single, (r0, r1) = runs
    ref, got, other = single[case], r0[case], r1[case]
    # Same start, same global batches (each rank trained on its half of them).
    assert got["batches"] == ref["batches"] == other["batches"] and len(ref["batches"]) == STEPS
    assert max_relative_gap(got["init"]["model"], ref["init"]["model"]) == 0
    assert max_relative_gap(got["init"]["criterion"], ref["init"]["criterion"]) == 0
    # Every rank ends with exactly the same parameters (gathered in the same order, reduced identically).
    for part in ("model", "criterion"):
        assert got[part].keys() == other[part].keys()
        assert all(torch.equal(got[part][k], other[part][k]) for k in got[part]), part
    # Training moved the model far more than the tolerance, so the comparison below can fail.
    assert max_relative_gap(ref["model"], ref["init"]["model"]) > 1e3
    if case in NOT_EQUIVALENT:
        return
    gaps = {
        "loss": max_relative_gap({"l": torch.tensor(got["losses"])}, {"l": torch.tensor(ref["losses"])}),
        "model": max_relative_gap(got["model"], ref["model"]),
        "criterion": max_relative_gap(got["criterion"], ref["criterion"]),
    }
    assert len(got["losses"]) == STEPS
    if case in MUST_DIFFER:
        assert max(gaps.values()) > 1e3, gaps
    else:
        assert max(gaps.values()) <= 1, gaps


if __name__ == "__main__":
    worker(sys.argv[1])
