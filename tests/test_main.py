"""main.py end to end: the README's default run, dry run, bad input as one line and exit code 2, W&B untouched."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest


def test_default_run_end_to_end(tmp_path, repo_root):
    """``python main.py`` with no flags, from a fresh working directory: the README's promise."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")}
    proc = subprocess.run([sys.executable, str(repo_root / "main.py")], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "Training_Results" / "digits" / "Sample_Group_s1"
    for name in ["config.json", "command.txt", "log.txt", "metrics_testing.csv", "metrics_training.csv",
                 "checkpoint_last.pth", "checkpoint_best_e_recall_at_1.pth", "embeddings_testing.npz",
                 "progression.png", "summary.json", "summary.md"]:  # fmt: skip
        assert (run / name).is_file(), name
    assert "e_recall@1" in proc.stdout  # the metrics table is printed
    rows = list(csv.DictReader(open(run / "metrics_testing.csv")))
    config = json.load(open(run / "config.json"))
    assert len(rows) == config["n_epochs"]
    summary = json.load(open(run / "summary.json"))
    assert summary["selection_split"] == "testing" and "original papers" in summary["selection_note"]
    best = summary["best"]["e_recall@1"]
    assert best["value"] == max(float(r["e_recall@1"]) for r in rows)
    # A trained model beats chance on the 5 unseen test classes (chance recall@1 about 0.2).
    assert best["value"] > 0.6
    npz = np.load(run / "embeddings_testing.npz")
    assert npz["embeddings"].shape == (len(npz["labels"]), config["embed_dim"])
    assert set(np.unique(npz["labels"])) == {5, 6, 7, 8, 9}


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--loss", "nope"], "unknown loss 'nope'"),
        (["--arch", "resnet5"], "unknown architecture 'resnet5'"),
        (["--arch", "resnet5_frozen"], "or timm_<any timm model>; suffixes _frozen, _normalize"),
        (["--data_sampler", "nope"], "unknown data sampler"),
        (["--dataset", "nope"], "unknown dataset 'nope'"),
        (["--loss", "npair", "--batch_mining", "distance"], "cannot use batch miner 'distance'"),
        (["--bs", "50", "--samples_per_class", "3"], "not divisible"),
        (["--evaluation_metrics", "e_recal@1"], "unknown metric"),
        (["--storage_metrics", "bogus"], "unknown metric 'bogus' in --storage_metrics"),
        (["--evaluation_metrics", "e_recall@0"], "in --evaluation_metrics"),
        (["--evaluation_metrics", "accuracy"], "metric 'accuracy' needs the class probabilities"),
        (["--eval_every", "0"], "argument --eval_every: expected an integer >= 1, got 0"),
        (["--kernels", "-1"], "argument --kernels: expected an integer >= 0, got -1"),
        (["--embed_dim", "0"], "argument --embed_dim: expected an integer >= 1, got 0"),
        (["--n_epochs", "0"], "argument --n_epochs: expected an integer >= 1, got 0"),
        (["--online_backend", "comet"], "invalid choice: 'comet'"),
        (["--comet_api_key", "abc"], "WANDB_API_KEY"),
        (["--dataset", "cub200", "--source_path", "/nonexistent/place"], "/nonexistent/place"),
        (["--no_such_flag"], "unrecognized arguments"),
        (["--wandb_key", "abc"], "WANDB_API_KEY"),
    ],
)
def test_bad_input_is_one_line(args, fragment, run_main, capsys):
    code = run_main(*args)
    err = capsys.readouterr().err
    assert code == 2
    assert fragment in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


def test_bad_input_subprocess_exit_code(tmp_path, repo_root):
    proc = subprocess.run([sys.executable, str(repo_root / "main.py"), "--loss", "nope"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "choose one of" in proc.stderr


def test_unknown_name_lists_valid_ones(run_main, capsys):
    import criteria

    run_main("--loss", "nope")
    err = capsys.readouterr().err
    assert all(name in err for name in criteria.names())


@pytest.mark.parametrize(
    "forward, message",
    [
        (lambda e, y: e.sum() * float("nan"), "non-finite loss"),
        # a finite loss whose backward pass gives NaN: d sqrt|x| at x = 0 is inf * 0
        (lambda e, y: (e * 0).abs().sqrt().sum(), "non-finite gradients at epoch 2, batch 0"),
    ],
    ids=["nan_loss", "nan_gradients"],
)
def test_non_finite_loss_or_gradients_stop_cleanly_and_keep_files(
    run_main, fast_args, capsys, monkeypatch, forward, message
):
    """A NaN loss, or a finite loss with NaN gradients, in epoch 2 ends the run with one line naming it and a
    non-zero exit; epoch 1's results stay on disk."""
    from training import Trainer

    original = Trainer.train_epoch

    def flaky(self, epoch):
        if epoch == 2:
            self.run.criterion.forward = forward
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", flaky)
    assert run_main(*fast_args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    run = run_main.run_dir()
    assert (run / "checkpoint_last.pth").is_file()
    assert len(list(csv.DictReader(open(run / "metrics_testing.csv")))) == 1


def test_without_log_online_wandb_is_not_touched(tmp_path, repo_root, fast_args):
    code = (
        "import sys, main; rc = main.main(sys.argv[1:]); "
        "print('WANDB_IMPORTED' if 'wandb' in sys.modules else 'WANDB_ABSENT'); sys.exit(rc)"
    )
    args = ["--save_path", str(tmp_path / "runs"), *fast_args, "--n_epochs", "1", "--kernels", "0"]
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=repo_root, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "WANDB_ABSENT" in proc.stdout
    assert not list(tmp_path.rglob("wandb"))


def test_a_machine_with_only_torch_runs_the_main_job(tmp_path, repo_root, fast_args):
    """faiss, wandb and pretrainedmodels absent (the GPU machines have only torch and its kin): the job runs,
    k-means (NMI, F1) in torch with a warning saying so."""
    code = ("import sys; sys.modules.update(faiss=None, wandb=None, pretrainedmodels=None); import main; "
            "sys.exit(main.main(sys.argv[1:]))")  # fmt: skip
    args = ["--save_path", str(tmp_path / "runs"), *fast_args, "f1", "--n_epochs", "1", "--kernels", "0"]
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=repo_root, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "faiss is not installed: k-means (NMI, F1) runs in torch" in proc.stderr
    (row,) = list(csv.DictReader(open(next((tmp_path / "runs").rglob("metrics_testing.csv")))))
    assert 0 < float(row["nmi"]) <= 1 and 0 < float(row["f1"]) <= 1


def test_dry_run_builds_and_writes_nothing(tmp_path, run_main, capsys):
    assert run_main("--dry_run") == 0
    out = capsys.readouterr().out
    assert "dry run" in out and "5 train classes" in out and "batches/epoch of 60" in out
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "dataset",
    [
        "cub200",
        pytest.param("cars196", marks=pytest.mark.slow),
        pytest.param("online_products", marks=pytest.mark.slow),
    ],
)
def test_image_folder_dataset_end_to_end(dataset, tmp_path, run_main):
    """One epoch of main.py on a generated image folder in the real layout, with a torchvision ResNet."""
    from datasets import synthetic

    maker = {"cub200": synthetic.make_cub200, "cars196": synthetic.make_cars196,
             "online_products": synthetic.make_online_products}  # fmt: skip
    kwargs = {"online_products": {}}.get(dataset, {"n_classes": 8})
    maker[dataset](str(tmp_path / "data"), size=40, **kwargs)
    args = ["--dataset", dataset, "--source_path", str(tmp_path / "data"), "--arch", "resnet18_frozen_normalize",
            "--not_pretrained", "--image_size", "32", "--embed_dim", "16", "--bs", "8", "--n_epochs", "1",
            "--kernels", "0", "--no_progress", "--loss", "margin", "--evaluation_metrics", "e_recall@1", "nmi"]  # fmt: skip
    assert run_main(*args) == 0
    run = run_main.run_dir(dataset)
    rows = list(csv.DictReader(open(run / "metrics_testing.csv")))
    assert len(rows) == 1 and 0 <= float(rows[0]["e_recall@1"]) <= 1
    npz = np.load(run / "embeddings_testing.npz")
    assert npz["embeddings"].shape[1] == 16
