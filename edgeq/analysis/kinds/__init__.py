"""Output kinds: what an output *is* decides how a quantization error is judged.

A box regressor judged by argmax, a mask by "class flips" or sigmoid scores through a
softmax all give numbers that mean nothing. Each kind is one module that registers an
``OutputKind`` here: its options (with defaults), a shape check, per-sample evidence
computed once over every sample, and a summary of any group of samples. The verdict
rate of every kind is a fraction in [0, 1] with an event count, so one rule and one
confidence interval serve them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgeq.errors import ConfigError
from edgeq.limits import Limits, shown as _shown  # noqa: F401  (kinds import Limits from here)
from edgeq.inputs.npz import row_blocks

KINDS: dict[str, "OutputKind"] = {}


def register(kind: "OutputKind") -> "OutputKind":
    KINDS[kind.name] = kind
    return kind


def get_kind(name: str) -> "OutputKind":
    _load_all()
    if name not in KINDS:
        raise ConfigError(f"unknown output kind {name!r} (known: {', '.join(sorted(KINDS))})")
    return KINDS[name]


def _load_all() -> None:
    """Every module in this folder registers its kind on import: a new kind is one new file."""
    import importlib
    import pkgutil

    for module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        importlib.import_module(f"{__name__}.{module}")


@dataclass
class OutputPlan:
    """How one output (or a group, for detections) is judged, and why."""

    name: str
    index: int
    kind: str
    reason: str
    source: str = "auto"  # auto | spec file | --output
    options: dict = field(default_factory=dict)
    members: dict = field(default_factory=dict)  # role -> output index (detection: scores, classes, count)
    drives_verdict: bool = True
    labels: bool = False
    when: dict | None = None  # judged only where another output (the float model's) opens this gate: when.py
    label: str = ""  # the output's name in reports (``OutputInfo.short``), for messages

    @property
    def where(self) -> str:
        """Who set the plan and for which output, as a one-line error starts: ``--output probs``."""
        return f"{self.source} {self.label or self.name}"

    def describe(self) -> dict:
        out = {"index": self.index, "kind": self.kind, "reason": self.reason, "source": self.source,
               "options": dict(self.options), "members": dict(self.members),
               "drives_verdict": self.drives_verdict, "labels": self.labels,
               "metric": get_kind(self.kind).metric}
        if self.when is not None:
            out["when"] = dict(self.when)
        return out


@dataclass(frozen=True)
class Option:
    """A kind's option as its ``defaults`` table states it: the default, the values it may take
    (``limits``) and, where the default (None: decided later from the values) shows no type, a
    value of its type (``type``: False for a yes/no, "" for a word)."""

    default: object
    limits: Limits | None = None
    type: object = None


class OutputKind:
    """One kind of output. Subclasses set the class attributes and three methods.

    ``defaults`` maps each option to its default, or to an ``Option`` with the default and its
    limits beside it; the class splits the table into ``defaults`` (plain values), ``limits`` and
    ``types`` when it is made, so a kind states each limit once.
    """

    name = ""
    metric = "flip_rate"  # the verdict rate's name in reports
    description = ""
    defaults: dict = {}
    limits: dict = {}  # option -> Limits (from the Options in ``defaults``)
    roles: tuple = ()  # other outputs it reads, by role (detection: "scores", ...)
    types: dict = {}  # option -> a value of its type, where the default (None: decided later) shows none

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "defaults" not in cls.__dict__:
            return
        plain, limits, types = {}, dict(cls.__dict__.get("limits", {})), dict(cls.__dict__.get("types", {}))
        for key, value in cls.defaults.items():
            if isinstance(value, Option):
                plain[key] = value.default
                if value.limits is not None:
                    limits[key] = value.limits
                if value.type is not None:
                    types[key] = value.type
            else:
                plain[key] = value
        cls.defaults, cls.limits, cls.types = plain, limits, types

    def options(self, given: dict, where: str) -> dict:
        """Defaults overlaid with the user's options, each checked against its type and limits."""
        unknown = sorted(set(given) - set(self.defaults) - set(self.roles), key=str)
        if unknown:
            known = ", ".join(sorted(set(self.defaults) | set(self.roles))) or "none"
            raise ConfigError(f"{where}: kind {self.name} has no option {unknown[0]!r} (options: {known})")
        merged = dict(self.defaults)
        for key, value in given.items():
            if key in self.roles:
                continue
            default = self.types.get(key, self.defaults[key])
            merged[key] = _typed(value, default, f"{where}: {key}")
            limits = self.limits.get(key)
            if limits is not None and merged[key] is not None:
                merged[key] = limits.check(merged[key], f"{where}: {key}", given=value)
        return merged

    def check(self, plan: OutputPlan, shapes: dict[str, tuple]) -> None:
        """Raise ConfigError when the output's sample shape cannot be this kind."""

    def prepare(self, ref: dict[str, np.ndarray], cand: dict[str, np.ndarray], plan: OutputPlan,
                reference_mask: np.ndarray) -> None:
        """Settle the options that depend on all samples (scales, thresholds) into ``plan.options``.

        ``ref``/``cand`` map a role ("output" and the kind's roles) to a stacked output;
        ``reference_mask`` marks the samples that set scales (the clean ones when present).
        Runs once, before ``evidence`` sees the samples a chunk at a time.
        """

    def evidence(self, ref: dict[str, np.ndarray], cand: dict[str, np.ndarray], plan: OutputPlan,
                 labels: np.ndarray | None) -> dict[str, np.ndarray]:
        """Per-sample arrays (first axis = samples) that every group summary reduces.

        Samples are independent here, so this may be called on any slice of them.
        """
        raise NotImplementedError

    def summarize(self, ev: dict[str, np.ndarray], labels: np.ndarray | None, plan: OutputPlan) -> dict:
        """Figures for one group: the contract's keys, the kind's own, and ``value``/``events``/``trials``."""
        raise NotImplementedError


def _typed(value, default, where: str):
    if isinstance(value, (dict, list, tuple, set)) or value is None:
        raise ConfigError(f"{where} must be a single value (a number, true/false or a word), not {_shown(value)}")
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "yes", "1", "false", "no", "0"):
            return str(value).lower() in ("true", "yes", "1")
        raise ConfigError(f"{where} must be true or false, not {_shown(value)}")
    if isinstance(default, (int, float)) or default is None:
        if isinstance(value, bool):  # float(True) is 1.0: a yes/no where a number belongs is a mistake
            raise ConfigError(f"{where} must be a number, not {_shown(value)}")
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{where} must be a number, not {_shown(value)}") from None
        if not np.isfinite(number):
            raise ConfigError(f"{where} must be a finite number, not {_shown(value)}")
        return int(number) if isinstance(default, int) and number == int(number) else number
    return str(value)


# --- helpers shared by the kinds -------------------------------------------------------------

def flat(a: np.ndarray) -> np.ndarray:
    return a.reshape(len(a), -1)


def error_evidence(ref: np.ndarray, cand: np.ndarray) -> dict[str, np.ndarray]:
    """Per-sample sums behind SQNR and the largest error: valid for every kind."""
    r = flat(ref).astype(np.float64)
    diff = r - flat(cand)
    return {"sq_err": np.einsum("ij,ij->i", diff, diff), "sq_ref": np.einsum("ij,ij->i", r, r),
            "max_abs": np.abs(diff, out=diff).max(axis=1) if diff.shape[1] else np.zeros(len(diff))}


def error_summary(ev: dict[str, np.ndarray]) -> dict:
    noise, signal = float(ev["sq_err"].sum()), float(ev["sq_ref"].sum())
    if noise == 0.0:
        sqnr = float("inf")
    elif signal == 0.0:
        sqnr = float("-inf")
    else:
        sqnr = 10.0 * float(np.log10(signal / noise))
    return {"sqnr_db": sqnr, "max_abs_error": float(ev["max_abs"].max()) if len(ev["max_abs"]) else 0.0}


def contract_keys(n: int, rate: float, **given) -> dict:
    """The report contract's metric keys; kinds without classes leave accuracy as None."""
    base = {"n": n, "float_accuracy": None, "quant_accuracy": None, "accuracy_drop": None,
            "agreement": 1.0 - rate, "flip_rate": rate, "kl_mean": None}
    base.update(given)
    return base


def rate(events: int, trials: int) -> float:
    return events / trials if trials else 0.0


def units_of(x) -> int:
    """Values per sample of a stacked output (an ndarray or a DiskArray)."""
    return int(np.prod(x.shape[1:], dtype=np.int64))


def is_probability_rows(x) -> bool:
    """Every row non-negative and summing to 1; read a block at a time (outputs may be on disk)."""
    if units_of(x) <= 1 or not len(x):
        return False
    return all(flat(b).min() >= 0 and np.allclose(flat(b).sum(axis=1), 1.0, atol=1e-3) for b in row_blocks(x))


def in_unit_interval(x) -> bool:
    if not x.size:
        return False
    return all(b.min() >= 0.0 and b.max() <= 1.0 for b in row_blocks(x) if b.size)


def reference_rows(x, reference_mask: np.ndarray) -> np.ndarray:
    """The rows that set scales (the clean samples when there are any), as an ndarray."""
    return np.asarray(x[reference_mask] if reference_mask.any() else x[:])


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))
