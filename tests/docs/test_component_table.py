"""docs/components.md's component table agrees with the registries; every registered entry is listed with its
paper. ``docs/component_table.py`` is a script, not a package module: it is loaded by path."""

from __future__ import annotations

import importlib
import importlib.util
import pathlib
import re
import subprocess
import sys
import types

import pytest

from utilities.errors import UserError
from utilities.registry import Registry

ROOT = pathlib.Path(__file__).resolve().parents[2]
COMPONENTS = ROOT / "docs" / "components.md"


def _load_script():
    spec = importlib.util.spec_from_file_location("component_table", ROOT / "docs" / "component_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ct = _load_script()
PACKAGES = ("criteria", "batch_mining", "datasampler", "architectures", "datasets", "metrics")


def table_rows(table: str) -> dict[str, dict[str, list[str]]]:
    """Section heading -> {component name -> cells}, parsed back from the Markdown."""
    out, current = {}, None
    for line in table.splitlines():
        if line.startswith("### "):
            current = out.setdefault(line[4:], {})
        m = re.match(r"\| `([^`]+)` \|(.*)\|$", line)
        if m and current is not None:
            current[m.group(1)] = [c.strip() for c in re.split(r"(?<!\\)\|", m.group(2))]
    return out


def test_components_page_table_matches_the_registries():
    text = COMPONENTS.read_text()
    assert text.startswith("# Components\n")
    assert text.count(ct.START) == 1 and text.count(ct.END) == 1 and text.index(ct.START) < text.index(ct.END)
    assert ct.section(text) == ct.render(), (
        "docs/components.md component table is stale: python docs/component_table.py --write docs/components.md"
    )


def test_every_registered_entry_is_listed_with_paper_and_flags():
    rows = table_rows(ct.section(COMPONENTS.read_text()))
    assert len(rows) == len(PACKAGES)
    for pkg in PACKAGES:
        registry = importlib.import_module(pkg).REGISTRY
        (section,) = [v for k, v in rows.items() if f"(`{registry.flag}`)" in k]
        assert sorted(section) == registry.names(), pkg
        for entry in registry.entries():
            assert entry.paper, f"{pkg} '{entry.name}' has no paper"
            paper, flags, _notes = section[entry.name]
            assert paper == " ".join(entry.paper.split()).replace("|", "\\|")
            if entry.flags:
                assert flags == " ".join(entry.flags.split())


def test_criteria_notes_list_accepted_and_default_miners():
    """Parsed back from the docs/components.md table, against each criterion's ``accepts`` and each miner's
    declared ``output``: a loss lists exactly the miners whose output it accepts."""
    import batch_mining
    import criteria

    rows = table_rows(ct.section(COMPONENTS.read_text()))
    for name in criteria.names():
        cls = criteria.get_class(name)
        notes = rows["Criteria (`--loss`)"][name][2]
        if cls.accepts:
            listed = notes.split("miners: ", 1)[1].split(";")[0].split(", ")
            assert listed == [m for m in batch_mining.names() if batch_mining.REGISTRY.get(m).obj.output in cls.accepts]
            assert f"default miner: {cls.default_miner}" in notes, name
        else:
            assert "miners: none" in notes and "default miner" not in notes, name
    for name in batch_mining.names():
        notes = rows["Batch miners (`--batch_mining`)"][name][2]
        assert f"output: {batch_mining.REGISTRY.get(name).obj.output}" in notes, name


def test_architecture_name_forms_and_semihard_margin_are_documented():
    import architectures

    text = ct.section(COMPONENTS.read_text())
    arch = text.split("### Architectures", 1)[1].split("###", 1)[0]
    for form in (*architectures.SUFFIXES, "timm_<model>", "--not_pretrained"):
        assert f"`{form}`" in arch, form
    semihard = table_rows(text)["Batch miners (`--batch_mining`)"]["semihard"][2]
    assert "miner_margin" in semihard and "--loss_triplet_margin" in semihard


def test_flags_derived_from_the_module_when_the_entry_declares_none():
    """Independent of the module: a fake component module whose add_args declares two flags and a positional."""
    mod = types.ModuleType("fake_component_for_table")

    def add_args(parser):
        parser.add_argument("--fake_alpha", "-a", type=float, default=1.0)
        parser.add_argument("--fake_beta", action="store_true")

    mod.add_args = add_args
    sys.modules[mod.__name__] = mod
    try:
        reg = Registry("thing", "--thing")
        obj = type("Thing", (), {"__module__": mod.__name__})
        reg.register("with_flags", paper="P1", flags="--declared")(obj)
        reg.register("derived", paper="P2")(type("Other", (), {"__module__": mod.__name__}))
        no_args = types.ModuleType("fake_component_no_args")
        sys.modules[no_args.__name__] = no_args
        reg.register("none", paper="P3", form="x@<k>")(type("Third", (), {"__module__": no_args.__name__}))
        e = {x.name: x for x in reg.entries()}
        assert ct.entry_flags(e["with_flags"]) == "--declared"
        assert ct.entry_flags(e["derived"]) == "--fake_alpha, --fake_beta"
        assert ct.entry_flags(e["none"]) == "-"
        assert ct.entry_notes(e["none"]) == "form=x@<k>"
    finally:
        sys.modules.pop(mod.__name__, None)
        sys.modules.pop("fake_component_no_args", None)


def test_derived_flags_are_real_parser_flags():
    """Every derived flag of a real entry is an option of the full parser (parameters.build_parser)."""
    import parameters

    known = {s for a in parameters.build_parser()._actions for s in a.option_strings}
    for _, registry in ct.registries():
        for entry in registry.entries():
            if not entry.flags:
                assert set(ct.module_flags(entry.module)) <= known, entry.name


def test_write_replaces_only_between_markers(tmp_path):
    path = tmp_path / "R.md"
    path.write_text(f"# Title\n\nintro\n\n{ct.START}\nold table\n{ct.END}\n\n## After\n")
    ct.main(["--write", str(path)])
    text = path.read_text()
    assert text.startswith("# Title\n\nintro\n\n" + ct.START + "\n") and text.endswith(ct.END + "\n\n## After\n")
    assert "old table" not in text and ct.section(text) == ct.render()
    ct.main(["--write", str(path)])
    assert path.read_text() == text  # idempotent
    path.write_text("no markers\n")
    with pytest.raises(UserError, match="marker"):
        ct.main(["--write", str(path)])


def test_print_mode(capsys):
    ct.main([])
    out = capsys.readouterr().out
    assert out == ct.render() and "### Criteria (`--loss`)" in out


def test_runs_as_a_script_from_any_directory(tmp_path):
    """``python docs/component_table.py``: its sys.path[0] is docs/, the script puts the repository root first."""
    done = subprocess.run([sys.executable, str(ROOT / "docs" / "component_table.py")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == ct.render()
