"""The search settings' table: each setting a user may give, once — default, flag, help, limits.

``SearchConfig`` (disagreement search) and ``WorstConfig`` (worst-shift search) declare their
user-facing fields with ``setting(...)``; the command line makes its options from them
(``cli.common.settings_options``: flag, default and help), evaluate's ``--search-distance``
reads the same default, and ``check_settings`` refuses a value outside its limits in one
line naming the flag. Changing a default or a limit is one edit here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from edgeq.errors import ConfigError
from edgeq.limits import Limits, shown

SETTING = "edgeq_setting"
DISTANCE = 0.1  # how far a searched input may be from its seed, a fraction of the data range


@dataclass(frozen=True)
class Setting:
    """What a user may give for one field: the flag (None: not on the command line, still
    checked), the help, the limits or choices, the limit in words where numbers say too little,
    and the value type when the default (None) does not show it."""

    flag: str | None
    help: str = ""
    limits: Limits | None = None
    choices: tuple = ()
    words: str | None = None
    kind: type | None = None
    metavar: str | None = None


def setting(default, flag: str | None, help: str = "", **spec):
    """A dataclass field whose default and ``Setting`` stand together."""
    return field(default=default, metadata={SETTING: Setting(flag, help, **spec)})


def settings_of(cls) -> dict[str, tuple[Setting, object]]:
    """Field name → (its Setting, its default), in declaration order."""
    return {f.name: (f.metadata[SETTING], f.default) for f in fields(cls) if SETTING in f.metadata}


def value_type(spec: Setting, default) -> type:
    """The type a flag's text is read as: declared, else the default's (whole-number limits: int)."""
    if spec.kind is not None:
        return spec.kind
    if default is not None and not isinstance(default, bool):
        return type(default)
    return int if spec.limits is not None and spec.limits.whole else float


def check_settings(config) -> None:
    """Every setting of ``config`` within its limits (None: not given), else ConfigError naming the flag."""
    for name, (spec, _) in settings_of(type(config)).items():
        value = getattr(config, name)
        if value is None:
            continue
        where = spec.flag or name
        if spec.choices and value not in spec.choices:
            raise ConfigError(f"{where} must be one of {', '.join(map(str, spec.choices))}, not {shown(value)}")
        if spec.limits is not None:
            setattr(config, name, spec.limits.check(value, where, words=spec.words))


BUDGET_HELP = "Queries (inputs through both models) at most."
TIME_BUDGET = dict(limits=Limits(0, low_open=True), words="a positive number of seconds", kind=float, metavar="S",
                   help="Stop after this many seconds (whatever is found is kept).")
QUERIES = Limits(1, whole=True)
