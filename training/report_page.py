"""``report.html``: one self-contained page per run folder (no network: the plots are inlined).

It shows the run (command, selection split, stop reason), the best value and epoch of each storage metric, every
metric of every split at the selected epoch, the progression curves, what the selected model retrieves, the
uncertainty plots where present, later re-evaluations (``evaluation/*/metrics.json``) and the configuration.
``write_run_report(run_dir)`` reads only the folder's files, so it can be run again on any run folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from evaluation import html
from training.hooks import Hook
from training.run_folder import read_history

FIGURES = (("Progression", "progression.png"), ("Retrievals", "retrieval_*.png"),
           ("Uncertainty", "uncertainty_*.png"))  # fmt: skip


def _number(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def selected_metrics(run_dir: Path, summary: dict, first: str) -> tuple[list[str], list[list]]:
    """(header, rows) of every metric per split at the epoch the first storage metric selected."""
    best = summary["best"].get(first)
    if best is None:
        return [], []
    history = read_history(run_dir)
    at = {split: next((r for r in rows if int(r["epoch"]) == best["epoch"]), {}) for split, rows in history.items()}
    splits = [s for s in summary["splits"] if at.get(s)]
    names = sorted({k for s in splits for k in at[s] if k != "epoch"})
    return ["metric", *splits], [[n, *(_number(at[s][n]) if n in at[s] else "-" for s in splits)] for n in names]


def write_run_report(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    first = config["storage_metrics"][0]
    sections = [html.section(
        "Run",
        html.paragraph(f"{config['dataset']} | loss {config['loss']} | arch {config['arch']} | "
                       f"embedding {config['embed_dim']} | seed {config['seed']}"),
        html.paragraph(f"Selected on the {summary['selection_split']} split: {summary['selection_note']}."),
        html.paragraph(f"Epochs run: {summary['epochs_run']}; stopped: {summary['stop_reason']}."),
        html.code(summary["command"]),
    )]  # fmt: skip
    best_rows = [[metric, _number(b["value"]), b["epoch"], *(_number(b["at_best"].get(s, float("nan")))
                                                             for s in summary["splits"])]
                 for metric, b in summary["best"].items()]  # fmt: skip
    sections.append(html.section(
        "Best metrics", html.table(["storage metric", "best", "epoch", *(f"{s} at best" for s in summary["splits"])],
                                   best_rows)))  # fmt: skip
    header, rows = selected_metrics(run_dir, summary, first)
    if rows:
        epoch = summary["best"][first]["epoch"]
        sections.append(html.section(f"All metrics at the selected epoch ({epoch}, best {first})",
                                     html.table(header, rows)))  # fmt: skip
    for title, pattern in FIGURES:
        images = sorted(run_dir.glob(pattern))
        if images:
            sections.append(html.section(title, *(html.image(p) for p in images)))
    evaluations = sorted(run_dir.glob("evaluation/*/metrics.json"))
    if evaluations:
        parts = []
        for path in evaluations:
            values = json.loads(path.read_text())
            splits = list(values)
            names = sorted({k for v in values.values() for k in v})
            rows = [[n, *(_number(values[s][n]) if n in values[s] else "-" for s in splits)] for n in names]
            parts += [html.paragraph(f"checkpoint {path.parent.name}"), html.table(["metric", *splits], rows)]
        sections.append(html.section("Re-evaluations (python main.py --evaluate)", *parts))
    sections.append(html.section("Configuration", html.table(["flag", "value"], sorted(config.items()))))
    files = sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file() and
                   "wandb" not in p.parts)  # fmt: skip
    sections.append(html.section("Files", html.paragraph(", ".join(files), note=True)))
    return html.write(run_dir / "report.html", html.page(f"{run_dir.parent.name}/{run_dir.name}", sections))


class RunReport(Hook):
    """At the end of the run, after the plots and the summary: ``report.html``."""

    def on_run_end(self, trainer) -> None:
        write_run_report(trainer.run_dir)


if __name__ == "__main__":  # python -m training.report_page <run folder>: the page again (e.g. after --evaluate)
    import sys

    print(write_run_report(Path(sys.argv[1])))
