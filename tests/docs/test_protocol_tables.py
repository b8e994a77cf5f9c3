"""The seed tables (``| seed | pasted into this suite |``), read from docs/protocols.md at test time: every
``python main.py ...`` command, pasted in the seed's own (Hydra) form, parses for its own dataset; its training
commands build on ``--dataset digits`` (``--dry_run``) and train one epoch there (ResNet50 rows: slow, on 400
digits); its ``mode=get_embeddings`` commands name their training run (tests/test_vmf_commands.py runs them)."""

from __future__ import annotations

import pathlib
import re
import shlex

import pytest

import hydra_commands
import main

README = pathlib.Path(__file__).resolve().parents[2] / "docs" / "protocols.md"  # the page with the seed tables
CLASSIFICATION = {"mnist", "fashion_mnist", "cifar10", "cifar100"}  # the vMF paper's closed-set datasets


def seed_rows(text: str) -> list[tuple[str, list[str]]]:
    """(first cell, argv) of every row whose second cell holds a backticked ``python main.py`` command, in every
    table whose header starts with ``| seed`` and names ``this suite``."""
    rows, in_table = [], False
    for line in text.splitlines():
        s = line.strip()
        if not s.startswith("|"):
            in_table = False
            continue
        cells = [c.strip() for c in s.strip("|").split("|")]
        if cells[0].lower().startswith("seed") and any("this suite" in c for c in cells[1:]):
            in_table = True
            continue
        if not in_table or set(s) <= set("|-: "):
            continue
        commands = re.findall(r"`(python main\.py[^`]*)`", s)
        if commands:
            rows.append((cells[0], shlex.split(commands[0])[2:]))
    return rows


ALL_ROWS = seed_rows(README.read_text())
ROWS = [r for r in ALL_ROWS if "mode=get_embeddings" not in r[1]]  # training commands


def suite_flags(argv: list[str]) -> list[str]:
    """A pasted seed (Hydra) command as this suite reads it; flags as they are."""
    return hydra_commands.to_flags(argv) if hydra_commands.is_hydra(argv) else argv


def flag(argv: list[str], name: str, default: str | None = None) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else default


def set_flag(argv: list[str], name: str, value: str) -> list[str]:
    argv = list(argv)
    if name in argv:
        argv[argv.index(name) + 1] = value
    else:
        argv += [name, value]
    return argv


def to_digits(argv: list[str], tmp: pathlib.Path) -> list[str]:
    """The row on --dataset digits: closed-set rows on --digits_split classification, retrieval rows on the
    class-disjoint split; one epoch of one episode; random init (no ImageNet weights offline)."""
    argv = suite_flags(argv)
    split = "classification" if flag(argv, "--dataset") in CLASSIFICATION else "dml"
    argv = set_flag(argv, "--dataset", "digits")
    for name, value in [("--digits_split", split), ("--source_path", str(tmp)), ("--save_path", str(tmp / "runs")),
                        ("--n_epochs", "1"), ("--n_episodes", "1")]:  # fmt: skip
        argv = set_flag(argv, name, value)
    if "--evaluation_metrics" not in argv:
        argv += ["--evaluation_metrics", "e_recall@1"]
    extra = [f for f in ("--not_pretrained", "--no_progress", "--no_train_metrics") if f not in argv]
    return argv + extra


def row_id(row) -> str:
    return re.sub(r"[^0-9A-Za-z]+", "_", row[0]).strip("_")


def test_the_page_has_the_seed_rows_pasted():
    names = [r[0] for r in ROWS]
    for dataset in ("MNIST", "FashionMNIST", "CIFAR10", "CIFAR100", "Cars196", "CUB200", "SOP"):
        assert any(n.startswith(dataset) for n in names), (dataset, names)
    assert all(hydra_commands.is_hydra(argv) for _, argv in ALL_ROWS)  # the seed's form, not a translation
    assert len(ALL_ROWS) - len(ROWS) == 7  # the README's seven extraction commands


@pytest.mark.parametrize("row", [r for r in ALL_ROWS if r not in ROWS], ids=row_id)
def test_extraction_rows_name_a_run_folder(row):
    flags = hydra_commands.to_flags(row[1])
    assert flags[flags.index("--evaluate") + 1].startswith("Training_Results/")


@pytest.mark.parametrize("row", ROWS, ids=row_id)
def test_readme_seed_row_parses_for_its_dataset(row, make_opt):
    """The literal command (its own dataset and flags) passes the flag checks: names, values, storage metrics."""
    opt = make_opt(*row[1])
    flags = suite_flags(row[1])
    assert opt.dataset == flag(flags, "--dataset", "digits") and opt.loss == flag(flags, "--loss", opt.loss)


@pytest.mark.parametrize("row", ROWS, ids=row_id)
def test_readme_seed_row_builds_on_digits(row, tmp_path, capsys):
    assert main.main(to_digits(row[1], tmp_path) + ["--dry_run"]) == 0
    assert "dry run:" in capsys.readouterr().out


def _train_params():
    params = []
    for row in ROWS:
        resnet = "resnet" in (flag(suite_flags(row[1]), "--arch") or "")
        params.append(pytest.param(row, id=row_id(row), marks=[pytest.mark.slow] if resnet else []))
    return params


@pytest.mark.parametrize("row", _train_params())
def test_readme_seed_row_trains_one_epoch_on_digits(row, tmp_path, no_plots, small_digits, make_opt):
    """One epoch of one episode; the first storage metric is evaluated on the validation split (it drives
    selection, the plateau scheduler and early stopping)."""
    small_digits(40 if "resnet" in (flag(suite_flags(row[1]), "--arch") or "") else 1000)
    argv = to_digits(row[1], tmp_path)
    assert main.main(argv) == 0
    (run,) = list((tmp_path / "runs" / "digits").iterdir())
    opt = make_opt(*argv)
    header = (run / "metrics_validation.csv").read_text().splitlines()[0].split(",")
    assert opt.storage_metrics[0] in header
    assert (run / "embeddings_testing.npz").is_file()
