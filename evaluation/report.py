"""Seed-grouped report: mean +- std (and SEM) per (method, dataset) over run folders.

    python -m evaluation.report Training_Results/ [more folders] [--out report/]

Each run folder (one holding ``summary.json``) contributes the metrics of its
``--split`` (default ``testing``) at the epoch selected by its first storage metric.
Runs are grouped by (dataset, group), i.e. the run folder name without ``_s<seed>``.
Writes ``report.md``, ``report.csv``, ``report.png`` (bars with std error bars) and a
self-contained ``report.html`` (table and bars on one page), and prints the Markdown table.
Works offline, without W&B.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np


def find_runs(paths: list[str]) -> list[Path]:
    """Run folders below (or at) ``paths``: those holding ``summary.json``."""
    runs = []
    for p in map(Path, paths):
        if not p.exists():
            raise SystemExit(f"report: error: {p} does not exist")
        runs += [s.parent for s in sorted(p.rglob("summary.json"))] if p.is_dir() else []
    return sorted(set(runs))


def selected_row(run: Path, split: str) -> dict[str, float] | None:
    """The ``split`` metrics at the epoch where the first storage metric was best."""
    summary = json.loads((run / "summary.json").read_text())
    config = json.loads((run / "config.json").read_text())
    path = run / f"metrics_{split}.csv"
    if not summary["best"] or not path.is_file():
        return None
    epoch = summary["best"][config["storage_metrics"][0]]["epoch"]
    with open(path) as f:
        for row in csv.DictReader(f):
            if int(float(row["epoch"])) == epoch:
                return {k: float(v) for k, v in row.items() if v not in ("", None) and k != "epoch"}
    return None


def collect(runs: list[Path], split: str) -> dict[tuple[str, str], list[dict[str, float]]]:
    groups: dict[tuple[str, str], list[dict[str, float]]] = defaultdict(list)
    for run in runs:
        config = json.loads((run / "config.json").read_text())
        row = selected_row(run, split)
        if row is not None:
            groups[(config["dataset"], config["group"])].append(row)
    return dict(groups)


def aggregate(rows: list[dict[str, float]], metric: str) -> tuple[float, float, float, int]:
    """(mean, sample std, standard error of the mean, n) of ``metric`` over seeds."""
    values = np.array([r[metric] for r in rows if metric in r and not math.isnan(r[metric])])
    n = len(values)
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    std = float(values.std(ddof=1)) if n > 1 else 0.0
    return float(values.mean()), std, std / math.sqrt(n), n


def default_metrics(groups: dict) -> list[str]:
    names = {k for rows in groups.values() for r in rows for k in r}
    return sorted(n for n in names if "time" not in n and n not in ("loss", "lr"))


PUBLISHED_COLUMNS = ("dataset", "group", "metric", "value", "paper", "table")


def read_published(path: str) -> dict[tuple[str, str, str], dict]:
    """(dataset, group, metric) -> row of a published-results CSV: columns ``dataset, group, metric, value`` (as
    printed, x100 like the report's cells), ``paper`` and ``table`` (where the number is printed), optional
    ``std``. ``group`` is the run group the number compares with (e.g. ``Cub200_Prob_RN50_dim128`` of
    example_runs.sh)."""
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
    except OSError as err:
        raise SystemExit(f"report: error: --published {path}: {err.strerror}") from None
    missing = [c for c in PUBLISHED_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise SystemExit(f"report: error: --published {path}: no column {', '.join(missing)}; expected "
                         f"{', '.join(PUBLISHED_COLUMNS)} (and std)")  # fmt: skip
    out = {}
    for i, row in enumerate(rows, start=2):
        try:
            row["value"] = float(row["value"])
        except ValueError:
            raise SystemExit(
                f"report: error: --published {path} line {i}: value '{row['value']}' is not a number"
            ) from None
        if not (row["paper"] or "").strip() or not (row["table"] or "").strip():
            raise SystemExit(f"report: error: --published {path} line {i}: every number needs its paper and table")
        out[(row["dataset"], row["group"], row["metric"])] = row
    return out


def build_table(
    groups: dict, metrics: list[str], spread: str = "std", scale: float = 100.0, published: dict | None = None
) -> tuple[list[str], list[list[str]], list[dict]]:
    """Cells ``mean ± std`` (or ``± sem``) x ``scale``, and one record per (group, metric); with ``published``
    (``read_published``) a cell also shows the published value and the difference (measured - published)."""
    header = ["dataset", "method", "seeds"] + metrics
    rows, records = [], []
    for (dataset, group), runs in sorted(groups.items()):
        cells = [dataset, group, str(len(runs))]
        for metric in metrics:
            mean, std, sem, n = aggregate(runs, metric)
            cell = f"{scale * mean:.2f} ± {scale * (sem if spread == 'sem' else std):.2f}" if n else "-"
            record = {"dataset": dataset, "method": group, "metric": metric, "mean": mean, "std": std, "sem": sem,
                      "n": n, "published": "", "difference": "", "source": ""}  # fmt: skip
            ref = (published or {}).get((dataset, group, metric))
            if ref is not None:
                diff = scale * mean - ref["value"] if n else float("nan")
                cell += f" (published {ref['value']:.2f}, {diff:+.2f})"
                record |= {"published": ref["value"], "difference": diff, "source": f"{ref['paper']}, {ref['table']}"}
            cells.append(cell)
            records.append(record)
        rows.append(cells)
    return header, rows, records


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def plot(records: list[dict], metrics: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = sorted({(r["dataset"], r["method"]) for r in records})
    cols = min(4, len(metrics))
    n_rows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(4 * cols, 3 * n_rows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        sel = {(r["dataset"], r["method"]): r for r in records if r["metric"] == metric}
        means = [sel[m]["mean"] if m in sel else np.nan for m in methods]
        stds = [sel[m]["std"] if m in sel else 0 for m in methods]
        ax.bar(range(len(methods)), means, yerr=stds, capsize=3, color="tab:blue", alpha=0.8)
        ax.set_xticks(range(len(methods)), [f"{d}\n{g}" for d, g in methods], fontsize=6, rotation=30)
        ax.set_title(metric, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="run folders or folders containing them")
    parser.add_argument("--split", default="testing", help="split whose metrics are reported")
    parser.add_argument("--metrics", nargs="+", default=None, help="metrics to report (default: all logged)")
    parser.add_argument("--sem", action="store_true", help="print mean ± SEM instead of mean ± std")
    parser.add_argument("--published", default=None, metavar="CSV",
                        help="published results to show beside the measured means: columns dataset, group, metric, "
                             "value, paper, table (and std)")  # fmt: skip
    parser.add_argument("--out", default=None, help="folder for report.md / report.csv / report.png / report.html")
    args = parser.parse_args(argv)
    runs = find_runs(args.paths)
    groups = collect(runs, args.split)
    if not groups:
        print(f"report: error: no finished run folders (with summary.json and metrics_{args.split}.csv) under "
              f"{' '.join(args.paths)}", file=sys.stderr)  # fmt: skip
        return 2
    metrics = args.metrics or default_metrics(groups)
    spread = "SEM" if args.sem else "std"
    published = read_published(args.published) if args.published else None
    header, rows, records = build_table(groups, metrics, spread.lower(), published=published)
    text = f"Metrics x100 on the {args.split} split, mean ± {spread} over seeds ({len(runs)} runs)"
    if published:
        text += "; (published value, measured - published)"
    text += "\n\n" + markdown(header, rows)
    sources = sorted({r["source"] for r in records if r["source"]})
    if sources:
        text += "\n\nPublished values: " + "; ".join(sources)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.md").write_text(text + "\n")
        with open(out / "report.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(records[0]))
            writer.writeheader()
            writer.writerows(records)
        plot(records, metrics, out / "report.png")
        write_html(out / "report.html", text.split("\n\n")[0], header, rows, out / "report.png", runs, sources)
    return 0


def write_html(path: Path, caption: str, header: list[str], rows: list[list[str]], figure: Path,
               runs: list[Path], sources: list[str] = ()) -> Path:  # fmt: skip
    """``report.html``: the same table and bars on one self-contained page, with the run folders it read (each
    run's own ``report.html`` beside them)."""
    from evaluation import html

    listing = [[run.parent.name, run.name, str(run)] for run in runs]
    return html.write(path, html.page("Seed-grouped report", [
        html.section("Mean over seeds", html.paragraph(caption), html.table(header, rows),
                     *([html.paragraph("Published values: " + "; ".join(sources), note=True)] if sources else [])),
        html.section("Comparison", html.image(figure, "mean and std per group")),
        html.section("Runs", html.table(["dataset", "run", "folder (its report.html inside)"], listing)),
    ]))  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
