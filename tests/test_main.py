"""End-to-end: the README's default run, the run folder, resume, bad input, W&B fallback."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT

import main

FAST = ["--n_epochs", "2", "--no_progress", "--evaluation_metrics", "e_recall@1", "c_recall@1", "nmi"]


def run_main(args, tmp_path, capsys=None):
    code = main.main(["--save_path", str(tmp_path / "runs"), *args])
    return code


def only_run_dir(tmp_path):
    runs = sorted((tmp_path / "runs" / "digits").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def test_default_run_end_to_end(tmp_path):
    """``python main.py`` with no flags, from a fresh working directory: the README's promise."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")}
    proc = subprocess.run([sys.executable, str(ROOT / "main.py")], cwd=tmp_path, env=env, capture_output=True,
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


def test_checkpoint_holds_best_model(tmp_path):
    assert run_main([*FAST, "--storage_metrics", "c_recall@1"], tmp_path) == 0
    run = only_run_dir(tmp_path)
    state = torch.load(run / "checkpoint_best_c_recall_at_1.pth", weights_only=False)
    summary = json.load(open(run / "summary.json"))
    assert state["epoch"] == summary["best"]["c_recall@1"]["epoch"]
    assert state["metrics"]["testing"]["c_recall@1"] == summary["best"]["c_recall@1"]["value"]


def test_existing_run_folder_is_not_overwritten(tmp_path):
    assert run_main(FAST, tmp_path) == 0
    first = only_run_dir(tmp_path)
    before = (first / "metrics_testing.csv").read_text()
    assert run_main(FAST, tmp_path) == 0
    names = sorted(p.name for p in (tmp_path / "runs" / "digits").iterdir())
    assert names == ["Sample_Group_s1", "Sample_Group_s1_1"]
    assert (first / "metrics_testing.csv").read_text() == before


def test_resume_continues_from_last_epoch(tmp_path):
    assert run_main(FAST, tmp_path) == 0
    run = only_run_dir(tmp_path)
    args = [a for a in FAST if a != "2"]
    args[args.index("--n_epochs") + 1 : args.index("--n_epochs") + 1] = ["3"]
    assert main.main([*args, "--resume", str(run)]) == 0
    rows = list(csv.DictReader(open(run / "metrics_testing.csv")))
    assert [int(float(r["epoch"])) for r in rows] == [1, 2, 3]
    assert len(open(run / "command.txt").read().splitlines()) == 2


def test_same_seed_same_result(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert run_main([*FAST, "--n_epochs", "1"], a) == 0
    assert run_main([*FAST, "--n_epochs", "1"], b) == 0
    ra = (only_run_dir(a) / "metrics_testing.csv").read_text().splitlines()[1].split(",")
    rb = (only_run_dir(b) / "metrics_testing.csv").read_text().splitlines()[1].split(",")
    header = (only_run_dir(a) / "metrics_testing.csv").read_text().splitlines()[0].split(",")
    keep = [i for i, h in enumerate(header) if "time" not in h]
    assert [ra[i] for i in keep] == [rb[i] for i in keep]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--loss", "nope"], "unknown loss 'nope'"),
        (["--arch", "resnet5"], "unknown architecture 'resnet5'"),
        (["--arch", "resnet5_frozen"], "or timm_<any timm model>; suffixes _frozen, _normalize"),
        (["--data_sampler", "nope"], "unknown data sampler"),
        (["--dataset", "nope"], "unknown dataset 'nope'"),
        (["--loss", "proxyanchor", "--batch_mining", "distance"], "takes no batch miner"),
        (["--bs", "50", "--samples_per_class", "3"], "not divisible"),
        (["--evaluation_metrics", "e_recal@1"], "unknown metric"),
        (["--storage_metrics", "bogus"], "unknown metric 'bogus' in --storage_metrics"),
        (["--evaluation_metrics", "e_recall@0"], "in --evaluation_metrics"),
        (["--eval_every", "0"], "--eval_every must be at least 1"),
        (["--kernels", "-1"], "--kernels must be at least 0"),
        (["--embed_dim", "0"], "--embed_dim must be at least 1"),
        (["--n_epochs", "0"], "--n_epochs must be at least 1"),
        (["--online_backend", "comet"], "invalid choice: 'comet'"),
        (["--comet_api_key", "abc"], "WANDB_API_KEY"),
        (["--dataset", "cub200", "--source_path", "/nonexistent/place"], "/nonexistent/place"),
        (["--no_such_flag"], "unrecognized arguments"),
        (["--wandb_key", "abc"], "WANDB_API_KEY"),
    ],
)
def test_bad_input_is_one_line(args, fragment, tmp_path, capsys):
    code = run_main(args, tmp_path)
    err = capsys.readouterr().err
    assert code == 2
    assert fragment in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


def test_storage_metric_error_lists_the_losses_own_metrics(tmp_path, capsys):
    assert run_main(["--loss", "vmf_softmax", "--storage_metrics", "bogus"], tmp_path) == 2
    assert "vmf_recall@1" in capsys.readouterr().err


def test_original_codes_flags_and_roth_default_metrics_are_accepted():
    """Pasted commands of the Roth suite / EL-nivMF code parse: ignored flags warn, --use_float16 is --amp fp16."""
    import parameters

    roth_metrics = ["e_recall@1", "e_recall@2", "e_recall@4", "nmi", "f1", "mAP_1000", "mAP_lim", "mAP_c",
                    "dists@intra", "dists@inter", "dists@intra_over_inter", "rho_spectrum@0", "rho_spectrum@-1",
                    "rho_spectrum@1", "rho_spectrum@2", "rho_spectrum@10"]  # fmt: skip
    with pytest.warns(UserWarning) as caught:
        opt = parameters.parse_args(["--use_float16", "--online_backend", "wandb", "--loss_oproxy_unique",
                                     "--loss_proxyvmf_learnable_temp", "1", "--evaluation_metrics", *roth_metrics,
                                     "--augmentation", "big"])  # fmt: skip
    text = " ".join(str(w.message) for w in caught)
    assert "--loss_oproxy_unique" in text and "rho_spectrum@0" in text and "--online_backend" not in text
    assert opt.amp == "fp16" and opt.augmentation == "big"
    assert opt.evaluation_metrics == [m for m in roth_metrics if m != "rho_spectrum@0"]


def test_bad_input_subprocess_exit_code(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "main.py"), "--loss", "nope"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "choose one of" in proc.stderr


def test_unknown_name_lists_valid_ones(tmp_path, capsys):
    import criteria

    run_main(["--loss", "nope"], tmp_path)
    err = capsys.readouterr().err
    assert all(name in err for name in criteria.names())


def test_non_finite_loss_stops_cleanly_and_keeps_files(tmp_path, capsys, monkeypatch):
    """A NaN loss in epoch 2 ends the run with one line; epoch 1's results stay on disk."""
    from utilities.trainer import Trainer

    original = Trainer.train_epoch

    def flaky(self, epoch):
        if epoch == 2:
            self.criterion.forward = lambda e, y: e.sum() * float("nan")
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", flaky)
    assert run_main(FAST, tmp_path) == 2
    err = capsys.readouterr().err
    assert "non-finite loss" in err and len(err.strip().splitlines()) == 1
    run = only_run_dir(tmp_path)
    assert (run / "checkpoint_last.pth").is_file()
    assert len(list(csv.DictReader(open(run / "metrics_testing.csv")))) == 1


def test_log_online_falls_back_offline_and_keeps_key_secret(tmp_path, monkeypatch, capsys):
    pytest.importorskip("wandb")
    secret = "0123456789abcdef0123456789abcdef01234567"
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", secret)
    monkeypatch.setenv("WANDB_SILENT", "true")
    # A closed local port stands in for "no network", also on a machine that has one.
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    assert run_main([*FAST, "--n_epochs", "1", "--log_online"], tmp_path) == 0
    out = capsys.readouterr().out
    assert "W&B: logging offline (no network)" in out
    run = only_run_dir(tmp_path)
    assert list(run.glob("wandb/offline-run-*")), "offline W&B run expected in the run folder"
    for path in run.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_log_online_falls_back_offline_when_the_server_refuses(tmp_path, monkeypatch, capsys):
    """A reachable server that rejects the key (wandb.init raises) still gives an offline run."""
    wandb = pytest.importorskip("wandb")
    from utilities import wandb_logger

    real_init = wandb.init
    modes = []

    def init(mode, **kwargs):
        modes.append(mode)
        if mode == "online":
            raise wandb.errors.AuthenticationError("invalid key abcdef")
        return real_init(mode=mode, **kwargs)

    monkeypatch.setattr(wandb, "init", init)
    monkeypatch.setattr(wandb_logger, "_online", lambda base_url=None: True)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "abcdef")
    monkeypatch.setenv("WANDB_SILENT", "true")
    assert run_main([*FAST, "--n_epochs", "1", "--log_online"], tmp_path) == 0
    assert modes == ["online", "offline"]
    assert "W&B: logging offline (the W&B server refused the run (AuthenticationError))" in capsys.readouterr().out
    assert "abcdef" not in (only_run_dir(tmp_path) / "log.txt").read_text()


def test_online_probe_honours_wandb_base_url(monkeypatch):
    import socket

    from utilities import wandb_logger

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    try:
        port = server.getsockname()[1]
        assert wandb_logger._online(f"http://127.0.0.1:{port}")
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
        assert wandb_logger._online()
    finally:
        server.close()
    assert not wandb_logger._online("http://127.0.0.1:9")


def test_without_log_online_wandb_is_not_touched(tmp_path):
    code = (
        "import sys, main; rc = main.main(sys.argv[1:]); "
        "print('WANDB_IMPORTED' if 'wandb' in sys.modules else 'WANDB_ABSENT'); sys.exit(rc)"
    )
    args = ["--save_path", str(tmp_path / "runs"), *FAST, "--n_epochs", "1", "--kernels", "0"]
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "WANDB_ABSENT" in proc.stdout
    assert not list(tmp_path.rglob("wandb"))


def test_dry_run_builds_and_writes_nothing(tmp_path, capsys):
    assert run_main(["--dry_run"], tmp_path) == 0
    assert "dry run" in capsys.readouterr().out
    assert not (tmp_path / "runs").exists()


def test_help_is_grouped():
    import parameters

    text = parameters.build_parser().format_help()
    for group in ["Basic training", "Data and batches", "Architecture", "Losses", "Batch mining", "Evaluation",
                  "Logging"]:  # fmt: skip
        assert group + ":" in text


def storage_samplers() -> list[str]:
    import datasampler

    return [e.name for e in datasampler.REGISTRY.entries() if getattr(e.obj, "requires_storage", False)]


@pytest.mark.parametrize("sampler", storage_samplers())
def test_storage_sampler_fed_by_training_loop(sampler, tmp_path, monkeypatch):
    """The loop seeds the sampler's storage with train embeddings, then replaces entries per batch."""
    from utilities.trainer import Trainer

    seen = {}
    original = Trainer.train_epoch

    def spy(self, epoch):
        seen["initial"] = self.sampler.storage.clone()
        seen["n_train"] = len(self.data["training"])
        out = original(self, epoch)
        seen["after"] = self.sampler.storage.clone()
        return out

    monkeypatch.setattr(Trainer, "train_epoch", spy)
    args = ["--data_sampler", sampler, "--data_batchmatch_bigbs", "120", "--n_epochs", "1", "--no_progress",
            "--evaluation_metrics", "e_recall@1"]  # fmt: skip
    assert run_main(args, tmp_path) == 0
    assert seen["initial"].shape[0] == seen["n_train"]
    assert not torch.equal(seen["initial"], seen["after"])  # batches wrote their embeddings back


def test_loss_metric_drives_selection_plateau_and_early_stop(tmp_path):
    """The vMF paper's protocol: select, reduce the lr and stop on validation accuracy from the loss."""
    args = ["--loss", "cosine_softmax", "--digits_split", "classification", "--storage_metrics", "accuracy",
            "--scheduler", "plateau", "--plateau_patience", "0", "--early_stop_patience", "2", "--n_epochs", "6",
            "--no_progress", "--evaluation_metrics", "c_recall@1"]  # fmt: skip
    assert run_main(args, tmp_path) == 0
    run = only_run_dir(tmp_path)
    summary = json.load(open(run / "summary.json"))
    assert summary["selection_split"] == "validation"
    rows = list(csv.DictReader(open(run / "metrics_validation.csv")))
    accuracies = [float(r["accuracy"]) for r in rows]
    assert summary["best"]["accuracy"]["value"] == max(accuracies)
    state = torch.load(run / "checkpoint_best_accuracy.pth", weights_only=False)
    assert state["epoch"] == summary["best"]["accuracy"]["epoch"]
    best_eval = accuracies.index(max(accuracies)) + 1
    assert len(rows) == 6 or (summary["stop_reason"].startswith("early stop") and len(rows) == best_eval + 2)


def test_flag_precedence_explicit_over_dataset_over_loss():
    """Unset flags: the dataset's defaults, then the loss's (the EL-nivMF code's), then the Roth suite's."""
    import parameters

    roth = parameters.parse_args(["--dataset", "cars196"])
    assert (roth.arch, roth.bs) == ("resnet50_frozen_normalize", 112)
    nivmf = parameters.parse_args(["--dataset", "cars196", "--loss", "proxyvmf_panc"])
    assert (nivmf.arch, nivmf.bs, nivmf.storage_metrics) == ("resnet50_frozen", 64, ["c_recall@1"])
    digits = parameters.parse_args(["--loss", "proxyvmf_panc"])
    assert (digits.arch, digits.bs) == ("mnist_cnn", 60)
    explicit = parameters.parse_args(
        ["--dataset", "cars196", "--loss", "proxyvmf_panc", "--arch", "resnet18", "--bs", "8"]
    )
    assert (explicit.arch, explicit.bs) == ("resnet18", 8)


def test_probabilistic_run_ends_with_uncertainty_plots(tmp_path):
    args = ["--loss", "proxyvmf_panc", "--embed_dim", "8", "--loss_proxyvmf_n_samples", "2", "--n_epochs", "1",
            "--no_progress", "--evaluation_metrics", "c_recall@1", "unc_auroc_cos"]  # fmt: skip
    assert run_main(args, tmp_path) == 0
    run = only_run_dir(tmp_path)
    assert (run / "uncertainty_rejection.png").stat().st_size > 0
    assert (run / "uncertainty_grid.png").stat().st_size > 0
    assert "unc_auroc_cos" in (run / "metrics_testing.csv").read_text().splitlines()[0]


@pytest.mark.parametrize(
    "dataset",
    [
        "cub200",
        pytest.param("cars196", marks=pytest.mark.slow),
        pytest.param("online_products", marks=pytest.mark.slow),
    ],
)
def test_image_folder_dataset_end_to_end(dataset, tmp_path):
    """One epoch of main.py on a generated image folder in the real layout, with a torchvision ResNet."""
    from utilities import synthetic_data as sd

    maker = {"cub200": sd.make_cub200, "cars196": sd.make_cars196, "online_products": sd.make_online_products}
    kwargs = {"online_products": {}}.get(dataset, {"n_classes": 8})
    maker[dataset](str(tmp_path / "data"), size=40, **kwargs)
    args = ["--dataset", dataset, "--source_path", str(tmp_path / "data"), "--arch", "resnet18_frozen_normalize",
            "--not_pretrained", "--image_size", "32", "--embed_dim", "16", "--bs", "8", "--n_epochs", "1",
            "--kernels", "0", "--no_progress", "--loss", "margin", "--evaluation_metrics", "e_recall@1", "nmi"]  # fmt: skip
    assert main.main(["--save_path", str(tmp_path / "runs"), *args]) == 0
    run = next((tmp_path / "runs" / dataset).iterdir())
    rows = list(csv.DictReader(open(run / "metrics_testing.csv")))
    assert len(rows) == 1 and 0 <= float(rows[0]["e_recall@1"]) <= 1
    npz = np.load(run / "embeddings_testing.npz")
    assert npz["embeddings"].shape[1] == 16
