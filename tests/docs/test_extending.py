"""docs/extending.md is complete: a copy of the repository with exactly the page's example modules (and its one
``default_hooks`` line) regenerates its component tables, trains with all seven new components together, and
passes the registry contract tests for each of them (slow)."""

from __future__ import annotations

import csv
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

ROOT = pathlib.Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "extending.md"
HOOK_LINE = "    return hooks + [Summary(), RunReport()]"
NEW_NAMES = ["cosine_triplet", "hardest", "class_cycle", "mlp", "digits_odd_even", "c_precision"]  # and the hook


def example_modules() -> dict[str, str]:
    """path -> source of every ```python block of the page whose first line is ``# <path>.py``."""
    out = {}
    for block in re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.S):
        first, _, body = block.partition("\n")
        match = re.fullmatch(r"# ([\w/]+\.py)", first)
        if match:
            out[match.group(1)] = body
    return out


def run(cmd: list[str], cwd: pathlib.Path, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def extended(tmp_path_factory) -> pathlib.Path:
    """The repository copy with the page's modules; its component tables regenerated as the page says."""
    repo = tmp_path_factory.mktemp("extended") / "repo"
    shutil.copytree(ROOT, repo, ignore=shutil.ignore_patterns(".git", "__pycache__", "Training_Results", "wandb",
                                                              ".*_cache"))  # fmt: skip
    for path, source in example_modules().items():
        assert not (repo / path).exists(), f"{path} would overwrite a module of the suite"
        (repo / path).write_text(source)
    recording = repo / "training" / "recording.py"
    text = recording.read_text()
    assert text.count(HOOK_LINE) == 1, "docs/extending.md quotes the default_hooks line as it stands"
    recording.write_text(text.replace(HOOK_LINE, "    from training.best_so_far import BestSoFar\n\n"
                                                 + HOOK_LINE[:-1] + ", BestSoFar()]"))  # fmt: skip
    run([sys.executable, "docs/component_table.py", "--write", "docs/components.md"], repo)
    return repo


def test_the_page_has_one_example_per_kind():
    paths = sorted(example_modules())
    assert [p.split("/")[0] for p in paths] == ["architectures", "batch_mining", "criteria", "datasampler",
                                                "datasets", "metrics", "training"]  # fmt: skip
    assert (HOOK_LINE[:-1] + ", BestSoFar()]").strip() in PAGE.read_text()  # the one line it tells to change


def test_the_examples_train_together(extended, tmp_path):
    command = re.search(r"python main\.py (--dataset digits_odd_even[^`]*?)\n```", PAGE.read_text(), re.S).group(1)
    argv = command.replace("\\\n", " ").split()
    run([sys.executable, "main.py", *argv, "--no_progress", "--save_path", str(tmp_path)], extended)
    (folder,) = (tmp_path / "digits_odd_even").iterdir()
    rows = list(csv.DictReader(open(folder / "metrics_testing.csv")))
    assert len(rows) == 2 and float(rows[-1]["e_recall@1"]) > 0.5
    best = [r for r in csv.DictReader(open(folder / "best_so_far.csv"))]
    assert [int(r["epoch"]) for r in best] == [1, 2] and {r["metric"] for r in best} == {"e_recall@1"}
    # c_precision@5 of the saved (selected) embeddings against a naive loop over cosine similarities
    npz = np.load(folder / "embeddings_testing.npz")
    x = F.normalize(torch.from_numpy(npz["embeddings"]), dim=1).numpy()
    y = npz["labels"]
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    top5 = np.argsort(-sims, axis=1, kind="stable")[:, :5]
    naive = float(np.mean([(y[top5[i]] == y[i]).mean() for i in range(len(y))]))
    selected = next(r for r in rows if int(r["epoch"]) == int(best[-1]["best_epoch"]))
    assert float(selected["c_precision@5"]) == pytest.approx(naive, abs=1e-6)
    components = (extended / "docs" / "components.md").read_text()
    assert all(f"`{name}`" in components for name in NEW_NAMES)


@pytest.mark.slow  # the contract tests of six registries and the table check, in a fresh process
def test_the_contract_tests_cover_the_examples(extended):
    names = " or ".join(NEW_NAMES)
    proc = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", names,
                "tests/criteria/test_contract.py", "tests/batch_mining/test_contract.py",
                "tests/datasampler/test_contract.py", "tests/architectures/test_contract.py",
                "tests/datasets/test_contract.py", "tests/metrics/test_contract.py",
                "tests/docs/test_component_table.py"], extended, timeout=1200)  # fmt: skip
    summary = proc.stdout.strip().splitlines()[-1]
    assert "passed" in summary and "failed" not in summary and "error" not in summary, summary
    collected = subprocess.run([sys.executable, "-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider",
                                "-k", names, "tests"], cwd=extended, capture_output=True, text=True).stdout  # fmt: skip
    for name in NEW_NAMES:
        assert name in collected, f"no contract test picked up {name}"
