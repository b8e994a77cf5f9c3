"""training.recording / plots / wandb_logger: the run folder a run leaves (checkpoints, CSVs, resume, plots) and
the W&B hook (offline fallback, no key anywhere)."""

from __future__ import annotations

import csv
import json
import socket

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits


def read_csv(path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_checkpoint_holds_best_model(run_main, fast_args, no_plots):
    assert run_main(*fast_args, "--storage_metrics", "c_recall@1") == 0
    run = run_main.run_dir()
    state = torch.load(run / "checkpoint_best_c_recall_at_1.pth", weights_only=False)
    summary = json.load(open(run / "summary.json"))
    assert state["epoch"] == summary["best"]["c_recall@1"]["epoch"]
    assert state["metrics"]["testing"]["c_recall@1"] == summary["best"]["c_recall@1"]["value"]
    npz = np.load(run / "embeddings_testing.npz")  # the test split (digits classes 5-9) of the selected model
    digits = load_digits()
    assert len(npz["labels"]) == int(np.isin(digits.target, [5, 6, 7, 8, 9]).sum())


def test_existing_run_folder_is_not_overwritten(run_main, fast_args, no_plots):
    assert run_main(*fast_args) == 0
    first = run_main.run_dir()
    before = (first / "metrics_testing.csv").read_text()
    assert run_main(*fast_args) == 0
    names = sorted(p.name for p in first.parent.iterdir())
    assert names == ["Sample_Group_s1", "Sample_Group_s1_1"]
    assert (first / "metrics_testing.csv").read_text() == before


def test_resume_continues_from_last_epoch(run_main, fast_args, no_plots):
    assert run_main(*fast_args) == 0
    run = run_main.run_dir()
    args = [a for a in fast_args if a != "2"]
    args[args.index("--n_epochs") + 1 : args.index("--n_epochs") + 1] = ["3"]
    assert run_main(*args, "--resume", str(run)) == 0
    rows = read_csv(run / "metrics_testing.csv")
    assert [int(float(r["epoch"])) for r in rows] == [1, 2, 3]
    assert len(open(run / "command.txt").read().splitlines()) == 2


def test_same_seed_same_result(tmp_path, fast_args, no_plots):
    import main

    texts = []
    for name in ("a", "b"):
        assert main.main(["--save_path", str(tmp_path / name), *fast_args, "--n_epochs", "1"]) == 0
        (run,) = (tmp_path / name / "digits").iterdir()
        texts.append((run / "metrics_testing.csv").read_text().splitlines())
    header = texts[0][0].split(",")
    keep = [i for i, h in enumerate(header) if "time" not in h]
    ra, rb = (t[1].split(",") for t in texts)
    assert [ra[i] for i in keep] == [rb[i] for i in keep]


def test_probabilistic_run_ends_with_uncertainty_plots(run_main):
    assert run_main("--loss", "proxyvmf_panc", "--embed_dim", "8", "--loss_proxyvmf_n_samples", "2", "--n_epochs",
                    "1", "--no_progress", "--evaluation_metrics", "c_recall@1", "unc_auroc_cos") == 0  # fmt: skip
    run = run_main.run_dir()
    assert (run / "uncertainty_rejection.png").stat().st_size > 0
    assert (run / "uncertainty_grid.png").stat().st_size > 0
    assert (run / "progression.png").stat().st_size > 0
    assert "unc_auroc_cos" in (run / "metrics_testing.csv").read_text().splitlines()[0]


def test_deterministic_loss_makes_no_uncertainty_plots(run_main, fast_args):
    assert run_main(*fast_args, "--n_epochs", "1") == 0
    run = run_main.run_dir()
    assert (run / "progression.png").is_file() and not (run / "uncertainty_grid.png").exists()


# --------------------------------------------------------------------------- W&B
def test_log_online_falls_back_offline_and_keeps_key_secret(run_main, fast_args, monkeypatch, capsys, no_plots):
    pytest.importorskip("wandb")
    secret = "0123456789abcdef0123456789abcdef01234567"
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", secret)
    monkeypatch.setenv("WANDB_SILENT", "true")
    # A closed local port stands in for "no network", also on a machine that has one.
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    assert run_main(*fast_args, "--n_epochs", "1", "--log_online") == 0
    out = capsys.readouterr().out
    assert "W&B: logging offline (no network)" in out
    run = run_main.run_dir()
    assert list(run.glob("wandb/offline-run-*")), "offline W&B run expected in the run folder"
    for path in run.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_log_online_falls_back_offline_when_the_server_refuses(run_main, fast_args, monkeypatch, capsys, no_plots):
    """A reachable server that rejects the key (wandb.init raises) still gives an offline run."""
    wandb = pytest.importorskip("wandb")
    from training import wandb_logger

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
    assert run_main(*fast_args, "--n_epochs", "1", "--log_online") == 0
    assert modes == ["online", "offline"]
    assert "W&B: logging offline (the W&B server refused the run (AuthenticationError))" in capsys.readouterr().out
    assert "abcdef" not in (run_main.run_dir() / "log.txt").read_text()


def test_wandb_hook_logs_every_epoch_with_the_csv_values(run_main, fast_args, monkeypatch, no_plots):
    """Step = epoch; evaluated epochs carry <split>/<metric>, every epoch training/<stat>: the CSVs' numbers."""
    from training import wandb_logger

    logged = []

    class FakeLogger:
        def __init__(self, *args):
            pass

        def log(self, values, step):
            logged.append((step, values))

        def finish(self):
            logged.append(("finished", {}))

    monkeypatch.setattr(wandb_logger, "WandbLogger", FakeLogger)
    assert run_main(*fast_args, "--n_epochs", "3", "--eval_every", "2", "--log_online") == 0
    assert [step for step, _ in logged] == [1, 2, 3, "finished"]
    run = run_main.run_dir()
    testing = {int(r["epoch"]): r for r in read_csv(run / "metrics_testing.csv")}
    training = {int(r["epoch"]): r for r in read_csv(run / "metrics_training.csv")}
    for step, values in logged[:-1]:
        assert values["training/loss"] == pytest.approx(float(training[step]["loss"]), rel=1e-12)
        assert ("testing/e_recall@1" in values) == (step in testing)
        if step in testing:
            assert values["testing/e_recall@1"] == pytest.approx(float(testing[step]["e_recall@1"]), rel=1e-12)


def test_online_probe_honours_wandb_base_url(monkeypatch):
    from training import wandb_logger

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
