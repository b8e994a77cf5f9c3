"""Training loop: the training row of every epoch, --warmup, --decay_exclude_1d, and
reproducibility with data-loader workers (their seeding)."""

from __future__ import annotations

import csv
import random

import numpy as np
import pytest
import torch
from test_main import FAST, only_run_dir, run_main

import parameters
from datasets._base import TensorImageDataset
from utilities import seeding
from utilities.trainer import Trainer, build_optimizer, eval_loader, model_param_groups


@pytest.fixture
def no_plots(monkeypatch):
    """Progression plots cost about a second each and are not what these tests check."""
    monkeypatch.setattr(Trainer, "plot", lambda self: None)


def read_csv(path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------- training row per epoch
def test_training_row_every_epoch_with_eval_every(tmp_path, monkeypatch, no_plots):
    stats = {}
    original = Trainer.train_epoch

    def spy(self, epoch):
        stats[epoch] = original(self, epoch)
        return stats[epoch]

    monkeypatch.setattr(Trainer, "train_epoch", spy)
    assert run_main([*FAST, "--n_epochs", "3", "--eval_every", "2"], tmp_path) == 0
    run = only_run_dir(tmp_path)
    rows = read_csv(run / "metrics_training.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    for row in rows:  # loss, lr and epoch time of every epoch, as train_epoch returned them
        epoch = int(row["epoch"])
        assert float(row["loss"]) == pytest.approx(stats[epoch]["loss"], rel=1e-12)
        assert float(row["lr"]) == stats[epoch]["lr"] == 1e-3
        assert float(row["time"]) == pytest.approx(stats[epoch]["time"], rel=1e-12)
    # Evaluated epochs (every 2nd and the last) also carry the metrics; epoch 1 has none.
    assert rows[0]["e_recall@1"] == "" and rows[1]["e_recall@1"] != "" and rows[2]["e_recall@1"] != ""
    assert [int(r["epoch"]) for r in read_csv(run / "metrics_testing.csv")] == [2, 3]


def test_training_row_every_epoch_without_train_metrics(tmp_path, no_plots):
    assert run_main([*FAST, "--n_epochs", "3", "--eval_every", "2", "--no_train_metrics"], tmp_path) == 0
    rows = read_csv(only_run_dir(tmp_path) / "metrics_training.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert all(float(r["loss"]) > 0 and "e_recall@1" not in r for r in rows)


# --------------------------------------------------------------------------- warm-up
def snapshot(trainer) -> dict[str, dict[str, torch.Tensor]]:
    model = trainer.model
    head = {id(p) for p in model.head_parameters()}
    named = dict(model.named_parameters())
    return {
        "backbone": {n: p.detach().clone() for n, p in named.items() if id(p) not in head},
        "head": {n: p.detach().clone() for n, p in named.items() if id(p) in head},
        "criterion": {n: p.detach().clone() for n, p in trainer.criterion.named_parameters()},
        "bn_stats": {n: b.clone() for n, b in model.named_buffers() if "running" in n},
    }


def changed(before: dict, after: dict) -> dict[str, bool]:
    return {k: not torch.equal(before[k], after[k]) for k in before}


def test_warmup_freezes_backbone_and_its_batchnorm_statistics(tmp_path, monkeypatch, no_plots):
    snaps = {}
    original = Trainer.train_epoch

    def spy(self, epoch):
        before = snapshot(self)
        out = original(self, epoch)
        after = snapshot(self)
        snaps[epoch] = {part: changed(before[part], after[part]) for part in before}
        snaps[epoch]["bn_modes"] = [m.training for m in self.backbone_batchnorms()]
        return out

    monkeypatch.setattr(Trainer, "train_epoch", spy)
    assert run_main([*FAST, "--warmup", "1", "--no_train_metrics"], tmp_path) == 0
    warm, after = snaps[1], snaps[2]
    assert warm["bn_stats"] and len(warm["bn_modes"]) == 3  # the small CNN's 3 BatchNorm layers
    # Warm-up epoch: the backbone (weights and BN statistics) is untouched, head and loss train.
    assert not any(warm["backbone"].values()), warm["backbone"]
    assert not any(warm["bn_stats"].values()), warm["bn_stats"]
    assert all(warm["head"].values()) and all(warm["criterion"].values())
    assert warm["bn_modes"] == [False, False, False]
    # Afterwards everything trains again, BatchNorm in train mode.
    assert all(after["backbone"].values()) and all(after["bn_stats"].values())
    assert all(after["head"].values()) and after["bn_modes"] == [True, True, True]


def test_without_warmup_backbone_and_statistics_move_in_epoch_one(tmp_path, monkeypatch, no_plots):
    """The control of the test above: the same run without --warmup changes them at once."""
    snaps = {}
    original = Trainer.train_epoch

    def spy(self, epoch):
        before = snapshot(self)
        out = original(self, epoch)
        snaps[epoch] = {part: changed(before[part], v) for part, v in snapshot(self).items()}
        return out

    monkeypatch.setattr(Trainer, "train_epoch", spy)
    assert run_main([*FAST, "--n_epochs", "1", "--no_train_metrics"], tmp_path) == 0
    assert all(snaps[1]["backbone"].values()) and all(snaps[1]["bn_stats"].values())


# --------------------------------------------------------------------------- --decay_exclude_1d
def make_trainer(*argv: str) -> Trainer:
    return Trainer(parameters.parse_args(["--no_progress", "--kernels", "0", *argv]))


def group_of(optimizer) -> dict[int, dict]:
    return {id(p): g for g in optimizer.param_groups for p in g["params"]}


@pytest.mark.parametrize("loss", ["margin", "proxyanchor"])
def test_decay_exclude_1d_param_groups(loss):
    args = ["--loss", loss, "--decay", "0.01", "--fc_lr", "0.05", "--lr", "0.002"]
    plain = make_trainer(*args)
    excl = make_trainer(*args, "--decay_exclude_1d")
    plain_groups, excl_groups = group_of(plain.optimizer), group_of(excl.optimizer)
    head = {n for n, p in excl.model.named_parameters() if id(p) in {id(q) for q in excl.model.head_parameters()}}
    n_exempt = 0
    for (name, p), (_, p0) in zip(excl.model.named_parameters(), plain.model.named_parameters()):
        g, g0 = excl_groups[id(p)], plain_groups[id(p0)]
        assert g0["weight_decay"] == 0.01  # without the flag the whole model decays
        assert g["lr"] == g0["lr"] == (0.05 if name in head else 0.002)  # each part keeps its lr
        exempt = name.endswith(".bias") or p.ndim <= 1
        n_exempt += exempt
        assert g["weight_decay"] == (0.0 if exempt else 0.01), name
        assert g["name"] == g0["name"] + ("_no_decay" if exempt else "")
    # the small CNN: 3 conv/linear biases + 3 BN (weight, bias) + the head bias
    assert n_exempt == 3 + 3 * 2 + 1
    # Criterion parameters: ProxyAnchor's proxies ([C, d]) keep their decay, the margin's beta none.
    for (_, p), (_, p0) in zip(excl.criterion.named_parameters(), plain.criterion.named_parameters()):
        assert excl_groups[id(p)]["weight_decay"] == plain_groups[id(p0)]["weight_decay"]
        assert excl_groups[id(p)]["lr"] == plain_groups[id(p0)]["lr"]
    assert len(excl.optimizer.param_groups) == len(plain.optimizer.param_groups) + 2


def test_decay_exclude_1d_sgd_step_by_hand():
    """One SGD step on zero gradients: decayed weights shrink, exempt ones stay. By hand (first
    step, Nesterov): buf = wd p, step = wd p + momentum buf, so p <- p (1 - lr wd (1 + momentum))."""
    opt = parameters.parse_args(["--decay_exclude_1d", "--decay", "0.1", "--lr", "0.5", "--optim", "sgd",
                                 "--momentum", "0.9", "--nesterov"])  # fmt: skip
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2, bias=False))
    groups = model_param_groups(model, opt)
    optimizer = build_optimizer(groups, opt)
    assert all(g["momentum"] == 0.9 and g["nesterov"] for g in optimizer.param_groups)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for name, p in model.named_parameters():
        factor = 1.0 if name in {"0.bias", "1.weight", "1.bias"} else 1 - 0.5 * 0.1 * 1.9
        torch.testing.assert_close(p.detach(), before[name] * factor, rtol=0, atol=1e-7)


# --------------------------------------------------------------------------- workers: seeding, reproducibility
def noisy_getitem(self, index):
    """The digits images plus noise drawn in the data-loader worker from numpy, python and torch."""
    x = self.image01(index)
    x = x + 0.05 * torch.from_numpy(np.random.standard_normal(x.shape)).float() + 0.01 * random.random()
    x = x + 0.05 * torch.randn(x.shape)
    return self.transform(x), int(self.labels[index]), int(index)


def test_worker_seeding_is_used_by_the_train_and_eval_loaders(monkeypatch):
    """Each worker draws its own numpy/python stream, new every epoch, the same for the same seed.
    (PyTorch seeds numpy and python per worker itself; ``seeding.worker_init_fn`` re-seeds them
    from the worker's torch seed. A worker_init_fn seeding every worker alike fails here.)"""

    def draw(self, index):
        return torch.tensor([np.random.random(), random.random()], dtype=torch.float64), 0, int(index)

    def run() -> dict[str, list[torch.Tensor]]:
        trainer = make_trainer("--kernels", "2", "--seed", "3")  # seeds every RNG, as a run does
        loaders = {"train": lambda: trainer.train_loader, "eval": lambda: eval_loader(trainer.data["evaluation"],
                                                                                      trainer.opt)}  # fmt: skip
        with monkeypatch.context() as m:
            m.setattr(TensorImageDataset, "__getitem__", draw)  # after the trainer read the image shape
            return {k: [torch.cat([b[0] for b in loader()]) for _epoch in range(2)] for k, loader in loaders.items()}

    first, second = run(), run()
    trainer = make_trainer("--kernels", "2")
    assert trainer.train_loader.worker_init_fn is seeding.worker_init_fn
    assert eval_loader(trainer.data["testing"], trainer.opt).worker_init_fn is seeding.worker_init_fn
    for which in first:
        values = torch.cat(first[which])
        assert len(values) > 1000, which
        assert len(torch.unique(values[:, 0])) == len(values), which  # no stream shared by workers or epochs
        assert len(torch.unique(values[:, 1])) == len(values), which
        assert all(torch.equal(a, b) for a, b in zip(first[which], second[which])), which  # same seed, same draws


@pytest.mark.slow  # about 20 s: three runs whose loaders start 2 workers per pass
def test_same_seed_same_result_with_workers(tmp_path, monkeypatch, no_plots):
    monkeypatch.setattr(TensorImageDataset, "__getitem__", noisy_getitem)
    args = [*FAST, "--kernels", "2", "--n_epochs", "2"]
    results = []
    for name in ["a", "b", "c"]:
        seed = ["--seed", "2"] if name == "c" else []
        assert run_main([*args, *seed], tmp_path / name) == 0
        run = only_run_dir(tmp_path / name)
        results.append(
            [
                {k: v for k, v in r.items() if "time" not in k}
                for split in ["training", "testing"]
                for r in read_csv(run / f"metrics_{split}.csv")
            ]  # fmt: skip
        )
    assert len(results[0]) == 4 and results[0] == results[1]
    assert results[0] != results[2]  # the comparison can fail: another seed differs
