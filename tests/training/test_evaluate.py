"""training.evaluate (``python main.py --evaluate <run folder>``): a checkpoint evaluated again reproduces what the
run recorded, another dataset and --embed work, the run's own files never change, bad input is one line."""

from __future__ import annotations

import csv
import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits


def read_csv(path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def fingerprint(run) -> dict[str, str]:
    """sha1 of every file of the run folder outside evaluation/."""
    return {p.relative_to(run).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*")) if p.is_file() and "evaluation" not in p.relative_to(run).parts}  # fmt: skip


LOSSES = {
    "margin": [],
    "vmf_softmax": ["--digits_split", "classification"],  # sampled metrics, accuracy, ECE
    "hyperbolic_softmax": [],  # Poincare retrieval
    "proxyvmf_panc": ["--embed_dim", "8", "--loss_proxyvmf_n_samples", "2", "--loss_proxyvmf_warmstart"],
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, plots_off):
    """loss -> run folder of a 2-epoch run on digits."""
    import main

    runs = {}
    for loss, extra in LOSSES.items():
        save = tmp_path_factory.mktemp(loss)
        with plots_off():
            assert main.main(["--save_path", str(save), "--loss", loss, "--n_epochs", "2", "--no_progress", *extra]) == 0
        (runs[loss],) = (save / "digits").iterdir()
    return runs


@pytest.mark.parametrize("checkpoint", ["best", "last"])
@pytest.mark.parametrize("loss", list(LOSSES))
def test_evaluation_reproduces_the_recorded_values(loss, checkpoint, trained, run_main, no_plots):
    run = trained[loss]
    before = fingerprint(run)
    assert run_main("--evaluate", str(run), "--checkpoint", checkpoint, "--no_progress") == 0
    config = json.loads((run / "config.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    first = config["storage_metrics"][0]
    epoch = summary["best"][first]["epoch"] if checkpoint == "best" else summary["epochs_run"]
    name = f"best_{first.replace('@', '_at_')}" if checkpoint == "best" else "last"
    out = run / "evaluation" / name
    results = json.loads((out / "metrics.json").read_text())
    assert set(results) == set(summary["splits"])
    for split, values in results.items():
        (row,) = [r for r in read_csv(run / f"metrics_{split}.csv") if int(r["epoch"]) == epoch]
        recorded = {k: float(v) for k, v in row.items() if v != "" and k in config["evaluation_metrics"]}
        assert set(values) == set(recorded), split  # the same metrics, the loss's own included
        for metric, value in values.items():
            assert value == pytest.approx(recorded[metric], rel=1e-5, abs=1e-6, nan_ok=True), (split, metric)
        saved = np.load(out / f"embeddings_{split}.npz")
        assert saved["embeddings"].shape == (len(saved["labels"]), config["embed_dim"])
        if checkpoint == "best":  # the run saved the selected model's embeddings too
            np.testing.assert_allclose(saved["embeddings"], np.load(run / f"embeddings_{split}.npz")["embeddings"],
                                       rtol=1e-5, atol=1e-6)  # fmt: skip
    assert (out / "retrieval_testing.png").stat().st_size > 0 and not (out / "retrieval_training.png").exists()
    assert fingerprint(run) == before  # the run's own files are untouched


def test_evaluation_metrics_and_another_dataset(trained, run_main, no_plots):
    """--evaluation_metrics replaces the run's list; --digits_split classification gives other splits (their names
    keep the dataset's), and the loss's metrics follow the splits' closed-set facts."""
    run = trained["margin"]
    assert run_main("--evaluate", str(run), "--evaluation_metrics", "c_recall@1", "r_precision", "--no_progress") == 0
    results = json.loads((run / "evaluation" / "best_e_recall_at_1" / "metrics.json").read_text())
    assert all(set(v) == {"c_recall@1", "r_precision"} for v in results.values())
    vmf = trained["vmf_softmax"]
    assert run_main("--evaluate", str(vmf), "--digits_split", "dml", "--no_progress") == 0
    results = json.loads((vmf / "evaluation" / "best_e_recall_at_1" / "metrics.json").read_text())
    assert set(results) == {"training", "testing"}  # no validation split under the Roth protocol
    assert "accuracy" in results["training"] and "accuracy" not in results["testing"]  # testing: unseen classes
    assert "vmf_recall@1" in results["testing"]


def test_embed_an_image_folder(trained, run_main, tmp_path, no_plots, capsys):
    """Digits test images written as PNGs embed like the run's own test embeddings (up to 8-bit rounding);
    sub-folders are read, a corrupt file is named and skipped, the concentration comes along."""
    run = trained["vmf_softmax"]
    digits = load_digits()
    folder = tmp_path / "my_images"
    (folder / "sub").mkdir(parents=True)
    picks = np.flatnonzero(digits.target == 7)[:3]
    for n, i in enumerate(picks):
        image = Image.fromarray(np.round(digits.images[i] / 16 * 255).astype(np.uint8), mode="L")
        image.save(folder / ("sub" if n == 2 else "") / f"seven_{n}.png")
    (folder / "broken.jpg").write_bytes(b"not an image")
    assert run_main("--evaluate", str(run), "--embed", str(folder), "--no_progress") == 0
    out = run / "evaluation" / "best_e_recall_at_1" / "embeddings_my_images.npz"
    saved = np.load(out)
    assert list(saved["paths"]) == ["seven_0.png", "seven_1.png", "sub/seven_2.png"]
    assert saved["embeddings"].shape == (3, 32)
    np.testing.assert_allclose(saved["norms"], np.linalg.norm(saved["embeddings"], axis=1), rtol=1e-5)
    np.testing.assert_allclose(saved["kappa"], float(saved["vmf_scale"]) * saved["norms"], rtol=1e-5)
    out_text = capsys.readouterr().out
    assert "broken.jpg" in out_text and "1 corrupt, skipped" in out_text
    # the same images as the run embedded them (digits' test split: the classification split's testing images)
    state = torch.load(run / "checkpoint_best_e_recall_at_1.pth", weights_only=True)
    assert state["facts"]["input_shape"] == [1, 8, 8]
    import parameters
    from training import build_run

    built = build_run(parameters.parse_args(["--digits_split", "classification", "--loss", "vmf_softmax"]))
    built.model.load_state_dict(state["model"])
    built.model.eval()
    x = (torch.from_numpy(digits.images[picks] / 16.0).float().unsqueeze(1) - 0.3053) / 0.3760
    with torch.no_grad():
        reference = built.model(x).numpy()
    cos = (reference * saved["embeddings"]).sum(1) / np.linalg.norm(reference, axis=1) / saved["norms"]
    assert cos.min() > 0.995, cos


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--checkpoint", "best_nmi"], "no checkpoint_best_nmi.pth"),
        (["--checkpoint", "missing.pth"], "checkpoints there: checkpoint_best_e_recall_at_1.pth"),
        (["--arch", "resnet18"], "does not fit the run's architecture"),
        (["--embed_dim", "16"], "does not fit the run's architecture"),
        (["--embed", "{empty}"], "no images there"),
        (["--embed", "{missing}"], "no such folder"),
        (["--evaluation_metrics", "accuracy"], "metric 'accuracy' needs the class probabilities"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(args, fragment, trained, run_main, tmp_path, capsys):
    run = trained["margin"]
    (tmp_path / "empty").mkdir()
    args = [a.format(empty=tmp_path / "empty", missing=tmp_path / "missing") for a in args]
    before = fingerprint(run)
    evaluations = sorted(p.name for p in (run / "evaluation").glob("*")) if (run / "evaluation").exists() else []
    assert run_main("--evaluate", str(run), *args) == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1, err
    assert fingerprint(run) == before
    now = sorted(p.name for p in (run / "evaluation").glob("*")) if (run / "evaluation").exists() else []
    assert now == evaluations


def test_a_folder_that_is_not_a_run_and_a_file_that_is_not_a_checkpoint(trained, run_main, tmp_path, capsys):
    assert run_main("--evaluate", str(tmp_path)) == 2
    assert "not a run folder of this suite" in capsys.readouterr().err
    fake = tmp_path / "fake.pth"
    fake.write_bytes(b"garbage")
    assert run_main("--evaluate", str(trained["margin"]), "--checkpoint", str(fake)) == 2
    err = capsys.readouterr().err
    assert "cannot read checkpoint" in err and len(err.strip().splitlines()) == 1


def test_checkpoint_and_embed_need_evaluate(run_main, capsys):
    assert run_main("--embed", "somewhere") == 2
    assert "add --evaluate <run folder>" in capsys.readouterr().err
