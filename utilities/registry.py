"""A tiny name -> component registry shared by every component folder.

Each folder's ``__init__.py`` owns one ``Registry``; modules register a class or
builder with a decorator, optionally declaring flags in a module-level
``add_args(parser)``. Adding a component is one module plus one decorator: the
folder imports all its modules automatically (see ``import_submodules``).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from utilities.errors import UserError


@dataclass
class Entry:
    """One registered component with the metadata shown in docs/components.md."""

    name: str
    obj: Any
    module: str
    paper: str = ""
    flags: str = ""
    meta: dict = field(default_factory=dict)


class Registry:
    """Components of one kind (``loss``, ``miner``, ``sampler``, ...) by name."""

    def __init__(self, kind: str, flag: str, hint: str = ""):
        self.kind = kind
        self.flag = flag
        self.hint = hint  # appended to the list of valid names in errors
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, paper: str = "", flags: str = "", **meta) -> Callable:
        """Decorator: ``@register("margin", paper="Wu et al. 2017")``."""

        def wrap(obj):
            if name in self._entries:
                raise RuntimeError(f"{self.kind} '{name}' registered twice")
            self._entries[name] = Entry(name, obj, obj.__module__, paper, flags, meta)
            return obj

        return wrap

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]

    def get(self, name: str) -> Entry:
        if name not in self._entries:
            hint = f" ({self.hint})" if self.hint else ""
            raise UserError(
                f"unknown {self.kind} '{name}' for {self.flag}; choose one of: {', '.join(self.names())}{hint}"
            )
        return self._entries[name]

    def add_args(self, parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
        """Call each registered module's ``add_args(parser)`` once."""
        seen = set()
        for entry in self.entries():
            module = sys.modules[entry.module]
            if entry.module in seen or not hasattr(module, "add_args"):
                continue
            seen.add(entry.module)
            module.add_args(parser)


def import_submodules(package_name: str, package_path: list[str]) -> None:
    """Import every module of a component folder so its decorators run."""
    for info in pkgutil.iter_modules(package_path):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package_name}.{info.name}")
