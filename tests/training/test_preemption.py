"""Preemption-safe runs: SIGTERM / SIGINT mid-epoch finish the step, save the position and stop; a kill -9 loses at
most --checkpoint_every steps; --resume continues, and the resumed run's CSVs, summary and checkpoints equal an
uninterrupted run's (timing columns aside), with no row lost or duplicated and the formats unchanged."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import main
from training.hooks import Hook

ARGS = ["--n_epochs", "3", "--no_progress", "--kernels", "0", "--evaluation_metrics", "e_recall@1", "nmi"]


def rows(run, split: str) -> list[dict]:
    with open(run / f"metrics_{split}.csv") as f:
        return [{k: v for k, v in r.items() if "time" not in k} for r in csv.DictReader(f)]


def outcome(run) -> dict:
    summary = json.loads((run / "summary.json").read_text())
    return {"training": rows(run, "training"), "testing": rows(run, "testing"), "best": summary["best"],
            "epochs_run": summary["epochs_run"]}  # fmt: skip


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, plots_off):
    save = tmp_path_factory.mktemp("whole")
    with plots_off():
        assert main.main(["--save_path", str(save), *ARGS]) == 0
    (run,) = (save / "digits").iterdir()
    return outcome(run)


class SignalAt(Hook):
    """Sends ``signum`` to this process after the given step of the given epoch."""

    def __init__(self, signum: int, epoch: int, step: int):
        self.signum, self.epoch, self.step = signum, epoch, step

    def after_step(self, trainer, epoch, step, loss):
        if (epoch, step) == (self.epoch, self.step):
            os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_epoch_saves_the_position_and_resume_continues(signum, uninterrupted, run_main, monkeypatch,
                                                                    no_plots, capsys):  # fmt: skip
    import training

    hooks = training.default_hooks
    monkeypatch.setattr(training, "default_hooks", lambda opt: [*hooks(opt), SignalAt(signum, 2, 6)])
    assert run_main(*ARGS) == 128 + signum
    err = capsys.readouterr().err
    assert f"interrupted by {signal.Signals(signum).name} at epoch 2, batch 7" in err and "--resume" in err
    assert len(err.strip().splitlines()) == 1
    run = run_main.run_dir()
    state = torch.load(run / "checkpoint_last.pth", weights_only=True)
    assert state["position"]["epoch"] == 2 and state["position"]["step"] == 7 and state["train_state"]["epoch"] == 1
    assert [int(r["epoch"]) for r in rows(run, "testing")] == [1]  # epoch 2 unfinished: no row yet
    monkeypatch.setattr(training, "default_hooks", hooks)
    assert run_main(*ARGS, "--resume", str(run)) == 0
    assert outcome(run) == uninterrupted
    assert [r["epoch"] for r in rows(run, "training")] == ["1", "2", "3"]  # integers, each once


def test_checkpoint_every_writes_mid_epoch_positions(run_main, monkeypatch, no_plots):
    seen = []

    class Spy(Hook):
        def after_step(self, trainer, epoch, step, loss):
            if trainer.checkpoint_due(step):
                seen.append((epoch, step + 1))

    import training

    hooks = training.default_hooks
    monkeypatch.setattr(training, "default_hooks", lambda opt: [*hooks(opt), Spy()])
    assert run_main(*ARGS, "--n_epochs", "1", "--checkpoint_every", "4") == 0
    assert seen == [(1, 4), (1, 8), (1, 12)]  # 15 batches per epoch of digits
    state = torch.load(run_main.run_dir() / "checkpoint_last.pth", weights_only=True)
    assert state["position"] is None  # the epoch's end replaced the mid-epoch checkpoint


@pytest.mark.slow  # training subprocesses, one killed twice and resumed: about 40 s
def test_kill_9_loses_at_most_checkpoint_every_steps(tmp_path, repo_root):
    """Against an uninterrupted subprocess run (the same thread count as the killed one: k-means and float sums
    depend on it)."""
    whole = tmp_path / "whole"
    reference = [sys.executable, str(repo_root / "main.py"), "--save_path", str(whole), *ARGS]
    assert subprocess.run(reference, cwd=tmp_path, capture_output=True, timeout=300).returncode == 0
    (whole_run,) = (whole / "digits").iterdir()
    save = tmp_path / "runs"
    command = [sys.executable, str(repo_root / "main.py"), "--save_path", str(save), *ARGS, "--checkpoint_every", "2"]
    for _ in range(2):  # killed twice: the second time while resuming
        proc = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        last = None
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            found = list(save.glob("digits/*/checkpoint_last.pth"))
            if found and (last is None or found[0].stat().st_mtime > last):
                break
            time.sleep(0.02)
        proc.kill()  # SIGKILL: no handler runs
        assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed"
        (run,) = (save / "digits").iterdir()
        last = (run / "checkpoint_last.pth").stat().st_mtime
        command = [*command[:2], "--save_path", str(save), *ARGS, "--checkpoint_every", "2", "--resume", str(run)]
    assert subprocess.run(command, cwd=tmp_path, capture_output=True, timeout=300).returncode == 0
    assert outcome(run) == outcome(whole_run)
