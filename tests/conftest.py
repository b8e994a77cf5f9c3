"""Shared test set-up and fixtures. Test folders mirror the packages; tests never import each other.

The repository root is on ``sys.path`` (pyproject's ``pythonpath``); test modules are imported with
``--import-mode=importlib``, so two folders may hold files of the same name. Fixtures here:

* ``make_opt(*argv, **flags)``: options exactly as ``python main.py`` builds them (``parameters.parse_args``:
  dataset and loss defaults, checks), e.g. ``make_opt("--loss", "margin", embed_dim=8, learn_temp=True)``.
  The one way tests build options.
* ``run_main``: ``run_main(*args) -> exit code`` of ``main.main`` with ``--save_path`` in a temporary folder;
  ``run_main.run_dir()`` is the one run folder it made.
* ``fast_args``: flags of a short default run (2 epochs, three metrics, no progress bars).
* ``no_plots``: skip the run-end figures (matplotlib costs seconds per run; the plot tests cover them);
  ``plots_off()`` is the same as a context manager, for module-scoped fixtures.
* ``small_digits``: ``--dataset digits`` reads only the first 30 images of each class (fast big-backbone runs);
  the fixture's value ``limit(per_class)`` changes the number.
* ``repo_root``: the repository root (``pathlib.Path``).
* ``stand_in_weights``: a torch hub cache with stand-in pretrained ResNet50 weights (commands that ask for
  ImageNet weights build offline).
* ``browser``: renders an HTML page in headless Chromium (screenshot + console messages); skipped where absent.
"""

from __future__ import annotations

import contextlib
import pathlib

import numpy as np
import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Tiny CPU ops are dominated by intra-op thread hand-offs on a 2-core machine.
torch.set_num_threads(1)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running test, excluded from the default run (-m 'not slow')")


def flag_args(flags: dict) -> list[str]:
    """``{"embed_dim": 8, "learn_temp": True, "tau": [2, 3]}`` -> ``--embed_dim 8 --learn_temp --tau 2 3``."""
    out = []
    for name, value in flags.items():
        if value is False or value is None:
            continue
        out.append(f"--{name}")
        if value is not True:
            out.extend(str(v) for v in (value if isinstance(value, (list, tuple)) else [value]))
    return out


def build_opt(*argv: str, **flags):
    import parameters

    return parameters.parse_args([*argv, *flag_args(flags)])


@pytest.fixture
def make_opt():
    return build_opt


FAST = ["--n_epochs", "2", "--no_progress", "--evaluation_metrics", "e_recall@1", "c_recall@1", "nmi"]


@pytest.fixture
def fast_args() -> list[str]:
    return list(FAST)


class MainRunner:
    """``main.main`` with ``--save_path <tmp>/runs``; ``run_dir()`` finds the one run folder of a dataset."""

    def __init__(self, tmp_path: pathlib.Path):
        self.save_path = tmp_path / "runs"

    def __call__(self, *args: str) -> int:
        import main

        return main.main(["--save_path", str(self.save_path), *args])

    def run_dir(self, dataset: str = "digits") -> pathlib.Path:
        runs = sorted((self.save_path / dataset).iterdir())
        assert len(runs) == 1, runs
        return runs[0]


@pytest.fixture
def run_main(tmp_path) -> MainRunner:
    return MainRunner(tmp_path)


def disable_plots(monkeypatch) -> None:
    from training.plots import ProgressionPlot, UncertaintyPlots

    monkeypatch.setattr(ProgressionPlot, "plot", lambda self, trainer: None)
    monkeypatch.setattr(UncertaintyPlots, "on_run_end", lambda self, trainer: None)


@pytest.fixture
def no_plots(monkeypatch) -> None:
    disable_plots(monkeypatch)


@contextlib.contextmanager
def _plots_off():
    with pytest.MonkeyPatch.context() as mp:
        disable_plots(mp)
        yield


@pytest.fixture(scope="session")
def plots_off():
    """``with plots_off(): ...``: ``no_plots`` for module-scoped fixtures."""
    return _plots_off


@pytest.fixture
def small_digits(monkeypatch):
    """Applied on request (30 images per class); call the returned ``limit(per_class)`` for another size."""
    from sklearn.datasets import load_digits
    from sklearn.utils import Bunch

    import datasets.digits

    full = load_digits()

    def limit(per_class: int) -> None:
        keep = np.concatenate([np.flatnonzero(full.target == c)[:per_class] for c in range(10)])
        monkeypatch.setattr(
            datasets.digits, "load_digits", lambda: Bunch(images=full.images[keep], target=full.target[keep])
        )

    limit(30)
    return limit


@pytest.fixture(scope="session")
def repo_root() -> pathlib.Path:
    return ROOT


@pytest.fixture(scope="session")
def stand_in_hub(tmp_path_factory):
    """A torch hub folder holding random-initialised ResNet50 and BN-Inception weights under the file names their
    loaders look for (torchvision's, pretrainedmodels')."""
    import torchvision
    from pretrainedmodels.models.bninception import BNInception

    hub = tmp_path_factory.mktemp("torch_hub")
    (hub / "checkpoints").mkdir()
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), hub / "checkpoints" / "resnet50-0676ba61.pth")
    torch.save(BNInception(num_classes=1000).state_dict(), hub / "checkpoints" / "bn_inception-52deb4733.pth")
    return hub


@pytest.fixture
def stand_in_weights(stand_in_hub):
    """For one test, torch hub's cache is ``stand_in_hub``: a command that asks for pretrained ResNet50 weights
    builds offline (the values are not ImageNet's)."""
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(stand_in_hub))
    yield stand_in_hub
    torch.hub.set_dir(previous)


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--enable-logging=stderr", "--v=0"]  # fmt: skip


@pytest.fixture
def browser(tmp_path):
    """``browser(page, height=3000) -> (screenshot PIL image, console messages)``: the page rendered by a real
    headless Chromium (Debian's ``chromium``, which .ci/run installs); skipped, saying why, where it is absent."""
    import shutil
    import subprocess

    from PIL import Image

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("no chromium on PATH (apt-get install chromium): the page was not checked in a browser")

    def render(page: pathlib.Path, height: int = 3000):
        shot = tmp_path / f"{page.stem}_screenshot.png"
        proc = subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}",
                               f"--screenshot={shot}", f"--window-size=1280,{height}", page.resolve().as_uri()],
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert shot.is_file(), proc.stderr[-2000:]
        console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
        return Image.open(shot).convert("RGB"), console

    return render
