"""The seed-grouped report against statistics computed by hand (numpy / statistics)."""

from __future__ import annotations

import csv
import json
import statistics

import pytest

from evaluation import report
from training import run_folder


@pytest.fixture
def fake_run(make_opt):
    """``fake_run(root, dataset, group, seed, rows, best_epoch)``: a run folder written by the suite's own
    writers from ``main.py``'s options; ``rows``: epoch -> metrics of the testing split."""

    def write(root, dataset, group, seed, rows, best_epoch):
        opt = make_opt("--save_path", str(root), "--dataset", dataset, "--group", group, "--seed", str(seed),
                       "--savename", "group_plus_seed", "--storage_metrics", "e_recall@1")  # fmt: skip
        assert not opt.resume
        path = run_folder.make_run_dir(opt)
        assert path == root / dataset / f"{group}_s{seed}"
        run_folder.write_config(path, opt)
        log = run_folder.MetricCSV(path)
        for epoch, values in rows.items():
            log.log("testing", epoch, values)
        best = {"e_recall@1": {"value": rows[best_epoch]["e_recall@1"], "epoch": best_epoch, "split": "testing",
                               "at_best": {"testing": rows[best_epoch]["e_recall@1"]}}}  # fmt: skip
        run_folder.write_summary(path, {"run": str(path), "command": opt.command, "selection_split": "testing",
                                        "selection_note": "", "splits": ["testing"], "best": best, "epochs_run": 2,
                                        "stop_reason": ""})  # fmt: skip
        return path

    return write


def test_mean_std_sem_per_group(tmp_path, capsys, fake_run):
    margin = [(0.50, 0.30), (0.60, 0.40), (0.70, 0.20)]  # (recall at selected epoch, nmi)
    for seed, (r, n) in enumerate(margin):
        fake_run(tmp_path, "cub200", "Margin", seed, {1: {"e_recall@1": r, "nmi": n}, 2: {"e_recall@1": r - 0.1,
                 "nmi": 0.9}}, best_epoch=1)  # fmt: skip
    fake_run(tmp_path, "cub200", "Triplet", 0, {1: {"e_recall@1": 0.1, "nmi": 0.2}}, best_epoch=1)
    out = tmp_path / "out"
    assert report.main([str(tmp_path), "--out", str(out)]) == 0
    records = list(csv.DictReader(open(out / "report.csv")))
    rec = {(r["method"], r["metric"]): r for r in records}
    recalls = [r for r, _ in margin]
    assert float(rec["Margin", "e_recall@1"]["mean"]) == pytest.approx(statistics.mean(recalls))
    assert float(rec["Margin", "e_recall@1"]["std"]) == pytest.approx(statistics.stdev(recalls))
    assert float(rec["Margin", "e_recall@1"]["sem"]) == pytest.approx(statistics.stdev(recalls) / 3**0.5)
    assert float(rec["Margin", "nmi"]["mean"]) == pytest.approx(0.3)  # the selected epoch, not the last
    assert int(rec["Triplet", "nmi"]["n"]) == 1 and float(rec["Triplet", "nmi"]["std"]) == 0
    text = capsys.readouterr().out
    assert "| cub200 | Margin | 3 | 60.00 ± 10.00 |" in text
    assert (out / "report.md").is_file() and (out / "report.png").stat().st_size > 0


def test_sem_flag_and_empty_folder(tmp_path, capsys, fake_run):
    for seed, r in enumerate([0.2, 0.4]):
        fake_run(tmp_path, "digits", "G", seed, {1: {"e_recall@1": r}}, best_epoch=1)
    assert report.main([str(tmp_path), "--sem", "--metrics", "e_recall@1"]) == 0
    sem = statistics.stdev([0.2, 0.4]) / 2**0.5
    assert f"30.00 ± {100 * sem:.2f}" in capsys.readouterr().out
    empty = tmp_path / "empty"
    empty.mkdir()
    assert report.main([str(empty)]) == 2
    assert "no finished run folders" in capsys.readouterr().err
    assert json.loads((tmp_path / "digits" / "G_s0" / "config.json").read_text())["group"] == "G"


def test_html_page_shows_the_table_and_the_bars(tmp_path, fake_run, browser):
    """report.html: the same cells as the Markdown table, the bars inlined, every run listed; in a real browser
    it logs nothing to the console and shows the table and the figure."""
    for seed, r in enumerate([0.5, 0.7]):
        fake_run(tmp_path, "cars196", "Margin", seed, {1: {"e_recall@1": r, "nmi": 0.3}}, best_epoch=1)
    out = tmp_path / "out"
    assert report.main([str(tmp_path), "--out", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert "<td>60.00 ± 14.14</td>" in page and page.count('src="data:image/png;base64,') == 1
    assert 'src="' not in page.replace('src="data:', "")
    assert all(f"Margin_s{seed}" in page for seed in (0, 1))
    import numpy as np

    from evaluation.html import HEADER_RGB

    shot, console = browser(out / "report.html", height=1400)
    assert console == []
    pixels = np.asarray(shot, dtype=np.int16)
    assert (np.abs(pixels - np.array(HEADER_RGB)).max(axis=2) <= 2).sum() > 1000  # table header cells
    bar = 0.8 * np.array((31, 119, 180)) + 0.2 * 255  # tab:blue at alpha 0.8 on white
    assert (np.abs(pixels - bar).max(axis=2) <= 10).sum() > 1000  # the bars


def test_published_values_beside_the_measured_ones(tmp_path, fake_run, capsys):
    """--published: the cell shows the published value and measured - published; each number's source is listed;
    a file without paper/table for a number, or with a value that is not a number, is refused with one line."""
    for seed, r in enumerate([0.5, 0.7]):
        fake_run(tmp_path / "runs", "cub200", "Margin", seed, {1: {"e_recall@1": r}}, best_epoch=1)
    published = tmp_path / "published.csv"
    # a test file, not published data: the values only exercise the arithmetic
    published.write_text("dataset,group,metric,value,std,paper,table\n"
                         "cub200,Margin,e_recall@1,63.5,0.2,Some et al.,Table 9\n")  # fmt: skip
    out = tmp_path / "out"
    assert report.main([str(tmp_path / "runs"), "--published", str(published), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "60.00 ± 14.14 (published 63.50, -3.50)" in text and "Published values: Some et al., Table 9" in text
    (row,) = [r for r in csv.DictReader(open(out / "report.csv")) if r["metric"] == "e_recall@1"]
    assert float(row["published"]) == 63.5 and float(row["difference"]) == pytest.approx(-3.5)
    assert "published 63.50" in (out / "report.html").read_text()
    for body, fragment in [("dataset,group,metric,value,paper,table\ncub200,Margin,e_recall@1,63.5,,Table 9\n",
                            "needs its paper and table"),
                           ("dataset,group,metric,value,paper,table\ncub200,Margin,e_recall@1,high,P,T\n",
                            "is not a number"),
                           ("dataset,metric,value\n", "no column group")]:  # fmt: skip
        published.write_text(body)
        with pytest.raises(SystemExit, match=fragment):
            report.main([str(tmp_path / "runs"), "--published", str(published)])
