"""What a soak showed, CI gates over it, and JUnit XML for Jenkins/GitLab.

Pure functions over the pulled ``records.jsonl``, so a soak can be re-judged offline.
Start and end latency are medians over the first and last few windows, so one noisy
window neither hides nor invents a drift.
"""

from __future__ import annotations

import json
import statistics
import xml.etree.ElementTree as ET
from pathlib import Path

from device_agents.edgeq_agent import throttled_now  # the one decoder (older agents wrote since-boot bits)
from edgeq.files import write_text


EDGE_WINDOWS = 3
GATES = {
    "p99-drift": ("p99 latency at the end vs the start, relative", lambda s: s["p99_ms"]["drift"]),
    "rss-growth": ("agent RSS at the end vs after the first window, relative", lambda s: s["rss_kb"]["growth"]),
    "output-drift": ("outputs that differ from the first pass (count)", lambda s: s["output_drift"]["mismatched"]),
    "throttled": ("windows with the SoC throttled (count)", lambda s: s["throttled_windows"]),
}


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _relative(start, end):
    return None if not start or end is None else end / start - 1.0


def summarize(records: list[dict], status: dict | None = None, bad_records: int = 0) -> dict:
    """The soak's figures; ``bad_records`` (malformed lines skipped when reading) is reported as is."""
    windows = [r for r in records if r.get("type") == "window"]
    status = status or {}
    if not windows:
        return {"windows": 0, "bad_records": bad_records, "state": status.get("state"), "error": status.get("error"),
                "p99_ms": {"start": None, "end": None, "drift": None}, "rss_kb": {"start": None, "end": None,
                                                                                 "growth": None},
                "output_drift": {"checked": 0, "mismatched": 0}, "throttled_windows": 0}
    p99 = [w["latency_ms"]["p99"] for w in windows]
    start, end = _median(p99[:EDGE_WINDOWS]), _median(p99[-EDGE_WINDOWS:])
    rss_start, rss_end = windows[0].get("rss_kb"), _median([w.get("rss_kb") for w in windows[-EDGE_WINDOWS:]])
    temps = [w.get("temp_c") for w in windows if w.get("temp_c") is not None]
    powers = [w.get("power_w") for w in windows if w.get("power_w") is not None]
    drift = windows[-1].get("drift") or {"checked": 0, "mismatched": 0}
    return {
        "windows": len(windows), "bad_records": bad_records, "state": status.get("state"), "error": status.get("error"),
        "elapsed_s": windows[-1].get("elapsed_s"), "inferences": sum(w["latency_ms"]["n"] for w in windows),
        "p99_ms": {"start": start, "end": end, "drift": _relative(start, end), "max": max(p99)},
        "p50_ms": {"start": _median([w["latency_ms"]["p50"] for w in windows[:EDGE_WINDOWS]]),
                   "end": _median([w["latency_ms"]["p50"] for w in windows[-EDGE_WINDOWS:]])},
        "rss_kb": {"start": rss_start, "end": rss_end, "growth": _relative(rss_start, rss_end)},
        "output_drift": {"checked": drift.get("checked", 0), "mismatched": drift.get("mismatched", 0)},
        "temp_c": {"max": max(temps) if temps else None, "mean": statistics.fmean(temps) if temps else None},
        "power_w": {"mean": statistics.fmean(powers) if powers else None},
        "throttled_windows": sum(1 for w in windows if throttled_now(w.get("throttled"))),
    }


def parse_soak_gates(text: str | None) -> list[tuple[str, float]]:
    from edgeq.analysis.gates import parse_limits

    return parse_limits(text, GATES)


def evaluate_soak_gates(summary: dict, gates: list[tuple[str, float]]) -> list[dict]:
    results = []
    for name, limit in gates:
        observed = GATES[name][1](summary)
        results.append({"gate": name, "limit": limit, "observed": observed,
                        "failed": observed is None or observed > limit, "meaning": GATES[name][0]})
    return results


def junit_xml(suites: list[tuple[dict, str, str]]) -> str:
    """One test suite per device (summary, device, model): "ran to the end" plus one case per gate."""
    root = ET.Element("testsuites")
    for summary, device, model in suites:
        root.append(_suite(summary, summary.get("gates", []), device, model))
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _suite(summary: dict, gates: list[dict], device: str, model: str) -> ET.Element:
    suite = ET.Element("testsuite", name=f"edgeq soak on {device}", tests=str(len(gates) + 1),
                       failures=str(sum(g["failed"] for g in gates) + (summary.get("state") != "finished")),
                       time=f"{summary.get('elapsed_s') or 0:.1f}")
    ran = ET.SubElement(suite, "testcase", classname=f"edgeq.devices.soak.{device}", name=f"{model} ran to the end",
                        time=f"{summary.get('elapsed_s') or 0:.1f}")
    if summary.get("state") != "finished":
        ET.SubElement(ran, "failure", message=f"soak ended {summary.get('state')}: {summary.get('error') or ''}")
    for gate in gates:
        case = ET.SubElement(suite, "testcase", classname=f"edgeq.devices.soak.{device}",
                             name=f"{gate['gate']} <= {gate['limit']}")
        if gate["failed"]:
            ET.SubElement(case, "failure", message=f"{gate['meaning']}: observed {gate['observed']}, "
                                                   f"limit {gate['limit']}")
    ET.SubElement(suite, "system-out").text = json.dumps(summary, indent=1)
    return suite


def write_junit(path, suites: list[tuple[dict, str, str]]) -> Path:
    """``junit_xml(suites)`` written to PATH, a file (``-`` is refused by the CLI's ``--junit`` option:
    stdout belongs to ``--json -`` and the human lines), through a temporary name beside it, so a CI
    job never reads a half-written report or finds the previous night's report half replaced."""
    from edgeq.errors import ConfigError

    path = Path(path)
    if str(path) == "-" or path.is_dir():
        raise ConfigError(f"--junit {path}: needs a file path ('-' and folders are refused)")
    write_text(path, junit_xml(suites))
    return path
