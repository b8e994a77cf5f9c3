"""Every mistake, one line: each numeric flag's range, the path flags, the datasets' layout faults, a diverging run,
a full disk. Each ends with exit code 2 (or a warning that is one line) and keeps what was already written."""

from __future__ import annotations

import csv
import errno
import os

import pytest
import torch

import main
import parameters
from datasets import synthetic
from utilities.flag_types import Number

NUMERIC = [a for a in parameters.build_parser()._actions if isinstance(a.type, Number) or a.type in (int, float)]


def one_line_error(capsys, *args) -> str:
    assert main.main(list(args)) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("action", NUMERIC, ids=lambda a: a.dest)
def test_every_numeric_flag_is_range_checked(action, capsys):
    """Declared with a range (``utilities.flag_types.Number``), so NaN, infinity and values beyond its bounds are
    refused by the parser with one line naming the flag."""
    assert isinstance(action.type, Number), f"--{action.dest}: declare its range with utilities.flag_types.Number"
    flag = action.option_strings[0]
    bad = ["nan", "inf", "abc"]
    if action.type.low is not None:
        bad.append(str(action.type.low - 1 if action.type.kind is int else action.type.low - 0.5))
    if action.type.high is not None:
        bad.append(str(action.type.high + 1))
    for value in bad:
        if action.type.kind is float and value in map(str, action.type.also):
            continue
        err = one_line_error(capsys, flag, value, "--dry_run")
        assert f"argument {flag}" in err and "expected" in err, err


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--seed", "-1"], "argument --seed: expected an integer >= 0"),
        (["--resume", "{tmp}/nowhere"], "--resume {tmp}/nowhere: no such run folder"),
        (["--resume", "{tmp}/a_file"], "no such run folder"),
        (["--resume", "{tmp}"], "no checkpoint_last.pth there"),
        (["--save_path", "{tmp}/a_file/runs"], "cannot create the run folder"),
        (["--dataset", "folder", "--source_path", "{tmp}", "--folder_root", "missing"], "missing not found"),
        (["--evaluate", "{tmp}/nowhere"], "not a run folder of this suite"),
    ],
)
def test_path_flags(args, fragment, tmp_path, capsys):
    (tmp_path / "a_file").write_text("not a folder")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    err = one_line_error(capsys, *args, "--n_epochs", "1", "--no_progress")
    assert fragment.replace("{tmp}", str(tmp_path)) in err, err


def cub(root, **kw):
    return synthetic.make_cub200(str(root), n_classes=8, per_class=2, size=16, **kw)


LAYOUT_FAULTS = {
    "cub200 empty class folder": ("cub200", lambda r: (cub(r), os.makedirs(r / "cub200/images/009.Extra")),
                                  "holds no image"),
    "cub200 zero-byte image": ("cub200", lambda r: (cub(r), next((r / "cub200/images").rglob("*.jpg")).write_bytes(b"")),
                               "is empty (0 bytes)"),
    "cars196 missing folder": ("cars196", lambda r: None, "not found; expected layout"),
    "sop info names a missing image": ("online_products", lambda r: (
        synthetic.make_online_products(str(r), n_classes=8, per_class=2, size=16),
        next((r / "online_products/images").rglob("*.JPG")).unlink()), "not found; restore it"),
    "sop info names an unknown class": ("online_products", lambda r: (
        synthetic.make_online_products(str(r), n_classes=8, per_class=2, size=16),
        (r / "online_products/Info_Files/Ebay_test.txt").write_text(
            (r / "online_products/Info_Files/Ebay_test.txt").read_text().replace(" 5 ", " five ", 1))),
        "expected 'image_id class_id super_class_id path'"),
    "mnist missing files": ("mnist", lambda r: None, "mnist not found"),
    "in_shop missing folder": ("in_shop", lambda r: None, "in_shop not found (nor in-shop or Inshop_Clothes)"),
    "in_shop partition names a missing image": ("in_shop", lambda r: (
        synthetic.make_in_shop(str(r), n_items=6, per_item=2, size=16),
        next((r / "in_shop/img").rglob("*.jpg")).unlink()), "not found; restore it"),
    "csv table is a folder": ("csv", lambda r: None, "is not a file; --dataset csv reads a CSV file"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(LAYOUT_FAULTS))
def test_dataset_layout_faults(case, tmp_path, capsys):
    dataset, make, fragment = LAYOUT_FAULTS[case]
    make(tmp_path)
    err = one_line_error(capsys, "--dataset", dataset, "--source_path", str(tmp_path), "--not_pretrained",
                         "--arch", "resnet18", "--image_size", "16", "--bs", "4", "--samples_per_class", "2",
                         "--dry_run")  # fmt: skip
    assert fragment in err, err


def test_an_unreadable_image_stops_training_naming_it(tmp_path, capsys):
    """A corrupt (non-empty) image is found when it is read, in a data-loader worker: one line naming the file."""
    cub(tmp_path)
    bad = sorted((tmp_path / "cub200/images").rglob("*.jpg"))[0]
    bad.write_bytes(b"this is not a jpeg")
    err = one_line_error(capsys, "--dataset", "cub200", "--source_path", str(tmp_path), "--not_pretrained", "--arch",
                         "resnet18", "--image_size", "16", "--bs", "4", "--n_epochs", "1", "--kernels", "1",
                         "--no_progress", "--save_path", str(tmp_path / "runs"))  # fmt: skip
    assert f"cannot read image {bad}" in err


@pytest.mark.parametrize("lr, fragment", [("1e30", "non-finite"), ("1e12", "non-finite")])
def test_a_diverging_run_stops_with_one_line_naming_epoch_and_step(lr, fragment, run_main, capsys, no_plots):
    """--lr 1e30: the first step blows the weights up; the next forward pass gives non-finite embeddings, which
    are reported as such (the distance miner fails on them, and the loop then names the embeddings)."""
    assert run_main("--lr", lr, "--n_epochs", "2", "--no_progress", "--evaluation_metrics", "e_recall@1") == 2
    err = capsys.readouterr().err
    assert fragment in err and "at epoch 1, batch" in err and "--lr" in err and len(err.strip().splitlines()) == 1


def test_an_exploding_but_finite_loss_is_reported(run_main, capsys, monkeypatch, no_plots):
    import criteria.margin

    forward = criteria.margin.Margin.forward
    calls = []

    def growing(self, embeddings, labels, triplets=None):
        calls.append(1)
        return forward(self, embeddings, labels, triplets) * (10.0 ** len(calls))  # x10 per step, stays finite

    monkeypatch.setattr(criteria.margin.Margin, "forward", growing)
    assert run_main("--n_epochs", "1", "--no_progress", "--evaluation_metrics", "e_recall@1") == 0
    out = capsys.readouterr().out
    assert out.count("the loss is exploding") == 1 and "consider a lower --lr" in out


def test_a_full_disk_stops_with_one_line_and_keeps_the_last_checkpoint(run_main, capsys, monkeypatch, no_plots):
    import training.checkpoint

    save, calls = training.checkpoint.torch.save, []

    def fill_up(obj, path, *a, **k):
        calls.append(path)
        if len(calls) == 3:  # after epoch 1's best and last checkpoints: the disk is full
            with open(path, "wb") as f:
                f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return save(obj, path, *a, **k)

    monkeypatch.setattr(training.checkpoint.torch, "save", fill_up)
    assert run_main("--n_epochs", "3", "--no_progress", "--evaluation_metrics", "e_recall@1") == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and len(err.strip().splitlines()) == 1 and "--resume" in err
    run = run_main.run_dir()
    assert not list(run.glob("*.tmp"))  # the failed write left nothing behind
    state = torch.load(run / "checkpoint_last.pth", weights_only=True)  # the last good one, intact
    assert state["train_state"]["epoch"] == 1
    assert [r["epoch"] for r in csv.DictReader(open(run / "metrics_testing.csv"))] == ["1", "2"]
