"""Markdown table of every registered component (criteria, miners, samplers, architectures, datasets, metrics).

    python docs/component_table.py                             # print the tables
    python docs/component_table.py --write docs/components.md  # replace the text between the page's markers

A script, not a package module: run from the checkout, its ``sys.path[0]`` is ``docs/``, so it puts the repository
root (the parent of ``docs/``) first on ``sys.path`` before importing the registries. Tests load it by path.

The rows come from the registries (``utilities.registry.Entry``: name, paper, flags, meta). Where an entry
declares no ``flags``, the flags its module declares are listed instead: the module's ``add_args`` is run on
a throwaway parser and its option strings are read back. ``tests/test_component_table.py`` fails when the
table in ``docs/components.md`` and the registries disagree; regenerate with ``--write``.
"""

from __future__ import annotations

import argparse
import importlib
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
if sys.path[0] != str(ROOT):
    sys.path.insert(0, str(ROOT))  # run as a script, sys.path[0] is docs/: the registries live in the root

from utilities.errors import UserError  # noqa: E402

START = "<!-- components:start -->"
END = "<!-- components:end -->"
# (package, section title), in page order.
SECTIONS = (
    ("criteria", "Criteria"),
    ("batch_mining", "Batch miners"),
    ("datasampler", "Data samplers"),
    ("architectures", "Architectures"),
    ("datasets", "Datasets"),
    ("metrics", "Metrics"),
)


def module_flags(module_name: str) -> list[str]:
    """Long option strings declared by ``module_name``'s ``add_args`` (empty when it declares none)."""
    module = sys.modules.get(module_name) or importlib.import_module(module_name)
    add_args = getattr(module, "add_args", None)
    if add_args is None:
        return []
    parser = argparse.ArgumentParser(add_help=False)
    add_args(parser)
    flags = []
    for action in parser._actions:
        long = [s for s in action.option_strings if s.startswith("--")] or action.option_strings
        flags.extend(long[:1])
    return flags


def entry_flags(entry) -> str:
    """The entry's declared ``flags``, else the flags its module declares, else '-'."""
    if entry.flags:
        return entry.flags
    return ", ".join(module_flags(entry.module)) or "-"


# A sentence under a section's heading, for name forms that are not registry entries.
SECTION_NOTES = {
    "architectures": "Every name, `timm_<model>` included, takes the suffixes `_frozen` (BatchNorm statistics "
    "and affine parameters frozen) and `_normalize` (L2-normalised embedding), e.g. "
    "`resnet50_frozen_normalize`. `timm_<model>` builds any timm model (e.g. `timm_resnet50.tv_in1k`, weights "
    "from the local cache). `--not_pretrained` starts any backbone from random weights.",
}


def miner_notes(entry) -> list[str]:
    """For a criterion (an entry whose class declares ``accepts``): the miners whose output it accepts and its
    default miner; for a miner: its output."""
    if hasattr(entry.obj, "output"):
        return [f"output: {entry.obj.output}"]
    if not hasattr(entry.obj, "accepts"):
        return []
    import criteria

    if not entry.obj.accepts:
        return ["miners: none (takes no --batch_mining)"]
    allowed = criteria.accepted_miners(entry.name)
    return [f"miners: {', '.join(allowed)}", f"default miner: {entry.obj.default_miner}"]


def entry_notes(entry) -> str:
    """Short ``key=value`` notes from the entry's meta (dataset presets are listed by key only); a criterion's
    accepted and default miners first."""
    notes = miner_notes(entry)
    for key, value in sorted(entry.meta.items()):
        if isinstance(value, dict):
            if value:
                notes.append(f"{key}: {', '.join(sorted(value))}")
        else:
            notes.append(f"{key}={value}")
    return "; ".join(notes) or "-"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def registries() -> list[tuple[str, object]]:
    """``(section title, Registry)`` of every component folder."""
    return [(title, importlib.import_module(pkg).REGISTRY) for pkg, title in SECTIONS]


def section_note(title: str) -> str:
    """The ``SECTION_NOTES`` sentence of the section titled ``title`` ('' if none)."""
    return next((SECTION_NOTES.get(pkg, "") for pkg, t in SECTIONS if t == title), "")


def render() -> str:
    """The Markdown tables, one per component kind, rows sorted by name."""
    lines = [
        "Generated from the registries by `python docs/component_table.py --write docs/components.md`; "
        "do not edit by hand. Flags: the ones a component declares (its module's `add_args`).",
    ]
    for title, registry in registries():
        lines += ["", f"### {title} (`{registry.flag}`)", ""]
        if section_note(title):
            lines += [section_note(title), ""]
        lines += ["| name | paper / source | flags | notes |", "|---|---|---|---|"]
        for e in registry.entries():
            cells = [f"`{e.name}`", e.paper or "-", entry_flags(e), entry_notes(e)]
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def splice(text: str, table: str) -> str:
    """``text`` with the part between the START and END markers replaced by ``table``."""
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise UserError(
            f"expected one '{START}' followed by one '{END}' marker in the file (docs/components.md has them)"
        )
    head, rest = text.split(START)
    _, tail = rest.split(END)
    return f"{head}{START}\n{table}{END}{tail}"


def section(text: str) -> str:
    """The text between the markers, as ``splice`` writes it (the table)."""
    if START not in text or END not in text:
        raise UserError(f"no '{START}' ... '{END}' section in the file (docs/components.md has it)")
    return text.split(START, 1)[1].split(END, 1)[0].removeprefix("\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Markdown table of every registered component.")
    parser.add_argument(
        "--write", metavar="FILE", help="replace the text between the component markers in FILE (docs/components.md)"
    )
    args = parser.parse_args(argv)
    table = render()
    if not args.write:
        print(table, end="")
        return
    path = pathlib.Path(args.write)
    if not path.is_file():
        raise UserError(f"--write: no file {path} (the component tables live in docs/components.md)")
    path.write_text(splice(path.read_text(), table))
    print(f"wrote the component table into {path}")


if __name__ == "__main__":
    try:
        main()
    except UserError as err:
        sys.exit(f"error: {err}")
