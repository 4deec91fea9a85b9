"""CI gates (``--fail-on drop=0.05,flip=0.1,sqnr=20,verdict=degraded``): exit 1 when crossed.

Gates look at every cell that decides the verdict (field cells where the float model
still works, of every output that drives it), so a gate and the verdict always judge
the same things. Stress findings (near-boundary points, out-of-domain inputs,
preprocessing mistakes) gate only through their own opt-in ``stress=degraded|catastrophic``.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

from edgeq.analysis.compare import cells_of
from edgeq.analysis.field import counts
from edgeq.analysis.kinds import Limits
from edgeq.errors import ConfigError

VERDICT_ORDER = ("robust", "degraded", "catastrophic")


def _cells(report: dict):
    sections = report.get("outputs")
    if not sections:  # a report from before output kinds: its categories are the cells
        sections = {"": {"categories": report.get("categories") or {}, "drives_verdict": True}}
    for output, section in sections.items():
        if section.get("drives_verdict", True):
            for category, level, figures in cells_of(section):
                if not counts(figures) or (section.get("enough_trials") and figures.get("low_n")):
                    continue  # what the verdict does not rest on (stress, float fails, a small cell beside large)
                where = category + (f" severity {level}" if level else "") + (f" ({output})" if output else "")
                yield where, figures


def _worst(report: dict, key: str, higher_is_worse: bool = True):
    values = [(figures.get(key), where) for where, figures in _cells(report) if figures.get(key) is not None]
    if not values:
        return None, None
    return max(values) if higher_is_worse else min(values)


def _deciding_n(report: dict):
    """Trials behind the verdict: the deciding cell's, or for robust every cell's smallest."""
    if report.get("verdict") == "robust":
        counts = [(f.get("trials", f.get("n")), where) for where, f in _cells(report) if f.get("value") is not None]
        return min(counts) if counts else (None, None)
    section = (report.get("outputs") or {}).get(report.get("deciding_output"), {})
    where = f"{report.get('worst_category')}" + (f" severity {report['worst_severity']}"
                                                  if report.get("worst_severity") else "")
    return section.get("worst_n"), where


def _value(figures: dict):
    value = figures.get("value")
    if value is not None:
        return value
    return figures["flip_rate"] if figures.get("accuracy_drop") is None else figures["accuracy_drop"]


def _worst_value(report: dict):
    values = [(_value(f), where) for where, f in _cells(report) if _value(f) is not None]
    return max(values) if values else (None, None)


class Gate(NamedTuple):
    description: str
    observe: Callable  # report -> (value, where)
    failed: Callable  # (value, limit) -> bool
    limits: Limits | None = None  # the limits a user may give (checked by parse_limits)


RATE = Limits(0, 1)  # verdict rates are fractions: a limit outside [0, 1] passes or fails everything

GATES = {
    "drop": Gate("worst cell's verdict rate above the limit (accuracy drop with labels, else the output kind's "
                 "flip or fail rate)", _worst_value, lambda v, lim: v > lim, RATE),
    "flip": Gate("worst cell flip rate above the limit", lambda r: _worst(r, "flip_rate"), lambda v, lim: v > lim,
                 RATE),
    "sqnr": Gate("worst cell SQNR (dB) below the limit", lambda r: _worst(r, "sqnr_db", higher_is_worse=False),
                 lambda v, lim: v < lim, Limits()),
    "kl": Gate("worst cell mean KL divergence above the limit", lambda r: _worst(r, "kl_mean"),
               lambda v, lim: v > lim, Limits(0)),
    "p99-ms": Gate("quantized model p99 latency (ms) above the limit",
                   lambda r: ((r.get("latency_ms") or {}).get("quant", {}).get("p99"), "quant"),
                   lambda v, lim: v > lim, Limits(0, low_open=True)),
    "min-n": Gate("the verdict rests on fewer trials than the limit (refuse verdicts from tiny sets)",
                  _deciding_n, lambda v, lim: v < lim, Limits(1, whole=True)),
}


def parse_limits(text: str | None, known: dict, text_values: dict | None = None) -> list[tuple[str, object]]:
    """``NAME=NUMBER,…`` for the gates in ``known``; ``text_values`` names gates taking words.
    A gate whose table entry has ``limits`` (a ``Gate``) is refused outside them."""
    text_values = text_values or {}
    gates = []
    for item in (text or "").split(","):
        if not item.strip():
            continue
        name, sep, value = item.strip().partition("=")
        if not sep:
            raise ConfigError(f"--fail-on: {item!r} is not NAME=VALUE")
        if name in text_values:
            if value not in text_values[name]:
                raise ConfigError(f"--fail-on {name}= takes {' or '.join(text_values[name])}, not {value!r}")
            gates.append((name, value))
            continue
        if name not in known:
            raise ConfigError(f"--fail-on: unknown gate {name!r} (known: {', '.join(list(known) + list(text_values))})")
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"--fail-on {name}= needs a number, not {value!r}") from None
        if not math.isfinite(number):
            raise ConfigError(f"--fail-on {name}= needs a finite number, not {value!r}")
        limits = getattr(known[name], "limits", None)
        if limits is not None:
            number = limits.check(number, f"--fail-on {name}=", given=value)
        gates.append((name, number))
    return gates


def parse_gates(text: str | None) -> list[tuple[str, object]]:
    return parse_limits(text, GATES, {"verdict": VERDICT_ORDER[1:], "stress": VERDICT_ORDER[1:]})


def _stress(report: dict):
    """The worst stress cell's band and where it is (robust when there is none)."""
    worst = (report.get("stress") or {}).get("worst")
    if not worst:
        return "robust", None
    where = worst["category"] + (f" severity {worst['severity']}" if worst.get("severity") else "")
    return worst["band"], f"{where} ({worst['output']})"


def evaluate_gates(report: dict, gates: list[tuple[str, object]]) -> list[dict]:
    results = []
    for name, limit in gates:
        if name in ("verdict", "stress"):
            observed, where = (report["verdict"], None) if name == "verdict" else _stress(report)
            failed = VERDICT_ORDER.index(observed) >= VERDICT_ORDER.index(limit)
        else:
            observed, where = GATES[name][1](report)
            failed = observed is not None and GATES[name][2](observed, limit)
        results.append({"gate": name, "limit": limit, "observed": observed, "where": where, "failed": bool(failed)})
    return results
