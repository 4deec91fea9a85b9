"""A transport's own inventory keys: one table of ``Setting`` records per Transport class.

The inventory keeps what every device has (``Device``) and hands the rest of an entry to
the device's transport, which checks it against its ``SETTINGS`` table. So a new transport
brings its keys with it: the inventory reader never learns them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from edgeq.errors import ConfigError

KIND_WORDS = {int: "a whole number", float: "a number", str: "text"}


@dataclass(frozen=True)
class Setting:
    """One key of a transport: type, default, limits and the help the error messages show."""

    name: str
    kind: type  # int, float or str, as TOML gives them
    default: object = None
    help: str = ""
    low: float | None = None  # smallest allowed value
    above: float | None = None  # the value must be greater than this
    high: float | None = None  # largest allowed value

    def check(self, value):
        """The value typed, or ValueError with a sentence saying what it must be."""
        if _is_kind(value, self.kind) and self._within(self.kind(value)):
            return self.kind(value)
        raise ValueError(f"{self.name} must be {KIND_WORDS[self.kind]}{self._limits()}, got {value!r}")

    def _within(self, value) -> bool:
        return ((self.low is None or value >= self.low) and (self.above is None or value > self.above)
                and (self.high is None or value <= self.high))

    def _limits(self) -> str:
        if self.low is not None and self.high is not None:
            return f" from {self.low} to {self.high}"
        if self.above is not None:
            return f" above {self.above}"
        return f" of at least {self.low}" if self.low is not None else ""


def _is_kind(value, kind: type) -> bool:
    """TOML types, strictly: a bool is no number, an int is a fine float, NaN and inf are not."""
    if kind is str:
        return isinstance(value, str)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, int) if kind is int else math.isfinite(value)


class Settings(Mapping):
    """One device's transport settings: read-only and hashable, because ``Device`` is frozen."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping | None = None):
        self._values = dict(values or {})

    def __getitem__(self, key: str):
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __hash__(self) -> int:
        return hash(tuple(self._values.items()))

    def __repr__(self) -> str:
        return f"Settings({self._values!r})"


def read_settings(table: tuple[Setting, ...], entry: Mapping, where: str) -> Settings:
    """Check ``entry`` against ``table`` and fill in the defaults; unknown keys and bad values are refused."""
    known = {setting.name: setting for setting in table}
    unknown = sorted(set(entry) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
                          f"(known: {', '.join(sorted(known)) or 'none'})")
    values = {}
    for name, setting in known.items():
        try:
            given = entry.get(name)  # None: not set (TOML has no null; complete Settings hold None)
            values[name] = setting.default if given is None else setting.check(given)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}" + (f" ({setting.help})" if setting.help else "")) from None
    return Settings(values)
