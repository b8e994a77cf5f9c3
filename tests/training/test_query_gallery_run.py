"""A run on a query -> gallery split (``--dataset csv`` with is_query / is_gallery) evaluates queries against the
gallery only, in training and in ``--evaluate``: a hand-built case where the answer is known whatever the network.

Each test query image appears twice among the queries (twins, identical embeddings) and, under the OTHER class,
in the gallery. Searched against the gallery, a query's nearest item is its own image labelled with the other
class (distance 0): Recall@1 = 0, and its class's one gallery item comes second: Recall@2 = 1, MAP@R = 0 (R = 1).
Searched leave-one-out instead, its twin (same class, distance 0) would make Recall@1 = 1 for half the queries at
least.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

METRICS = ["e_recall@1", "e_recall@2", "c_recall@1", "map_at_r"]


@pytest.fixture
def twin_table(tmp_path):
    rng = np.random.default_rng(0)
    for name in [f"train_{c}_{k}" for c in range(4) for k in range(4)] + ["a", "b"]:
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(tmp_path / f"{name}.png")
    rows = [f"train_{c}_{k}.png,t{c},train,0,0" for c in range(4) for k in range(4)]
    rows += ["a.png,A,test,1,0", "a.png,A,test,1,0", "b.png,A,test,0,1",
             "a.png,B,test,0,1", "b.png,B,test,1,0", "b.png,B,test,1,0"]  # fmt: skip
    (tmp_path / "table.csv").write_text("path,label,split,is_query,is_gallery\n" + "\n".join(rows) + "\n")
    return tmp_path / "table.csv"


def naive_query_gallery(emb: np.ndarray, labels: np.ndarray, query: np.ndarray, gallery: np.ndarray) -> dict:
    """Recall@1/2 and MAP@R of the queries against the gallery by a plain loop (ties: gallery order)."""
    g = np.flatnonzero(gallery)
    recall1, recall2, ap = [], [], []
    for q in np.flatnonzero(query):
        cand = [i for i in g if i != q]
        order = sorted(cand, key=lambda i: (float(np.sum((emb[q] - emb[i]) ** 2)), i))
        hits = [labels[i] == labels[q] for i in order]
        r = sum(hits)
        recall1.append(float(hits[0]))
        recall2.append(float(any(hits[:2])))
        ap.append(sum(np.cumsum(hits[:r])[j] / (j + 1) for j in range(r) if hits[j]) / r)
    return {"e_recall@1": np.mean(recall1), "e_recall@2": np.mean(recall2), "map_at_r": np.mean(ap)}


def test_training_and_evaluate_search_queries_against_the_gallery(twin_table, run_main, no_plots):
    args = ["--dataset", "csv", "--source_path", str(twin_table), "--arch", "resnet18", "--not_pretrained",
            "--image_size", "16", "--bs", "8", "--samples_per_class", "2", "--n_epochs", "1", "--no_progress",
            "--kernels", "0", "--evaluation_metrics", *METRICS, "--storage_metrics", "e_recall@2"]  # fmt: skip
    assert run_main(*args) == 0
    run = next((run_main.save_path / "csv").iterdir())
    row = list(csv.DictReader(open(run / "metrics_testing.csv")))[-1]
    measured = {m: float(row[m]) for m in METRICS}
    assert measured == {"e_recall@1": 0.0, "e_recall@2": 1.0, "c_recall@1": 0.0, "map_at_r": 0.0}
    saved = np.load(run / "embeddings_testing.npz")
    labels = saved["labels"]
    query, gallery = np.array([1, 1, 0, 0, 1, 1], bool), np.array([0, 0, 1, 1, 0, 0], bool)
    assert np.array_equal(saved["queries"], query) and np.array_equal(saved["gallery"], gallery)  # exported masks
    naive = naive_query_gallery(saved["embeddings"], labels, query, gallery)
    assert naive == pytest.approx({m: measured[m] for m in naive})
    # --evaluate reads the same split the same way.
    assert run_main("--evaluate", str(run), "--no_progress", "--kernels", "0") == 0
    again = json.loads(next((run / "evaluation").rglob("metrics.json")).read_text())
    assert {m: again["testing"][m] for m in METRICS} == measured


def test_uncertainty_rejection_plot_of_a_query_gallery_run(twin_table, run_main):
    """An EL-nivMF run on the split: the rejection curve searches queries against the gallery (every query wrong:
    area 0, as ``unc_recall_area``), where leave-one-out its twin would often be right."""
    from evaluation.uncertainty_plots import rejection_data

    args = ["--dataset", "csv", "--source_path", str(twin_table), "--arch", "resnet18_frozen", "--not_pretrained",
            "--loss", "proxyvmf_panc", "--image_size", "16", "--bs", "8", "--samples_per_class", "2", "--n_epochs",
            "1", "--no_progress", "--kernels", "0", "--evaluation_metrics", "c_recall@1", "unc_recall_area",
            "--embed_dim", "8", "--loss_proxyvmf_n_samples", "2"]  # fmt: skip
    assert run_main(*args) == 0
    run = next((run_main.save_path / "csv").iterdir())
    assert (run / "uncertainty_rejection.png").stat().st_size > 1000
    row = list(csv.DictReader(open(run / "metrics_testing.csv")))[-1]
    saved = np.load(run / "embeddings_testing.npz")
    area = rejection_data(saved["embeddings"], saved["labels"], saved["queries"], saved["gallery"])[2]
    assert area == float(row["unc_recall_area"]) == 0.0
    assert rejection_data(saved["embeddings"], saved["labels"])[2] > 0
