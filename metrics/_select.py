"""Metric names -> metric objects: ``select(name)`` and ``validate(names)``.

A name is ``<family>`` or ``<family>@<arg>``; the family is a registry key, and the
metric class's ``arg_kind`` says what the argument may be.
"""

from __future__ import annotations

from metrics import REGISTRY
from metrics._base import Metric
from utilities.errors import UserError


def valid_forms() -> list[str]:
    """Every accepted form, e.g. ``e_recall@<k>``, ``nmi``, ``dists@{intra,inter,intra_over_inter}``."""
    return [entry.meta.get("form", entry.name) for entry in REGISTRY.entries()]


def _unknown(name: str, why: str = "") -> UserError:
    what, detail = ("invalid", f" ({why})") if why else ("unknown", "")
    return UserError(f"{what} metric '{name}' in --evaluation_metrics{detail}; valid: {', '.join(valid_forms())}")


def _parse_arg(name: str, family: str, arg: str | None, kind):
    if kind is None:
        if arg is not None:
            raise _unknown(name, f"'{family}' takes no '@' argument")
        return None
    if arg is None:
        raise _unknown(name, f"'{family}' needs an '@' argument")
    if isinstance(kind, tuple):
        if arg not in kind:
            raise _unknown(name, f"'{family}@' takes one of {', '.join(kind)}")
        return arg
    try:
        value = int(arg)
    except ValueError:
        raise _unknown(name, f"'{family}@' takes an integer") from None
    if kind == "int" and value <= 0:
        raise _unknown(name, f"'{family}@' takes a positive integer")
    if kind == "nonzero_int" and value == 0:
        raise UserError(
            f"metric '{name}' in --evaluation_metrics: {family}@0 would be the whole normalised spectrum (a vector), "
            f"not a number; use {family}@<k> with k > 0 for KL(uniform || spectrum) or k < 0 for KL(spectrum || uniform)"
        )
    return value


def select(name: str) -> Metric:
    """Build the metric object for one name (``e_recall@4``, ``c_map_at_r``, ``rho_spectrum@-1``, ...)."""
    if not isinstance(name, str) or not name:
        raise _unknown(str(name))
    family, _, arg = name.partition("@")
    arg = arg if "@" in name else None
    if family not in REGISTRY.names():
        raise _unknown(name)
    entry = REGISTRY.get(family)
    value = _parse_arg(name, family, arg, entry.obj.arg_kind)
    return entry.obj(name, entry.meta.get("geometry"), value)


def validate(names: list[str]) -> None:
    """Raise ``UserError`` on the first name that ``select`` would reject (call before training starts)."""
    for name in names:
        select(name)
