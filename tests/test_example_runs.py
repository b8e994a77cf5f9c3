"""Every command of example_runs.sh parses and builds on digits (--dry_run); the seed README command runs."""

from __future__ import annotations

import os
import pathlib
import shlex

import pytest

import main

ROOT = pathlib.Path(__file__).resolve().parents[1]
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


# The paper's recipes (docs/protocols.md; = the original example_runs.sh): group -> (dataset, embed_dim, n_epochs, tau, gamma, proxylrmulti,
# conclrmulti, concentration, init_norm_multiplier, guidance_w)
RECIPES = {
    "Cub200_Prob_RN50_dim128": ("cub200", 128, 250, [25, 50], 0.3, 5000, 20000, 6, 30, 3),
    "Cub200_Prob_RN50_dim512": ("cub200", 512, 250, [31], 0.1, 5000, 20000, 18, 50, 5),
    "Cars196_Prob_RN50_dim128": ("cars196", 128, 300, [60, 80], 0.1, 7500, 7500, 9, 12, 0.3),
    "Cars196_Prob_RN50_dim512": ("cars196", 512, 300, [105, 170], 0.2, 5000, 20000, 22, 10, 0.1),
}
RECIPE_FIELDS = ("dataset", "embed_dim", "n_epochs", "tau", "gamma", "loss_proxyvmf_proxylrmulti",
                 "loss_proxyvmf_conclrmulti", "loss_proxyvmf_concentration", "loss_proxyvmf_init_norm_multiplier",
                 "loss_proxyvmf_guidance_w")  # fmt: skip
# common to the four: ResNet50 with frozen BN (no output normalisation), bs 64, 2 per class, Adam lr 1e-5, warm
# start, S = 5, T0 = 0.003 with lr x200, selection on c_recall@1
COMMON = {"loss": "proxyvmf_panc", "arch": "resnet50_frozen", "bs": 64, "samples_per_class": 2, "optim": "adam",
          "lr": 1e-5, "loss_proxyvmf_warmstart": True, "loss_proxyvmf_n_samples": 5, "loss_proxyvmf_temp": 0.003,
          "loss_proxyvmf_templrmulti": 200, "storage_metrics": ["c_recall@1"], "no_train_metrics": True,
          "log_online": True, "seed": 0}  # fmt: skip


def recipe_commands() -> dict[str, list[str]]:
    return {a[a.index("--group") + 1]: a for a in commands() if a[a.index("--group") + 1] in RECIPES}


def test_recipe_table_is_complete():
    assert sorted(recipe_commands()) == sorted(RECIPES)


@pytest.mark.parametrize("group", sorted(RECIPES))
def test_recipe_pins_the_papers_hyperparameters(group, make_opt):
    """Each recipe line of example_runs.sh, parsed by the real flag parser, has the paper's numbers
    (docs/protocols.md, EL-nivMF recipes)."""
    opt = make_opt(*recipe_commands()[group])
    got = {f: getattr(opt, f) for f in (*RECIPE_FIELDS, *COMMON)}
    want = dict(zip(RECIPE_FIELDS, RECIPES[group])) | COMMON
    assert got == want
    assert "_normalize" not in opt.arch and opt.group == group


@pytest.mark.parametrize("argv", commands(), ids=lambda a: a[a.index("--group") + 1])
def test_example_command_dry_runs_on_digits(argv, tmp_path):
    argv = to_digits(argv, str(tmp_path)) + ["--dry_run", "--not_pretrained", "--save_path", str(tmp_path)]
    assert main.main(argv) == 0


# The EL-nivMF code's README command (the "seed command" of docs/protocols.md), its shell variables filled in, as
# users paste it; the only changes made: --dataset digits, --source_path, --n_epochs and --gpu.
SEED_README = ("--loss proxyvmf_panc --seed 0 --gpu $gpu --source_path $parent_folder --project $project --log_online "
               "--group Cars196_Prob_RN50_dim128 --dataset cars196 --n_epochs 300 --tau 60 80 --gamma 0.1 "
               "--no_train_metrics --embed_dim 128 --loss_proxyvmf_proxylrmulti 7500 --loss_proxyvmf_conclrmulti 7500 "
               "--loss_proxyvmf_concentration 9 --loss_proxyvmf_temp 0.003 --loss_proxyvmf_templrmulti 200 "
               "--loss_proxyvmf_warmstart --loss_proxyvmf_n_samples 5 --loss_proxyvmf_guidance_w 0.3")  # fmt: skip
ALLOWED = ("--dataset", "--source_path", "--n_epochs", "--gpu")


def seed_argv(source: str, n_epochs: int = 1) -> list[str]:
    # the seed's placeholders: parent_folder="path_to_parent_folder", gpu="gpu_id"; project="W&B project name" would
    # word-split unquoted in the shell, so it takes a one-word name
    argv = shlex.split(SEED_README.replace("$parent_folder", "path_to_parent_folder").replace("$project", "proj")
                       .replace("$gpu", "gpu_id"))  # fmt: skip
    new = {"--dataset": "digits", "--source_path": source, "--n_epochs": str(n_epochs), "--gpu": "0"}
    out = [new.get(argv[i - 1], a) if i and argv[i - 1] in new else a for i, a in enumerate(argv)]
    changed = {argv[i - 1] for i, (a, b) in enumerate(zip(argv, out)) if a != b}
    assert changed == set(ALLOWED) and len(out) == len(argv)  # nothing else differs from the seed
    return out


UNC_COLUMNS = ["norms@5", "norms@50", "norms@95", "unc_auroc_cos", "unc_auroc_l2", "unc_recall_area",
               "unc_nw_acc@10", "unc_nw_ll@10"]  # fmt: skip


def offline_wandb(tmp_path, monkeypatch):
    """No key (so the logger falls back offline: training/wandb_logger.py reads WANDB_API_KEY from the environment
    only) and, should the machine have network, an unroutable server: nothing can go online."""
    for k in list(os.environ):
        if k.startswith("WANDB"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    for k in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(k, str(tmp_path / "wandb_home"))
    monkeypatch.chdir(tmp_path)  # the default --save_path is Training_Results under the working directory


def check_run(run, metrics, wandb=True):
    import csv
    import math

    assert (run / "embeddings_testing.npz").is_file()
    assert (run / "uncertainty_rejection.png").is_file() and (run / "uncertainty_grid.png").is_file()
    with open(run / "metrics_testing.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert all(math.isfinite(float(row[m])) for m in metrics), {m: row.get(m) for m in metrics}
    if wandb:
        assert "W&B: logging offline (WANDB_API_KEY is not set)" in (run / "log.txt").read_text()
        assert list((run / "wandb").glob("offline-run-*"))


@pytest.mark.slow  # 20-60 s on 2 shared CPU cores (W&B start, 128-d training, plots of 35 metrics)
def test_seed_readme_command_runs_on_digits_with_offline_wandb(tmp_path, monkeypatch):
    """The seed's command with only the four allowed changes, run in a temp cwd: the default save_path lands there,
    W&B falls back offline, and the family's default metrics include the uncertainty metrics."""
    offline_wandb(tmp_path, monkeypatch)
    assert main.main(seed_argv(str(tmp_path))) == 0
    check_run(tmp_path / "Training_Results" / "digits" / "Cars196_Prob_RN50_dim128_s0", ["c_recall@1", *UNC_COLUMNS])


def test_seed_readme_command_fast_variant(tmp_path, monkeypatch):
    """The same command and W&B fallback, made cheap: 16-d embeddings, 2 samples, four metrics."""
    offline_wandb(tmp_path, monkeypatch)
    metrics = ["c_recall@1", "unc_auroc_cos", "unc_recall_area", "norms@50"]
    argv = seed_argv(str(tmp_path)) + ["--embed_dim", "16", "--loss_proxyvmf_n_samples", "2",
                                       "--evaluation_metrics", *metrics]  # fmt: skip
    assert main.main(argv) == 0
    check_run(tmp_path / "Training_Results" / "digits" / "Cars196_Prob_RN50_dim128_s0", metrics)
