"""Self-contained HTML pages (no network, no scripts): images inlined as base64, tables, one stylesheet.

Used for a run's ``report.html`` (``training/report_page.py``) and the seed-grouped report
(``evaluation/report.py``). Table header cells use ``HEADER_RGB``, which the browser test looks for.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

HEADER_RGB = (221, 231, 245)
STYLE = f"""
body {{ font-family: sans-serif; margin: 24px; color: #222; max-width: 1400px; }}
h1 {{ font-size: 22px; }} h2 {{ font-size: 18px; margin-top: 28px; border-bottom: 1px solid #ccc; }}
table {{ border-collapse: collapse; margin: 8px 0; font-size: 13px; }}
th, td {{ border: 1px solid #bbb; padding: 3px 8px; text-align: right; }}
th {{ background: rgb{HEADER_RGB}; }} td:first-child, th:first-child {{ text-align: left; }}
img {{ max-width: 100%; border: 1px solid #ddd; margin: 6px 0; }}
code, pre {{ background: #f4f4f4; }} pre {{ padding: 8px; white-space: pre-wrap; word-break: break-all; }}
.note {{ color: #555; font-size: 13px; }}
"""


def escape(text) -> str:
    return html.escape(str(text))


def image(path: Path, alt: str = "") -> str:
    """An ``<img>`` with the PNG inlined (the page needs no file beside it)."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{escape(alt or Path(path).name)}">'


def table(header: list, rows: list[list]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def section(title: str, *parts: str) -> str:
    return f"<h2>{escape(title)}</h2>\n" + "\n".join(parts)


def paragraph(text: str, note: bool = False) -> str:
    return f'<p class="note">{escape(text)}</p>' if note else f"<p>{escape(text)}</p>"


def code(text: str) -> str:
    return f"<pre><code>{escape(text)}</code></pre>"


def page(title: str, sections: list[str]) -> str:
    body = "\n".join(sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{STYLE}</style></head>\n<body>\n<h1>{escape(title)}</h1>\n{body}\n</body></html>\n")  # fmt: skip


def write(path: Path, text: str) -> Path:
    """Write atomically (a browser never sees half a page)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
