"""What every HTML page of edgeq shares: escaping, number formats, colours, the base CSS, the metric
words, the verdict basis and thresholds of a report, the text of a cell and its rate, and an atomic write.

``html`` (the report page) and its sections (``outputs_html``, ``stress_html``, ``search_html``,
``repair_html``), ``history_page`` and ``measure`` import these from here; nothing here imports a
page or a section, so no section ever needs the page that includes it.

Every piece of text that comes from a report goes through ``escape``; every number through
``fmt``, which turns None/NaN/text into "—" and infinities into "∞"/"−∞"; anything that should be
a dict but is not reads as ``{}`` (``as_dict``), so a malformed report shows dashes, not a traceback.
"""

from __future__ import annotations

import html
import math
import os

import numpy as np

from edgeq.analysis.rules import THRESHOLDS
from edgeq.files import write_text
from edgeq.reports.units import duration_text

COLORS = {"ok": "#1e8e3e", "warn": "#e8a100", "bad": "#d93025", "na": "#9aa0a6",
          "float": "#1a73e8", "quant": "#e8710a"}
VERDICTS = ("robust", "degraded", "catastrophic")
CSS = """body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:#f5f6f8;color:#202124;margin:0;padding:24px}
main{max-width:1000px;margin:0 auto}h1{font-size:20px;margin:0 0 12px}h2{font-size:16px;margin:0 0 10px}
section,header{background:#fff;border:1px solid #e0e3e7;border-radius:8px;padding:16px 20px;margin-bottom:16px}
.badge{display:inline-block;font-size:28px;font-weight:700;color:#fff;padding:6px 18px;border-radius:8px;text-transform:uppercase;letter-spacing:.04em;vertical-align:middle}
.verdict-robust{background:#1e8e3e}.verdict-degraded{background:#e8a100;color:#202124}.verdict-catastrophic{background:#d93025}.verdict-unknown{background:#9aa0a6}
.worst{display:inline-block;margin-left:16px;vertical-align:middle;font-size:15px}.meta{color:#5f6368;font-size:13px;margin:4px 0}.meta b{color:#202124}
table{border-collapse:collapse;width:100%;font-size:13px}.scroll{overflow-x:auto}
th,td{padding:4px 6px;border-bottom:1px solid #eceff1;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left;white-space:normal;overflow-wrap:anywhere}
th{background:#f8f9fa;font-weight:600;white-space:normal;vertical-align:bottom}td.desc{text-align:left;white-space:normal;color:#5f6368}
tr.worst-row td{background:#fff4e5}tr.sev>td{padding:0 8px 6px 24px;border-bottom:none}
details summary{cursor:pointer;color:#5f6368;font-size:12px}details table{margin-top:4px;font-size:12px}
.pass{color:#1e8e3e;font-weight:700}.fail{color:#d93025;font-weight:700}.note{color:#5f6368;font-size:12px;margin:6px 0 0}
svg{display:block;width:100%;height:auto}svg text{font-size:12px;fill:#3c4043}code{font-size:12px}h3{font-size:14px;margin:12px 0 6px}"""
METRICS = [  # key, label, kind, meaning (a classification's words; outputs_html.metrics_for: each kind's own)
    ("n", "samples", "int", "inputs compared"),
    ("float_accuracy", "float accuracy", "pct", "top-1 accuracy of the float model"),
    ("quant_accuracy", "quant accuracy", "pct", "top-1 accuracy of the quantized model"),
    ("accuracy_drop", "accuracy drop", "pct", "float − quant accuracy (negative: quant better)"),
    ("agreement", "agreement", "pct", "share of inputs where both models pick the same class"),
    ("flip_rate", "flip rate", "pct", "share of inputs whose predicted class changes"),
    ("sqnr_db", "SQNR", "db", "signal-to-quantization-noise ratio of the outputs"),
    ("kl_mean", "mean KL", "sci", "mean KL divergence, float vs quant output distribution"),
    ("max_abs_error", "max |error|", "sci", "largest absolute output difference"),
]
# the verdict rates a report can be judged by (``metric_basis``, a cell's ``metric``), in words
RATE_LABELS = {"accuracy_drop": "accuracy drop", "flip_rate": "flip rate", "sample_flip_rate": "sample flip rate",
               "label_flip_rate": "label flip rate", "fail_rate": "fail rate",
               "detection_flip_rate": "detection flip rate", "none": "not judged"}
BASES = ("accuracy_drop", "flip_rate", "sample_flip_rate", "label_flip_rate", "fail_rate", "detection_flip_rate")
# every figure's words: the overview metrics and the verdict rates
LABELS = {**{k: label for k, label, _, _ in METRICS}, **{k: RATE_LABELS[k] for k in BASES}}


def escape(x) -> str:
    """Text for HTML (quotes too); None is ""."""
    return html.escape("" if x is None else str(x), quote=True)


def as_dict(x) -> dict:
    """``x`` when it is a dict, else ``{}``: a report read from a file may hold anything."""
    return x if isinstance(x, dict) else {}


def number(x):
    """A float, or None for anything that is not a real number (None, NaN, text, bool)."""
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
        return None
    x = float(x)
    return None if math.isnan(x) else x


FORMATS = {"pct": lambda v: f"{v * 100:.2f}%" if 0 < abs(v) < 0.01 else f"{v * 100:.1f}%",
           "db": "{:.1f} dB".format, "int": "{:,.0f}".format, "ms": lambda v: duration_text(v), "num": "{:.3g}".format}


def fmt(x, kind: str = "num") -> str:
    """Format a metric; None/NaN/non-numbers give "—", infinities "∞"/"−∞"."""
    v = number(x)
    if v is None:
        return "—"
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    return FORMATS.get(kind, FORMATS["num"])(v)


def size_text(b) -> str:
    """A byte count as "812 B", "1.5 MB"; "—" when unknown."""
    v = number(b)
    if v is None:
        return "—"
    for unit in ("B", "KB", "MB", "GB"):
        if v < 1024 or unit == "GB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024


def basis_of(report: dict) -> str:
    """The rate the report's verdict reads (``metric_basis``); for older reports, the accuracy drop when
    a category has one, else the flip rate."""
    b = report.get("metric_basis")
    if b in BASES:
        return b
    cats = as_dict(report.get("categories")).values()
    has_labels = any(number(as_dict(c).get("accuracy_drop")) is not None for c in cats)
    return "accuracy_drop" if has_labels else "flip_rate"


def thresholds_of(report: dict) -> tuple[float, float]:
    """(degraded, catastrophic) as the report says them, the rules' defaults where it says nothing usable."""
    t = as_dict(report.get("thresholds"))
    vals = [number(t.get(k)) for k in ("degraded", "catastrophic")]
    return tuple(v if v is not None and math.isfinite(v) else THRESHOLDS[k]
                 for k, v in zip(("degraded", "catastrophic"), vals))


def band_of(v, thr) -> str:
    """The colour band of a verdict rate: "ok", "warn" (degraded), "bad" (catastrophic), "na" (unknown)."""
    if v is None:
        return "na"
    return "bad" if v >= thr[1] else "warn" if v >= thr[0] else "ok"


def metric_label(name) -> str:
    """A verdict rate's name in words ("flip rate"); "rate" when there is none."""
    return RATE_LABELS.get(name, str(name) if name else "rate")


def ci_pair(ci):
    """(lo, hi) as floats, or None when the interval is missing or malformed."""
    if not isinstance(ci, (list, tuple)) or len(ci) != 2:
        return None
    lo, hi = number(ci[0]), number(ci[1])
    return (lo, hi) if lo is not None and hi is not None else None


def rate_text(value, ci) -> str:
    """ "12.0% [9.4–15.1%]": the rate and its 95 % interval (escaped-safe, no markup)."""
    text = fmt(value, "pct")
    pair = ci_pair(ci)
    if pair is None or text == "—":
        return text
    lo = fmt(pair[0], "pct").replace("-", "−")
    return f"{text.replace('-', '−')} [{lo[:-1] if lo.endswith('%') else lo}–{fmt(pair[1], 'pct').replace('-', '−')}]"


def cell_name(category, severity) -> str:
    """Plain text "noise, severity 3" (escape before use)."""
    if category is None:
        return "—"
    return f"{category}, severity {severity}" if severity not in (None, "") else str(category)


def write_text_atomic(path, text: str) -> None:
    """Write ``text`` as UTF-8 to a temporary file beside ``path``, then ``os.replace`` it: a reader never
    sees half a page, a failed write leaves the old file. A new file is 0644, an existing one keeps its mode."""
    path = os.fspath(path)
    write_text(path, text, perms=os.stat(path).st_mode & 0o777 if os.path.exists(path) else 0o644)
