"""argparse types for numeric flags: every number is range-checked where it is declared.

``Number(int, low=1)`` accepts integers >= 1; ``Number(float, low=0, low_open=True)`` positive floats;
``also=(-1,)`` admits sentinel values outside the range (e.g. ``-1`` for "off"). A value out of range, not a
number, NaN or infinite is refused by the parser with one line naming the flag, e.g.
``argument --lr: expected a number > 0, got 0``. Example::

    parser.add_argument("--loss_triplet_margin", default=0.2, type=Number(float, low=0), help=...)
"""

from __future__ import annotations

import argparse
import math


class Number:
    """A range-checked int or float (argparse ``type=``); ``low``/``high`` inclusive unless ``*_open``."""

    def __init__(self, kind: type = float, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, also: tuple = ()):  # fmt: skip
        self.kind, self.low, self.high, self.low_open, self.high_open = kind, low, high, low_open, high_open
        self.also = tuple(also)
        self.__name__ = kind.__name__  # argparse names the type in some messages

    def describe(self) -> str:
        what = "integer" if self.kind is int else "number"
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        text = f"{'an' if what == 'integer' else 'a'} {what} {' and '.join(parts)}" if parts else f"a finite {what}"
        return text + (f" (or {', '.join(f'{v:g}' for v in self.also)})" if self.also else "")

    def inside(self, value: float) -> bool:
        if value in self.also:
            return True
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (self.high is not None and (value > self.high or (self.high_open and value == self.high)))

    def __call__(self, text: str):
        try:
            value = self.kind(text) if self.kind is float else int(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected {self.describe()}, got '{text}'") from None
        if not self.inside(float(value)):
            raise argparse.ArgumentTypeError(f"expected {self.describe()}, got {text}")
        return value

    def __repr__(self) -> str:
        return f"Number({self.describe()})"


# The common ranges, by name.
def positive_int() -> Number:
    return Number(int, low=1)


def non_negative_int() -> Number:
    return Number(int, low=0)


def positive_float() -> Number:
    return Number(float, low=0, low_open=True)


def non_negative_float() -> Number:
    return Number(float, low=0)


def finite_float() -> Number:
    return Number(float)


def fraction(low_open: bool = False, high_open: bool = False) -> Number:
    """A number in [0, 1] (open ends as asked)."""
    return Number(float, low=0, high=1, low_open=low_open, high_open=high_open)
