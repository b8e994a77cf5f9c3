"""The run folder: config, command, per-epoch CSVs, summary, log (see docs/outputs.md).

``<save_path>/<dataset>/<group>_s<seed>/``; an existing folder is never overwritten
(a numbered suffix is added) unless it is being resumed. Only rank 0 writes.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import sys
from pathlib import Path

from utilities.errors import UserError

SECRET_KEYS = ("wandb_key", "api_key", "token", "password")


def run_name(opt) -> str:
    return f"{opt.group}_s{opt.seed}" if opt.savename == "group_plus_seed" else opt.savename


def make_run_dir(opt) -> Path:
    """Create a fresh run folder; never reuse one that holds earlier results."""
    if opt.resume:
        return Path(opt.resume)
    base = Path(opt.save_path) / opt.dataset / run_name(opt)
    path, n = base, 1
    while path.exists():
        path = base.with_name(f"{base.name}_{n}")
        n += 1
    try:
        path.mkdir(parents=True)
        probe = path / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise UserError(f"--save_path {opt.save_path}: cannot create the run folder {path} ({err.strerror}); "
                        "choose a writable --save_path") from None  # fmt: skip
    return path


def public_config(opt) -> dict:
    """``vars(opt)`` without secrets, JSON-safe."""
    out = {}
    for key, value in vars(opt).items():
        if any(s in key.lower() for s in SECRET_KEYS):
            continue
        out[key] = value if isinstance(value, (int, float, str, bool, list, type(None))) else str(value)
    return out


def setup_logging(run_dir: Path | None, main_process: bool = True) -> logging.Logger:
    """Console logging for rank 0, plus ``log.txt`` in the run folder."""
    logger = logging.getLogger("dml")
    logger.handlers.clear()
    logger.setLevel(logging.INFO if main_process else logging.WARNING)
    logger.propagate = False
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(console)
    if run_dir is not None and main_process:
        handler = logging.FileHandler(run_dir / "log.txt")
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        logger.addHandler(handler)
    return logger


def write_config(run_dir: Path, opt) -> None:
    write_text(run_dir / "config.json", json.dumps(public_config(opt), indent=2, sort_keys=True))
    with open(run_dir / "command.txt", "a") as f:
        f.write(opt.command + "\n")


def read_history(run_dir: Path) -> dict[str, list[dict]]:
    """split -> rows (dicts of floats, NaN where a cell is empty) of the run folder's ``metrics_<split>.csv``."""
    history = {}
    for path in sorted(Path(run_dir).glob("metrics_*.csv")):
        with open(path) as f:
            rows = [{k: (int(float(v)) if k == "epoch" else float(v)) if v not in ("", None) else float("nan")
                     for k, v in r.items()} for r in csv.DictReader(f)]  # fmt: skip
        history[path.stem[len("metrics_") :]] = rows
    return history


class MetricCSV:
    """One wide CSV per split: ``metrics_<split>.csv`` with a row per evaluated epoch;
    ``metrics_training.csv`` has a row per epoch (loss, lr, time)."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.history = read_history(run_dir)  # resume: keep what is there

    def log(self, split: str, epoch: int, values: dict[str, float]) -> None:
        rows = self.history.setdefault(split, [])
        rows[:] = [r for r in rows if int(r["epoch"]) < epoch]  # a resumed epoch replaces its old row
        rows.append({"epoch": epoch, **values})
        keys = ["epoch"] + sorted({k for r in rows for k in r if k != "epoch"})
        tmp = self.run_dir / f"metrics_{split}.csv.tmp"
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.run_dir / f"metrics_{split}.csv")


def write_text(path: Path, text: str) -> None:
    """Write atomically: a reader (or a crash) never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_summary(run_dir: Path, summary: dict) -> None:
    """``summary.json`` and a readable ``summary.md``."""
    write_text(run_dir / "summary.json", json.dumps(summary, indent=2, sort_keys=True))
    lines = [
        f"# {summary['run']}",
        "",
        f"Selection split: **{summary['selection_split']}** ({summary['selection_note']})",
        "",
    ]
    lines += ["| storage metric | best | epoch | " + " | ".join(f"{s} at best" for s in summary["splits"]) + " |"]
    lines += ["|---|---|---|" + "---|" * len(summary["splits"])]
    for metric, best in summary["best"].items():
        at = " | ".join(f"{best['at_best'].get(s, float('nan')):.4f}" for s in summary["splits"])
        lines.append(f"| {metric} | {best['value']:.4f} | {best['epoch']} | {at} |")
    lines += ["", f"Epochs run: {summary['epochs_run']}; stopped: {summary['stop_reason']}"]
    write_text(run_dir / "summary.md", "\n".join(lines) + "\n")
