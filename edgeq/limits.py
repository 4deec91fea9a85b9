"""The limits of a number a user gives, stated once beside its default and checked in one place.

Output-kind options (``analysis/kinds``), ``--fail-on`` gates and the search settings
(``inputs/search/settings``) all say which values a setting may take with ``Limits``, so
``top_k=0``, ``min-n=1.5`` or ``--distance 0`` are refused in one line naming the flag, the
file or the spec entry, before any work. It sits below every stage: anything may import it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edgeq.errors import ConfigError


@dataclass(frozen=True)
class Limits:
    """The numbers an option (or a gate) may take: a range whose ends may be open, whole numbers only.

    A kind states them once, beside each default (``Option``); ``OutputKind.options`` and
    ``gates.parse_limits`` check them, so ``top_k=0``, ``atol=-1`` or ``min-n=1.5`` are refused
    in one line naming the flag or file instead of judging nothing.
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    whole: bool = False

    def describe(self) -> str:
        what = "a whole number" if self.whole else "a number"
        if self.low is not None and self.high is not None:
            return f"{what} in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{what} {'>' if self.low_open else '≥'} {self.low:g}"
        if self.high is not None:
            return f"{what} {'<' if self.high_open else '≤'} {self.high:g}"
        return what

    def check(self, value, where: str, given=None, words: str | None = None):
        """The value (an int for whole numbers), or ConfigError naming ``where`` and the value as
        ``given`` (the user's text, when the value was parsed from it); ``words`` says the limit
        when the numbers alone would not (``a positive number of queries``)."""
        inside = not isinstance(value, bool) and (isinstance(value, int) or (
            isinstance(value, float) and math.isfinite(value)))
        if inside and self.whole:
            inside = isinstance(value, int) or value.is_integer()
        if inside and self.low is not None:
            inside = value > self.low if self.low_open else value >= self.low
        if inside and self.high is not None:
            inside = value < self.high if self.high_open else value <= self.high
        if not inside:
            text = given.strip()[:60] if isinstance(given, str) else shown(value if given is None else given)
            raise ConfigError(f"{where} must be {words or self.describe()}, not {text}")
        return int(value) if self.whole else value


def shown(value) -> str:
    """A user's value as a message shows it: true/false as written in TOML and on the command line."""
    if isinstance(value, bool):
        return str(value).lower()
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
