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


def _unknown(name: str, why: str = "", flag: str = "--evaluation_metrics", extra: tuple = ()) -> UserError:
    what, detail = ("invalid", f" ({why})") if why else ("unknown", "")
    valid = ", ".join([*valid_forms(), *extra])
    return UserError(f"{what} metric '{name}' in {flag}{detail}; valid: {valid}")


def _parse_arg(name: str, family: str, arg: str | None, kind, flag: str = "--evaluation_metrics", extra: tuple = ()):
    def _bad(why: str) -> UserError:
        return _unknown(name, why, flag, extra)

    if kind is None:
        if arg is not None:
            raise _bad(f"'{family}' takes no '@' argument")
        return None
    if arg is None:
        raise _bad(f"'{family}' needs an '@' argument")
    if isinstance(kind, tuple):
        if arg not in kind:
            raise _bad(f"'{family}@' takes one of {', '.join(kind)}")
        return arg
    try:
        value = int(arg)
    except ValueError:
        raise _bad(f"'{family}@' takes an integer") from None
    if kind == "int" and value <= 0:
        raise _bad(f"'{family}@' takes a positive integer")
    if kind == "nonzero_int" and value == 0:
        raise UserError(
            f"metric '{name}' in {flag}: {family}@0 would be the whole normalised spectrum (a vector), "
            f"not a number; use {family}@<k> with k > 0 for KL(uniform || spectrum) or k < 0 for KL(spectrum || uniform)"
        )
    return value


def select(name: str, flag: str = "--evaluation_metrics", extra: tuple = ()) -> Metric:
    """Build the metric object for one name (``e_recall@4``, ``c_map_at_r``, ``rho_spectrum@-1``, ...).

    ``flag`` and ``extra`` (further valid names, e.g. a loss's own metrics) only shape the error message.
    """
    if not isinstance(name, str) or not name:
        raise _unknown(str(name), flag=flag, extra=extra)
    family, _, arg = name.partition("@")
    arg = arg if "@" in name else None
    if family not in REGISTRY.names():
        raise _unknown(name, flag=flag, extra=extra)
    entry = REGISTRY.get(family)
    value = _parse_arg(name, family, arg, entry.obj.arg_kind, flag, extra)
    return entry.obj(name, entry.meta.get("geometry"), value)


def validate(names: list[str], flag: str = "--evaluation_metrics", extra: tuple = ()) -> None:
    """Raise ``UserError`` on the first name that ``select`` would reject (call before training starts)."""
    for name in names:
        select(name, flag, extra)
