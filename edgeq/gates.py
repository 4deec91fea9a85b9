"""CI gates (``--fail-on drop=0.05,flip=0.1,sqnr=20,verdict=degraded``): exit 1 when crossed."""

from __future__ import annotations

from edgeq.compare import verdict_metric
from edgeq.errors import ConfigError

VERDICT_ORDER = ("robust", "degraded", "catastrophic")


def _worst(report: dict, pick, higher_is_worse: bool = True):
    values = [(pick(entry), name) for name, entry in report["categories"].items() if pick(entry) is not None]
    if not values:
        return None, None
    return max(values) if higher_is_worse else min(values)


# name -> (description, observe(report) -> (value, where), failed(value, limit))
GATES = {
    "drop": ("worst category accuracy drop (flip rate without labels) above the limit",
             lambda r: _worst(r, verdict_metric), lambda v, lim: v > lim),
    "flip": ("worst category flip rate above the limit",
             lambda r: _worst(r, lambda e: e["flip_rate"]), lambda v, lim: v > lim),
    "sqnr": ("worst category SQNR (dB) below the limit",
             lambda r: _worst(r, lambda e: e["sqnr_db"], higher_is_worse=False), lambda v, lim: v < lim),
    "kl": ("worst category mean KL divergence above the limit",
           lambda r: _worst(r, lambda e: e["kl_mean"]), lambda v, lim: v > lim),
    "p99-ms": ("quantized model p99 latency (ms) above the limit",
               lambda r: ((r.get("latency_ms") or {}).get("quant", {}).get("p99"), "quant"),
               lambda v, lim: v > lim),
}


def parse_limits(text: str | None, known: dict, text_values: dict | None = None) -> list[tuple[str, object]]:
    """``NAME=NUMBER,…`` for the gates in ``known``; ``text_values`` names gates taking words."""
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
            gates.append((name, float(value)))
        except ValueError:
            raise ConfigError(f"--fail-on {name}= needs a number, not {value!r}") from None
    return gates


def parse_gates(text: str | None) -> list[tuple[str, object]]:
    return parse_limits(text, GATES, {"verdict": VERDICT_ORDER[1:]})


def evaluate_gates(report: dict, gates: list[tuple[str, object]]) -> list[dict]:
    results = []
    for name, limit in gates:
        if name == "verdict":
            observed, where = report["verdict"], None
            failed = VERDICT_ORDER.index(observed) >= VERDICT_ORDER.index(limit)
        else:
            observed, where = GATES[name][1](report)
            failed = observed is not None and GATES[name][2](observed, limit)
        results.append({"gate": name, "limit": limit, "observed": observed, "where": where, "failed": bool(failed)})
    return results
