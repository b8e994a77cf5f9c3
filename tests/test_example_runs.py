"""Every command of example_runs.sh parses and builds on digits (--dry_run); the seed README command runs."""

from __future__ import annotations

import os
import shlex

import pytest
from conftest import ROOT

import main

VARS = {"$parent_folder": "tmp", "$project": "proj", "$gpu": "0"}


def commands() -> list[list[str]]:
    out = []
    for line in (ROOT / "example_runs.sh").read_text().splitlines():
        if line.startswith("python main.py"):
            for k, v in VARS.items():
                line = line.replace(k, v)
            out.append(shlex.split(line)[2:])
    return out


def to_digits(argv: list[str], source: str) -> list[str]:
    argv = list(argv)
    for flag, value in [("--dataset", "digits"), ("--source_path", source)]:
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    return argv


def test_example_runs_has_all_recipes():
    cmds = commands()
    joined = [" ".join(c) for c in cmds]
    assert len(cmds) == 11
    for dataset in ["cub200", "cars196", "online_products"]:
        assert any(f"--dataset {dataset}" in c for c in joined)
    for loss in ["proxyvmf_panc", "proxyvmf", "proxyvmf_kl", "proxynca_nivmf", "proxynca_l2", "proxynca_cos"]:
        assert any(f"--loss {loss} " in c for c in joined)
    cars128 = next(c for c in joined if "Cars196_Prob_RN50_dim128" in c)
    for piece in ["--n_epochs 300", "--tau 60 80", "--gamma 0.1", "--loss_proxyvmf_proxylrmulti 7500",
                  "--loss_proxyvmf_conclrmulti 7500", "--loss_proxyvmf_concentration 9",
                  "--loss_proxyvmf_init_norm_multiplier 12", "--loss_proxyvmf_guidance_w 0.3", "--bs 64",
                  "--arch resnet50_frozen", "--loss_proxyvmf_n_samples 5", "--loss_proxyvmf_temp 0.003"]:  # fmt: skip
        assert piece in cars128


@pytest.mark.parametrize("argv", commands(), ids=lambda a: a[a.index("--group") + 1])
def test_example_command_dry_runs_on_digits(argv, tmp_path):
    argv = to_digits(argv, str(tmp_path)) + ["--dry_run", "--not_pretrained", "--save_path", str(tmp_path)]
    assert main.main(argv) == 0


SEED = ("--loss proxyvmf_panc --seed 0 --gpu 0 --source_path SRC --project proj --log_online "
        "--group Cars196_Prob_RN50_dim128 --dataset digits --n_epochs 1 --tau 60 80 --gamma 0.1 --no_train_metrics "
        "--embed_dim 128 --loss_proxyvmf_proxylrmulti 7500 --loss_proxyvmf_conclrmulti 7500 "
        "--loss_proxyvmf_concentration 9 --loss_proxyvmf_temp 0.003 --loss_proxyvmf_templrmulti 200 "
        "--loss_proxyvmf_warmstart --loss_proxyvmf_n_samples 5 --loss_proxyvmf_guidance_w 0.3")  # fmt: skip


def test_seed_readme_command_runs_on_digits_with_offline_wandb(tmp_path, monkeypatch):
    for k in list(os.environ):
        if k.startswith("WANDB"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    argv = shlex.split(SEED.replace("SRC", str(tmp_path))) + ["--save_path", str(tmp_path / "runs"), "--no_progress",
                                                              "--kernels", "0"]  # fmt: skip
    assert main.main(argv) == 0
    run = tmp_path / "runs" / "digits" / "Cars196_Prob_RN50_dim128_s0"
    assert (run / "embeddings_testing.npz").is_file()
    assert "W&B: logging offline (WANDB_API_KEY is not set)" in (run / "log.txt").read_text()
