"""``bench/step_overhead.py`` (training-step overhead per loss vs pytorch-metric-learning, docs/scale.md#benchmarks)
runs end to end at ``--quick`` sizes and prints a consistent table. Not timed: only the table's shape, finite
values, and that each printed overhead and ratio follows from the printed step times."""

from __future__ import annotations

import math

import pytest


def table(text: str) -> tuple[list[str], dict[str, dict[str, str]]]:
    """(header, {loss: {column: cell}}) of the Markdown table printed by the script."""
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
    header, rows = cells[0], cells[1:]
    return header, {row[0]: dict(zip(header, row)) for row in rows}


@pytest.fixture(scope="module")
def quick():
    """One --quick run of two rows (one without a PML counterpart), gated at --max_ratio 0."""
    import io
    from contextlib import redirect_stdout

    from bench import step_overhead

    out = io.StringIO()
    with redirect_stdout(out):
        code = step_overhead.main(["--quick", "--losses", "proxyanchor", "quadruplet", "--max_ratio", "0"])
    return step_overhead, code, out.getvalue()


def test_quick_run_prints_one_row_per_loss_with_every_column(quick):
    step_overhead, _, text = quick
    header, rows = table(text)
    assert header == list(step_overhead.COLUMNS)
    assert list(rows) == ["proxyanchor", "quadruplet"]
    assert rows["proxyanchor"]["miner"] == "-" and rows["quadruplet"]["miner"] == "distance"


def test_overheads_are_finite_and_the_ratio_is_ours_over_pml(quick):
    _, _, text = quick
    _, rows = table(text)
    pa = {k: float(v) for k, v in rows["proxyanchor"].items() if k not in ("loss", "miner")}
    assert all(math.isfinite(v) for v in pa.values())
    assert pa["ours step ms"] > 0 and pa["PML step ms"] > 0 and pa["backbone ms"] > 0
    # printed with 3 decimals: differences agree within rounding
    assert pa["ours overhead ms"] == pytest.approx(pa["ours step ms"] - pa["backbone ms"], abs=2e-3)
    assert pa["PML overhead ms"] == pytest.approx(pa["PML step ms"] - pa["backbone ms"], abs=2e-3)
    assert pa["PML overhead ms"] > 0
    for col, over in (("ours/PML", "ours overhead ms"), ("plain/PML", "ours plain overhead ms")):
        expected = pa[over] / pa["PML overhead ms"]
        rounding = 5e-3 + 5e-4 * (1 + abs(expected)) / pa["PML overhead ms"]  # ratio: 2 decimals, ms: 3
        assert pa[col] == pytest.approx(expected, abs=rounding)


def test_no_pml_counterpart_prints_dashes_and_is_not_gated(quick):
    _, code, text = quick
    _, rows = table(text)
    quad = rows["quadruplet"]
    assert quad["PML step ms"] == quad["PML overhead ms"] == quad["ours/PML"] == quad["plain/PML"] == "-"
    assert math.isfinite(float(quad["ours overhead ms"])) and math.isfinite(float(quad["ours plain overhead ms"]))
    # --max_ratio 0: the row with a PML counterpart is over it, listed on the last line, exit status 1
    last = text.strip().splitlines()[-1]
    assert last.startswith("over 0x PML's overhead: proxyanchor (") and "quadruplet" not in last
    assert code == 1


def test_unknown_loss_is_refused():
    from bench import step_overhead

    with pytest.raises(SystemExit):
        step_overhead.main(["--quick", "--losses", "no_such_loss"])
