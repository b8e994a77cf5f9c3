"""training.loop: the training row of every epoch, --warmup, the storage samplers fed by the loop, selection /
plateau / early stopping on a loss metric, and reproducibility with data-loader workers (their seeding)."""

from __future__ import annotations

import csv
import json
import random

import numpy as np
import pytest
import torch

import datasampler
from datasets._base import TensorImageDataset
from training import Trainer, build_run
from training.build import eval_loader
from utilities import seeding

STORAGE_SAMPLERS = [e.name for e in datasampler.REGISTRY.entries() if getattr(e.obj, "requires_storage", False)]


def read_csv(path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------- training row per epoch
def test_training_row_every_epoch_with_eval_every(run_main, fast_args, monkeypatch, no_plots):
    stats = {}
    original = Trainer.train_epoch

    def spy(self, epoch):
        stats[epoch] = original(self, epoch)
        return stats[epoch]

    monkeypatch.setattr(Trainer, "train_epoch", spy)
    assert run_main(*fast_args, "--n_epochs", "3", "--eval_every", "2") == 0
    run = run_main.run_dir()
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


def test_training_row_every_epoch_without_train_metrics(run_main, fast_args, no_plots):
    assert run_main(*fast_args, "--n_epochs", "3", "--eval_every", "2", "--no_train_metrics") == 0
    rows = read_csv(run_main.run_dir() / "metrics_training.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert all(float(r["loss"]) > 0 and "e_recall@1" not in r for r in rows)


# --------------------------------------------------------------------------- warm-up
def snapshot(trainer) -> dict[str, dict[str, torch.Tensor]]:
    model = trainer.run.model
    head = {id(p) for p in model.head_parameters()}
    named = dict(model.named_parameters())
    return {
        "backbone": {n: p.detach().clone() for n, p in named.items() if id(p) not in head},
        "head": {n: p.detach().clone() for n, p in named.items() if id(p) in head},
        "criterion": {n: p.detach().clone() for n, p in trainer.run.criterion.named_parameters()},
        "bn_stats": {n: b.clone() for n, b in model.named_buffers() if "running" in n},
    }


def changed(before: dict, after: dict) -> dict[str, bool]:
    return {k: not torch.equal(before[k], after[k]) for k in before}


def test_warmup_freezes_backbone_and_its_batchnorm_statistics(run_main, fast_args, monkeypatch, no_plots):
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
    assert run_main(*fast_args, "--warmup", "1", "--no_train_metrics") == 0
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


def test_without_warmup_backbone_and_statistics_move_in_epoch_one(run_main, fast_args, monkeypatch, no_plots):
    """The control of the test above: the same run without --warmup changes them at once."""
    snaps = {}
    original = Trainer.train_epoch

    def spy(self, epoch):
        before = snapshot(self)
        out = original(self, epoch)
        snaps[epoch] = {part: changed(before[part], v) for part, v in snapshot(self).items()}
        return out

    monkeypatch.setattr(Trainer, "train_epoch", spy)
    assert run_main(*fast_args, "--n_epochs", "1", "--no_train_metrics") == 0
    assert all(snaps[1]["backbone"].values()) and all(snaps[1]["bn_stats"].values())


# --------------------------------------------------------------------------- storage samplers, selection
@pytest.mark.parametrize("sampler", STORAGE_SAMPLERS)
def test_storage_sampler_fed_by_training_loop(sampler, run_main, monkeypatch, no_plots):
    """The loop seeds the sampler's storage with train embeddings, then replaces entries per batch."""
    seen = {}
    original = Trainer.train_epoch

    def spy(self, epoch):
        seen["initial"] = self.run.sampler.storage.clone()
        seen["n_train"] = len(self.run.data["training"])
        out = original(self, epoch)
        seen["after"] = self.run.sampler.storage.clone()
        return out

    monkeypatch.setattr(Trainer, "train_epoch", spy)
    assert run_main("--data_sampler", sampler, "--data_batchmatch_bigbs", "120", "--n_epochs", "1", "--no_progress",
                    "--evaluation_metrics", "e_recall@1") == 0  # fmt: skip
    assert seen["initial"].shape[0] == seen["n_train"]
    assert not torch.equal(seen["initial"], seen["after"])  # batches wrote their embeddings back


def test_loss_metric_drives_selection_plateau_and_early_stop(run_main, no_plots):
    """The vMF paper's protocol: select, reduce the lr and stop on validation accuracy of the loss's classifier."""
    assert run_main("--loss", "cosine_softmax", "--digits_split", "classification", "--storage_metrics", "accuracy",
                    "--scheduler", "plateau", "--plateau_patience", "0", "--early_stop_patience", "2",
                    "--n_epochs", "6", "--no_progress", "--evaluation_metrics", "c_recall@1") == 0  # fmt: skip
    run = run_main.run_dir()
    summary = json.load(open(run / "summary.json"))
    assert summary["selection_split"] == "validation"
    rows = read_csv(run / "metrics_validation.csv")
    accuracies = [float(r["accuracy"]) for r in rows]
    assert summary["best"]["accuracy"]["value"] == max(accuracies)
    state = torch.load(run / "checkpoint_best_accuracy.pth", weights_only=False)
    assert state["epoch"] == summary["best"]["accuracy"]["epoch"]
    best_eval = accuracies.index(max(accuracies)) + 1
    assert len(rows) == 6 or (summary["stop_reason"].startswith("early stop") and len(rows) == best_eval + 2)
    lrs = [float(r["lr"]) for r in read_csv(run / "metrics_training.csv")]
    assert all(b in (a, a * 0.5) for a, b in zip(lrs, lrs[1:]))  # ReduceLROnPlateau halves, never raises


def test_classifier_metrics_only_on_closed_set_splits(run_main, no_plots):
    """Accuracy needs the split's classes to be the train classes (a fact of the dataset): the class-disjoint
    test split of digits has none, the training split has it."""
    assert run_main("--loss", "arcface", "--n_epochs", "1", "--no_progress") == 0
    run = run_main.run_dir()
    assert "accuracy" in read_csv(run / "metrics_training.csv")[0]
    assert "accuracy" not in read_csv(run / "metrics_testing.csv")[0]


def test_loss_diagnostics_join_the_training_row(run_main, no_plots):
    """The EL-nivMF family's learned temperature and mean proxy concentration: one value per epoch, in the
    training row, equal to the loss's state saved with the last checkpoint."""
    assert run_main("--loss", "proxyvmf_panc", "--embed_dim", "8", "--loss_proxyvmf_n_samples", "2", "--n_epochs",
                    "2", "--no_progress", "--evaluation_metrics", "c_recall@1", "--eval_every", "2") == 0  # fmt: skip
    run = run_main.run_dir()
    rows = read_csv(run / "metrics_training.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    state = torch.load(run / "checkpoint_last.pth", weights_only=False)["criterion"]
    assert float(rows[-1]["proxy_temperature"]) == pytest.approx(float(state["temp"]), rel=1e-6)
    kappa_mean = float(state["kappa"].clamp_min(0.1).mean())
    assert float(rows[-1]["proxy_kappa_mean"]) == pytest.approx(kappa_mean, rel=1e-6)
    assert "proxy_temperature" not in read_csv(run / "metrics_testing.csv")[0]


# --------------------------------------------------------------------------- workers: seeding, reproducibility
def noisy_getitem(self, index):
    """The digits images plus noise drawn in the data-loader worker from numpy, python and torch."""
    x = self.image01(index)
    x = x + 0.05 * torch.from_numpy(np.random.standard_normal(x.shape)).float() + 0.01 * random.random()
    x = x + 0.05 * torch.randn(x.shape)
    return self.transform(x), int(self.labels[index]), int(index)


def test_worker_seeding_is_used_by_the_train_and_eval_loaders(monkeypatch, make_opt):
    """Each worker draws its own numpy/python stream, new every epoch, the same for the same seed.
    (PyTorch seeds numpy and python per worker itself; ``seeding.worker_init_fn`` re-seeds them
    from the worker's torch seed. A worker_init_fn seeding every worker alike fails here.)"""

    def make_run(*argv):
        return build_run(make_opt("--no_progress", *argv))

    def draw(self, index):
        return torch.tensor([np.random.random(), random.random()], dtype=torch.float64), 0, int(index)

    def run() -> dict[str, list[torch.Tensor]]:
        run = make_run("--kernels", "2", "--seed", "3")  # seeds every RNG, as a run does
        loaders = {"train": lambda: run.train_loader,
                   "eval": lambda: eval_loader(run.data["evaluation"], run.opt)}  # fmt: skip
        with monkeypatch.context() as m:
            m.setattr(TensorImageDataset, "__getitem__", draw)  # after the trainer read the image shape
            return {k: [torch.cat([b[0] for b in loader()]) for _epoch in range(2)] for k, loader in loaders.items()}

    first, second = run(), run()
    built = make_run("--kernels", "2")
    assert built.train_loader.worker_init_fn is seeding.worker_init_fn
    assert eval_loader(built.data["testing"], built.opt).worker_init_fn is seeding.worker_init_fn
    for which in first:
        values = torch.cat(first[which])
        assert len(values) > 1000, which
        assert len(torch.unique(values[:, 0])) == len(values), which  # no stream shared by workers or epochs
        assert len(torch.unique(values[:, 1])) == len(values), which
        assert all(torch.equal(a, b) for a, b in zip(first[which], second[which])), which  # same seed, same draws


@pytest.mark.slow  # about 20 s: three runs whose loaders start 2 workers per pass
def test_same_seed_same_result_with_workers(tmp_path, monkeypatch, no_plots, fast_args):
    import main

    monkeypatch.setattr(TensorImageDataset, "__getitem__", noisy_getitem)
    args = [*fast_args, "--kernels", "2", "--n_epochs", "2"]
    results = []
    for name in ["a", "b", "c"]:
        seed = ["--seed", "2"] if name == "c" else []
        assert main.main(["--save_path", str(tmp_path / name), *args, *seed]) == 0
        (run,) = (tmp_path / name / "digits").iterdir()
        results.append(
            [
                {k: v for k, v in r.items() if "time" not in k}
                for split in ["training", "testing"]
                for r in read_csv(run / f"metrics_{split}.csv")
            ]  # fmt: skip
        )
    assert len(results[0]) == 4 and results[0] == results[1]
    assert results[0] != results[2]  # the comparison can fail: another seed differs
