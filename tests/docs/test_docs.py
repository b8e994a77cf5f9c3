"""The README is a front page that links the docs/ pages: at most 250 lines, the two install commands verbatim,
every docs page linked, and every relative Markdown link (README.md and docs/*.md) pointing at a file."""

from __future__ import annotations

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
INSTALL_COMMANDS = (  # CI and the tests rely on these exact lines
    "pip install -r requirements.txt -c constraints.txt && python main.py",
    "pip install -r requirements-dev.txt -c constraints.txt && python -m pytest",
)
# [text](target) and [text](target "title"); images too. Fenced code blocks are skipped (not links there).
LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)')


def markdown_links(path: pathlib.Path) -> list[str]:
    """Link targets of ``path`` outside fenced code blocks and inline code spans."""
    targets, fenced = [], False
    for line in path.read_text().splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            continue
        if not fenced:
            targets += LINK.findall(re.sub(r"`[^`]*`", "", line))
    return targets


def relative(target: str) -> bool:
    """Not an absolute URL (http:, mailto:, ...) and not a bare in-page anchor."""
    return not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", target) and not target.startswith("#")


def test_readme_is_a_front_page():
    assert len(README.read_text().splitlines()) <= 250


def test_readme_has_the_install_commands_verbatim():
    lines = README.read_text().splitlines()
    for command in INSTALL_COMMANDS:
        assert command in lines, command


def test_there_are_docs_pages():
    names = {p.name for p in DOCS}
    assert {"running.md", "methods.md", "protocols.md", "outputs.md", "scale.md", "components.md",
            "extending.md"} <= names  # fmt: skip


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(README.parent / t.split("#", 1)[0]).resolve() for t in markdown_links(README) if relative(t)}
    missing = [p.relative_to(ROOT).as_posix() for p in DOCS if p.resolve() not in linked]
    assert not missing, f"README.md does not link {missing}"


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_point_at_files(page):
    broken = []
    for target in markdown_links(page):
        if not relative(target):
            continue
        path = target.split("#", 1)[0]
        if path and not (page.parent / path).exists():
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: links to missing files {broken}"


def test_link_finder_sees_links_and_skips_code(tmp_path):
    page = tmp_path / "p.md"
    page.write_text('[a](docs/x.md#y) ![i](img.png "t") [w](https://e.org) [s](#top) `[c](code.md)`\n'
                    "```\n[f](fenced.md)\n```\n[b](../b.md)\n")  # fmt: skip
    assert markdown_links(page) == ["docs/x.md#y", "img.png", "https://e.org", "#top", "../b.md"]
    assert [t for t in markdown_links(page) if relative(t)] == ["docs/x.md#y", "img.png", "../b.md"]
