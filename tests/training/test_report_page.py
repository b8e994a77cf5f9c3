"""training/report_page.py, training/plots.py: the run's report.html (self-contained, checked in a real headless
browser), the progression figure grouped by kind, the retrieval figure at the end of training."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from evaluation.html import HEADER_RGB
from training.plots import group_by_kind, plot_progression

# matplotlib's first and third default colours: the training and testing curves of progression.png
CURVE_RGB = [(31, 119, 180), (44, 160, 44)]


def colour_pixels(image, rgb, tol: int = 12) -> int:
    a = np.asarray(image, dtype=np.int16)
    return int((np.abs(a - np.array(rgb)).max(axis=2) <= tol).sum())


@pytest.fixture(scope="module")
def probabilistic_run(tmp_path_factory):
    """A 2-epoch EL-nivMF run on digits (uncertainty plots too), re-evaluated once, report page written again."""
    import main
    from training.report_page import write_run_report

    save = tmp_path_factory.mktemp("report")
    assert main.main(["--save_path", str(save), "--loss", "proxyvmf_panc", "--embed_dim", "8",
                      "--loss_proxyvmf_n_samples", "2", "--n_epochs", "2", "--no_progress"]) == 0  # fmt: skip
    (run,) = (save / "digits").iterdir()
    assert main.main(["--evaluate", str(run), "--no_progress", "--evaluation_metrics", "c_recall@1"]) == 0
    write_run_report(run)
    return run


def test_report_page_is_self_contained_and_complete(probabilistic_run):
    text = (probabilistic_run / "report.html").read_text()
    summary = json.loads((probabilistic_run / "summary.json").read_text())
    assert not re.search(r'(src|href)="(?!data:)', text)  # nothing to fetch: every image is inlined
    assert text.count('<img src="data:image/png;base64,') == 4  # progression, retrieval, 2 uncertainty plots
    for needle in ("Best metrics", "All metrics at the selected epoch", "Progression", "Retrievals", "Uncertainty",
                   "Re-evaluations", "Configuration", summary["command"], "c_recall@1"):  # fmt: skip
        assert needle in text, needle
    best = summary["best"]["c_recall@1"]
    assert f"<td>{best['value']:.4f}</td><td>{best['epoch']}</td>" in text


def test_report_page_renders_in_a_browser(probabilistic_run, browser):
    """No console message at all (a missing image or a script error would log one); the screenshot shows the
    tables (their header colour) and the plots (the curves' colours)."""
    shot, console = browser(probabilistic_run / "report.html", height=2600)
    assert console == []
    assert colour_pixels(shot, HEADER_RGB, tol=2) > 2000  # table headers
    assert all(colour_pixels(shot, rgb) > 300 for rgb in CURVE_RGB)  # progression curves
    assert (np.asarray(shot).min(axis=2) < 100).mean() > 0.01  # text and figures, not a blank page


def test_progression_groups_curves_by_kind():
    names = ["e_recall@1", "c_map_at_r", "accuracy", "nmi", "c_f1", "dists@intra", "rho_spectrum@2", "norms@5",
             "unc_recall_area", "vmf_mean_kappa", "loss", "lr", "proxy_temperature", "time", "eval_time", "odd"]  # fmt: skip
    groups = dict(group_by_kind(names))
    assert list(groups) == ["retrieval", "classification", "clustering", "distances and spectra", "uncertainty",
                            "loss and learning rate", "timing", "other"]  # fmt: skip
    assert groups["retrieval"] == ["e_recall@1", "c_map_at_r"]
    assert groups["uncertainty"] == ["norms@5", "unc_recall_area", "vmf_mean_kappa"]
    assert groups["loss and learning rate"] == ["loss", "lr", "proxy_temperature"]
    assert groups["other"] == ["odd"]
    assert sum(len(v) for v in groups.values()) == len(names)


def test_one_epoch_progression_is_readable(tmp_path):
    """A single evaluated epoch still gives every panel its point, the selected epoch and one legend."""
    history = {"training": [{"epoch": 1, "loss": 0.5, "lr": 1e-3, "e_recall@1": 0.9}],
               "testing": [{"epoch": 1, "e_recall@1": 0.7, "eval_time": 0.1}]}  # fmt: skip
    path = tmp_path / "progression.png"
    plot_progression(history, path, title="one epoch", selected_epoch=1, selected_metric="e_recall@1")
    from PIL import Image

    image = Image.open(path).convert("RGB")
    assert image.size[0] > 600 and image.size[1] > 400
    assert all(colour_pixels(image, rgb) > 10 for rgb in CURVE_RGB)  # both splits' markers are drawn


def test_training_ends_with_retrieval_figures_of_the_selected_model(probabilistic_run):
    assert (probabilistic_run / "retrieval_testing.png").stat().st_size > 0
    assert not (probabilistic_run / "retrieval_training.png").exists()
