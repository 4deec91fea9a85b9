import copy
import os
import re
import stat
from html.parser import HTMLParser

import numpy as np
import pytest

from edgeq.reports.html import fmt, render_html, write_html

EVIL = "<script>alert(1)</script>&"
VOID = {"meta", "br", "hr", "img", "input", "link", "wbr", "col", "area", "base", "source"}


def metrics(n=60, fa=0.9, qa=0.88, flip=0.03, sqnr=30.0):
    return {"n": n, "float_accuracy": fa, "quant_accuracy": qa,
            "accuracy_drop": None if fa is None else fa - qa, "agreement": 1 - flip,
            "flip_rate": flip, "sqnr_db": sqnr, "kl_mean": 0.001, "max_abs_error": 0.4}


def make_report(**extra):
    cats = {
        "clean": metrics(fa=0.98, qa=0.975, flip=0.01),
        "brightness+": metrics(fa=0.90, qa=0.78, flip=0.15),
        "gaussian_noise": metrics(fa=0.85, qa=0.80, flip=0.07),
        EVIL: metrics(fa=0.9, qa=0.91, flip=0.02),  # quant better: negative drop
    }
    cats["gaussian_noise"]["severities"] = {str(s): metrics(n=20, qa=0.9 - 0.02 * s) for s in (1, 2, 3)}
    report = {
        "verdict": "catastrophic", "worst_category": "brightness+",
        "overall": metrics(n=240, fa=0.91, qa=0.87, flip=0.06, sqnr=31.24),
        "categories": cats,
        "device": {"name": "pi<5>&lab", "arch": "aarch64", "runtime": "ai_edge_litert 2.3.0",
                   "resolver": "AUTO", "threads": 4},
        "latency_ms": {"float": {"p50": 2.0, "p90": 2.5, "p99": 3.0, "mean": 2.1, "std": 0.2, "n": 1000},
                       "quant": {"p50": 1.0, "p90": 1.2, "p99": 1.9, "mean": 1.1, "std": 0.1, "n": 1000}},
    }
    report.update(extra)
    return report


class BalanceChecker(HTMLParser):
    """Records mismatched end tags and what stays open; counts tags of interest."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.counts, self.text = [], [], {}, []

    def handle_starttag(self, tag, attrs):
        self.counts[tag] = self.counts.get(tag, 0) + 1
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.counts[tag] = self.counts.get(tag, 0) + 1

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}>, open: {self.stack[-3:]}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse(page):
    p = BalanceChecker()
    p.feed(page)
    p.close()
    return p


def svg_block(page, cls):
    m = re.search(rf'<svg class="{cls}".*?</svg>', page, re.S)
    return m.group(0) if m else None


def test_verdict_badge_text_and_colour_class():
    for verdict in ("robust", "degraded", "catastrophic"):
        page = render_html(make_report(verdict=verdict))
        assert re.search(rf'<span class="badge verdict-{verdict}">{verdict}</span>', page)
        assert f".verdict-{verdict}{{background:" in page
    page = render_html(make_report(verdict="<b>weird</b>"))
    assert 'class="badge verdict-unknown"' in page and "&lt;b&gt;weird&lt;/b&gt;" in page


def test_worst_category_and_its_number_in_header():
    page = render_html(make_report())
    header = page[page.index("<header>"):page.index("</header>")]
    assert "brightness+" in header and "12.0%" in header  # 0.90 - 0.78
    assert "pi&lt;5&gt;&amp;lab" in header and "ai_edge_litert 2.3.0" in header


def test_every_category_name_appears_and_evil_name_is_escaped():
    report = make_report()
    page = render_html(report)
    for name in report["categories"]:
        assert html_escape(name) in page
    assert EVIL not in page
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&amp;" in page
    assert "pi<5>" not in page


def html_escape(s):
    import html
    return html.escape(s, quote=True)


def test_none_nan_and_inf_metrics_do_not_crash():
    report = make_report()
    ov = report["overall"]
    ov.update(float_accuracy=None, quant_accuracy=None, accuracy_drop=None, kl_mean=float("nan"),
              sqnr_db=float("inf"), max_abs_error=float("-inf"))
    page = render_html(report)
    overall = page[page.index("<h2>Overall</h2>"):]
    overall = overall[:overall.index("</section>")]
    assert re.search(r"<td>float accuracy</td><td>—</td>", overall)
    assert re.search(r"<td>accuracy drop</td><td>—</td>", overall)
    assert re.search(r"<td>mean KL</td><td>—</td>", overall)
    assert re.search(r"<td>SQNR</td><td>∞</td>", overall)
    assert re.search(r"<td>max \|error\|</td><td>−∞</td>", overall)
    assert "nan" not in page.lower()


@pytest.mark.parametrize("value,kind,expected", [
    (None, "pct", "—"), (float("nan"), "db", "—"), ("0.5", "pct", "—"), (True, "pct", "—"),
    (float("inf"), "pct", "∞"), (0.0123, "pct", "1.2%"), (0.004, "pct", "0.40%"), (-0.002, "pct", "-0.20%"),
    (0.0, "pct", "0.0%"), (31.24, "db", "31.2 dB"), (np.float32(0.5), "pct", "50.0%"), (1234, "int", "1,234"),
])
def test_fmt(value, kind, expected):
    assert fmt(value, kind) == expected


def test_bar_count_equals_category_count_and_sorted_worst_first():
    report = make_report()
    page = render_html(report)
    svg = svg_block(page, "bars")
    assert svg is not None
    assert len(re.findall(r'<rect class="bar ', svg)) == len(report["categories"])
    order = re.findall(r"<title>([^<]*): [^<]*</title></rect>", svg)
    assert order == ["brightness+", "gaussian_noise", "clean", html_escape(EVIL)]
    assert 'class="bar band-bad"' in svg and 'class="bar band-warn"' in svg and 'class="bar band-ok"' in svg
    assert len(re.findall(r'class="threshold"', svg)) == 2


def test_negative_drop_is_drawn_left_of_zero():
    svg = svg_block(render_html(make_report()), "bars")
    zero = float(re.search(r'<line x1="([\d.]+)" x2="\1" y1="\d+" y2="\d+" stroke="#5f6368"/>', svg).group(1))
    pairs = re.findall(r'<rect class="bar [^"]*" x="([\d.]+)"[^>]*><title>([^<]*):', svg)
    bars = {name: float(x) for x, name in pairs}
    assert len(bars) == 4
    assert bars[html_escape(EVIL)] < zero - 1
    assert bars["brightness+"] == pytest.approx(zero)


def test_custom_thresholds_change_bands_and_lines():
    report = make_report(thresholds={"degraded": 0.2, "catastrophic": 0.5})
    svg = svg_block(render_html(report), "bars")
    assert "band-bad" not in svg and "band-warn" not in svg
    assert "degraded 20.0%" in svg and "catastrophic 50.0%" in svg


def test_flip_rate_basis_without_labels():
    report = make_report()
    for c in report["categories"].values():
        c.update(float_accuracy=None, quant_accuracy=None, accuracy_drop=None)
    page = render_html(report)
    assert "flip rate by category" in page
    svg = svg_block(page, "bars")
    assert len(re.findall(r'<rect class="bar ', svg)) == 4
    assert "brightness+: 15.0%" in svg
    assert render_html(make_report(metric_basis="flip_rate")).count("flip rate by category") == 1


def test_severity_rows_are_collapsible():
    page = render_html(make_report())
    assert page.count("<details>") == 1
    det = page[page.index("<details>"):page.index("</details>")]
    assert "gaussian_noise" in det and all(f"severity {s}" in det for s in (1, 2, 3))


def test_histogram_only_with_latency_arrays():
    report = make_report()
    assert svg_block(render_html(report), "hist") is None
    assert "<td>quant ÷ float</td><td>0.50×</td>" in render_html(report)
    rng = np.random.default_rng(0)
    lat = {"float": rng.normal(2.0, 0.1, 500), "quant": np.r_[rng.normal(1.0, 0.1, 500), [50.0, np.nan]]}
    page = render_html(report, lat)
    svg = svg_block(page, "hist")
    assert svg is not None and 'class="hist-float"' in svg and 'class="hist-quant"' in svg
    assert "99.5th percentile" in page and "quant run(s)" in page
    assert len(re.findall(r'class="hist-float"', svg)) <= 40
    assert svg_block(render_html(report, {"float": [], "quant": [np.nan]}), "hist") is None


def test_histogram_with_constant_latencies():
    page = render_html(make_report(), {"float": np.full(10, 1.5), "quant": np.full(10, 1.5)})
    svg = svg_block(page, "hist")
    assert svg is not None and "nan" not in svg.lower() and "inf" not in svg.lower()


def test_gates_pass_fail():
    gates = [{"gate": "drop", "limit": 0.05, "observed": 0.07, "failed": True},
             {"gate": "sqnr<&>", "limit": 20, "observed": 31.2, "failed": False}]
    page = render_html(make_report(gates=gates))
    assert "Gates: 1 of 2 failed" in page
    assert re.search(r"<td>drop</td><td>0.05</td><td>0.07</td><td><span class=\"fail\">FAIL</span>", page)
    assert re.search(r"<td>sqnr&lt;&amp;&gt;</td><td>20</td><td>31.2</td><td><span class=\"pass\">PASS</span>", page)
    assert "Gates" not in render_html(make_report())


def test_optional_extensions_rendered_and_escaped():
    report = make_report(
        model={"float": {"path": "m/<a>.tflite", "sha256": "ab" * 32, "size": 2 * 1024 * 1024},
               "quant": {"path": "m/q.tflite", "size": 512 * 1024}, "policy": "dynamic-range",
               "weights_quantized": "3 of 4"},
        inputs={"path": "d/x&y.npz", "sha256": "cd" * 32, "n": 240}, created="2025-01-01T00:00:00Z",
        edgeq_version="0.1.0", category_descriptions={"clean": "the <original> inputs"})
    page = render_html(report)
    for s in ("m/&lt;a&gt;.tflite", "2.0 MB", "512.0 KB", "dynamic-range", "3 of 4", "d/x&amp;y.npz",
              "cdcdcdcdcdcd", "2025-01-01T00:00:00Z", "edgeq 0.1.0", "the &lt;original&gt; inputs"):
        assert s in page, s


def test_minimal_and_garbage_reports_do_not_crash():
    for rep in ({}, {"verdict": None, "categories": None, "overall": "x", "latency_ms": [], "gates": "no"},
                {"verdict": "robust", "categories": {"a": {"n": 1}}, "worst_category": ["x"]}):
        page = render_html(rep)
        assert parse(page).errors == []


def test_write_html_writes_balanced_utf8_file(tmp_path):
    rng = np.random.default_rng(1)
    report = make_report(gates=[{"gate": "flip", "limit": 0.1, "observed": 0.05, "failed": False}])
    original = copy.deepcopy(report)
    out = tmp_path / "report.html"
    write_html(report, out, {"float": rng.gamma(9, 0.2, 300), "quant": rng.gamma(9, 0.1, 300)})
    assert report == original  # input not mutated
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temp file left behind
    text = out.read_bytes().decode("utf-8")
    assert text.startswith("<!DOCTYPE html>") and "≥" in text and "×" in text
    p = parse(text)
    assert p.errors == [] and p.stack == []
    assert p.counts["svg"] == 2 and p.counts["details"] == 1 and p.counts["table"] >= 5
    assert "script" not in p.counts and "img" not in p.counts
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text)  # no network references
    write_html(make_report(verdict="robust"), str(out))  # overwrite in place, str path
    assert "verdict-robust" in out.read_text(encoding="utf-8")

    fresh = tmp_path / "fresh.html"
    write_html(make_report(), fresh)
    assert stat.S_IMODE(os.stat(fresh).st_mode) == 0o644  # readable, not mkstemp's 0600
    os.chmod(out, 0o600)
    write_html(make_report(), out)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600  # existing permissions kept


def test_write_html_failure_leaves_old_file(tmp_path, monkeypatch):
    out = tmp_path / "r.html"
    out.write_text("old", encoding="utf-8")
    import edgeq.reports.html as mod

    def boom(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(mod.os, "replace", boom)
    with pytest.raises(OSError):
        write_html(make_report(), out)
    assert out.read_text(encoding="utf-8") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]


def test_category_without_value_gets_grey_bar_last():
    report = make_report()
    report["categories"]["no_data"] = dict(metrics(fa=None), flip_rate=None, agreement=None)
    svg = svg_block(render_html(report), "bars")
    assert len(re.findall(r'<rect class="bar ', svg)) == 5
    names = re.findall(r'<rect class="bar (band-\w+)"[^>]*><title>([^<]*): ([^<]*)</title>', svg)
    assert names[-1] == ("band-na", "no_data", "—")


def test_latency_section_skipped_without_any_latency():
    report = make_report()
    del report["latency_ms"]
    assert "<h2>Latency</h2>" not in render_html(report)
    page = render_html(report, {"float": [1.0, 2.0], "quant": [1.0]})
    assert "<h2>Latency</h2>" in page and svg_block(page, "hist") is not None


# --- reports judged output by output ------------------------------------------------------------

import json  # noqa: E402

from edgeq.reports.outputs_html import output_cells, rate_text  # noqa: E402


def group(value, events, trials, ci, low_n=False, **kind):
    g = {"n": trials, "float_accuracy": None, "quant_accuracy": None, "accuracy_drop": None,
         "agreement": 1 - value, "flip_rate": value, "sqnr_db": 24.5, "kl_mean": None, "max_abs_error": 0.3,
         "value": value, "events": events, "trials": trials, "ci95": ci, "low_n": low_n}
    g.update(kind)
    return g


def det(value, trials=500, low_n=False):
    events = round(value * trials)
    return group(value, events, trials, [max(value - 0.03, 0), min(value + 0.031, 1)], low_n,
                 detection_flip_rate=value, detections=trials, flipped_detections=events, float_detections=trials - 3,
                 quant_detections=trials - 5, sample_flip_rate=value * 2, matched_iou_mean=0.8123)


def section(kind, cats, verdict, worst, metric, **extra):
    s = {"index": 0, "kind": kind, "reason": f"chosen as {kind}", "source": "auto", "options": {}, "members": {},
         "drives_verdict": True, "labels": False, "metric": metric, "verdict": verdict,
         "worst_category": worst[0], "worst_severity": worst[1], "overall": next(iter(cats.values())), "categories": cats}
    cell = cats[worst[0]]["severities"][worst[1]] if worst[1] else cats[worst[0]] if worst[0] else {}
    s.update(worst_value=cell.get("value"), worst_ci95=cell.get("ci95"), worst_n=cell.get("trials"),
             confidence={"level": "tentative", "note": "the deciding cell's 95% interval reaches below 10%"})
    s.update(extra)
    return s


def new_report(**extra):
    det_cats = {"clean": det(0.01), "noise": dict(det(0.08), severities={"1": det(0.02), "2": det(0.05),
                                                                          "3": dict(det(0.0), value=0.12, ci95=[0.094, 0.151])}),
                "blur": dict(det(0.03, trials=12, low_n=True))}
    seg = lambda v, low=False: group(v, round(v * 40), 40, [0.0, v + 0.1], low, fail_rate=v, mask_iou_mean=0.95,
                                     mask_iou_min=0.61, pixel_agreement=0.991)
    cls = lambda d: group(d, 3, 200, [d - 0.02, d + 0.03], float_accuracy=0.9, quant_accuracy=0.9 - d,
                          accuracy_drop=d, topk_agreement=0.995, top_k=5, flips=7, kl_mean=0.0012)
    ign = {"n": 60, "sqnr_db": None, "max_abs_error": 0.0, "value": None, "events": 0, "trials": 0, "ci95": None,
           "low_n": False}
    outputs = {
        "regressors": section("detection", det_cats, "catastrophic", ("noise", "3"), "detection_flip_rate", index=0,
                              members={"scores": 1}, options={"layout": "anchors", "threshold": 0.5, "iou": 0.5}),
        "mask": section("segmentation", {"clean": seg(0.0), "noise": seg(0.05, True)}, "degraded", ("noise", None),
                        "fail_rate", index=2, source="spec outputs.toml", options={"min_iou": 0.9}),
        "Identity": section("classification", {"clean": cls(-0.005), "noise": cls(0.015)}, "robust", ("noise", None),
                            "accuracy_drop", index=3, labels=True),
        "aux": dict(section("ignore", {"clean": ign, "noise": ign}, None, (None, None), "none", index=4,
                            drives_verdict=False), confidence=None, worst_ci95=None),
    }
    report = {"verdict": "catastrophic", "worst_category": "noise", "worst_severity": "3",
              "deciding_output": "regressors", "metric_basis": "detection_flip_rate",
              "verdict_confidence": {"level": "firm", "note": "the deciding cell's 95% interval [9.4%, 15.1%] is above 10%"},
              "thresholds": {"degraded": 0.02, "catastrophic": 0.10}, "min_n": 30,
              "warnings": ["1 cell(s) have fewer than 30 trials, e.g. regressors: blur"],
              "overall": det_cats["clean"], "categories": det_cats, "outputs": outputs,
              "device": {"name": "local", "arch": "x86_64", "runtime": "ai_edge_litert 2.3.0"}}
    report.update(extra)
    return report


def sections_of(page):
    return dict(re.findall(r'<section class="output"><h2>output (.*?) — .*?</h2>(.*?)</section>', page, re.S))


def test_rate_text():
    assert rate_text(0.12, [0.094, 0.151]) == "12.0% [9.4–15.1%]"
    assert rate_text(-0.005, [-0.02, 0.01]) == "−0.50% [−2.0–1.0%]"
    assert rate_text(0.12, None) == rate_text(0.12, [0.1, "x"]) == "12.0%"
    assert rate_text(None, [0.1, 0.2]) == "—"


def test_fixture_is_strict_json():
    report = new_report()
    assert json.loads(json.dumps(report, allow_nan=False)) == report


def test_header_names_deciding_output_cell_interval_confidence_and_warnings():
    page = render_html(new_report())
    header = page[page.index("<header>"):page.index("</header>")]
    assert 'class="badge verdict-catastrophic"' in header
    assert "deciding output <b>regressors</b> (detection)" in header
    assert "cell <b>noise, severity 3</b>: detection flip rate <b>12.0% [9.4–15.1%]</b> over 500 trials" in header
    assert "confidence <b>firm</b>" in header and "is above 10%" in header
    assert '<div class="warnings">' in header and "e.g. regressors: blur</li>" in header
    assert "<script" not in page and "nan" not in page.lower()
    p = parse(page)
    assert p.errors == [] and p.stack == [] and "script" not in p.counts


def test_one_section_per_output_with_reason_options_and_flags():
    page = render_html(new_report())
    secs = sections_of(page)
    assert list(secs) == ["regressors", "mask", "Identity", "aux"]  # by index
    assert '<h2>output regressors — detection<span class="deciding">decides the verdict</span></h2>' in page
    assert page.count("decides the verdict") == 1
    assert "chosen as detection" in secs["regressors"] and "(source: auto)" in secs["regressors"]
    assert "options: layout=anchors, threshold=0.5, iou=0.5 · reads scores=output 1" in secs["regressors"]
    assert "drives the verdict: <b>yes</b> · labels: <b>no</b>" in secs["regressors"]
    assert "labels: <b>yes</b>" in secs["Identity"] and "drives the verdict: <b>no</b>" in secs["aux"]
    assert "(source: spec outputs.toml)" in secs["mask"]
    assert "<h2>Outputs</h2>" in page and page.count('<span class="deciding">decides</span>') == 1
    assert "— output regressors</h2>" in page  # the category chart is the deciding output's


def test_cell_tables_show_intervals_counts_kind_columns_and_worst_row():
    secs = sections_of(render_html(new_report()))
    reg = secs["regressors"]
    rows = re.findall(r"<tr( class=\"worst-row\")?><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)", reg)
    assert [(c, s) for _, c, s, _ in rows] == [("clean", "—"), ("noise", "1"), ("noise", "2"), ("noise", "3"),
                                               ("blur", "—")]
    assert [w for w, *_ in rows] == ["", "", "", ' class="worst-row"', ""]
    assert rows[3][3] == "12.0% [9.4–15.1%]"
    assert "<th>flipped / detections</th>" in reg and "<td>0 / 500</td>" in reg
    assert "matched IoU" in reg and "0.8123" in reg and "497 → 495" in reg
    assert "mask IoU mean" in secs["mask"] and "0.6100" in secs["mask"] and "99.1%" in secs["mask"]
    ident = secs["Identity"]
    assert "accuracy drop [95%]" in ident and "top-5 agreement" in ident and "99.5%" in ident
    assert "−0.50% [−2.5–2.5%]" in ident and "mean KL" in ident
    assert "not judged" in secs["aux"] and "[95%]" not in secs["aux"] and "<td>—</td>" in secs["aux"]


def test_low_n_marker_on_cells_and_bars():
    secs = sections_of(render_html(new_report()))
    blur = re.search(r"<tr><td>blur</td>.*?</tr>", secs["regressors"]).group(0)
    assert '<span class="lown" title="fewer than 30 trials">low n</span>' in blur
    clean = re.search(r"<tr><td>clean</td>.*?</tr>", secs["regressors"]).group(0)
    assert "lown" not in clean
    assert re.search(r'fill-opacity="0.45"[^>]*><title>blur: [^<]*\(low n\)</title>', secs["regressors"])


def test_cell_chart_bars_whiskers_thresholds_and_worst():
    secs = sections_of(render_html(new_report(thresholds={"degraded": 0.05, "catastrophic": 0.2})))
    svg = svg_block(secs["regressors"], "cells")
    assert len(re.findall(r'<rect class="cell ', svg)) == 5 == len(output_cells(new_report()["outputs"]["regressors"]))
    assert len(re.findall(r'class="whisker"', svg)) == 5 and len(re.findall(r'class="threshold"', svg)) == 2
    assert "degraded 5.0%" in svg and "catastrophic 20.0%" in svg
    assert len(re.findall(r'class="cell band-\w+ worst"', svg)) == 1
    assert "<title>noise, severity 3: 12.0% [9.4–15.1%]</title>" in svg
    assert svg_block(secs["aux"], "cells") is None  # nothing judged: no chart


def test_hostile_strings_are_escaped_everywhere():
    report = new_report(warnings=[EVIL], deciding_output=EVIL, worst_category=EVIL, worst_severity=EVIL,
                        verdict_confidence={"level": EVIL, "note": EVIL})
    outs = report["outputs"]
    outs[EVIL] = dict(outs.pop("regressors"), reason=EVIL, source=EVIL, kind=EVIL, metric=EVIL,
                      options={EVIL: EVIL, "n": 3}, members={EVIL: EVIL}, worst_category=EVIL, worst_severity=EVIL)
    outs[EVIL]["categories"] = {EVIL: dict(det(0.2), severities={EVIL: det(0.3), "2": det(0.1)})}
    page = render_html(report)
    assert EVIL not in page and "<script" not in page
    assert page.count(html_escape(EVIL)) >= 15
    assert f"<h2>output {html_escape(EVIL)} — {html_escape(EVIL)}" in page
    p = parse(page)
    assert p.errors == [] and p.stack == []


def test_many_outputs_and_cells_render():
    cats = {f"corruption_{i:02d}_with_a_long_name": dict(det(0.01 * i), severities={str(s): det(0.01 * i * s)
                                                                                   for s in (1, 2, 3)})
            for i in range(15)}
    outs = {f"out{k}": section("detection", copy.deepcopy(cats), "catastrophic", ("corruption_14_with_a_long_name", "3"),
                               "detection_flip_rate", index=k) for k in range(6)}
    report = new_report(outputs=outs, categories=cats, deciding_output="out5",
                        worst_category="corruption_14_with_a_long_name")
    json.dumps(report, allow_nan=False)
    page = render_html(report)
    p = parse(page)
    assert p.errors == [] and p.stack == [] and p.counts["svg"] == 7
    assert len(sections_of(page)) == 6
    for svg in re.findall(r'<svg class="cells".*?</svg>', page, re.S):
        assert len(re.findall(r'<rect class="cell ', svg)) == 45 and "rotate(-35" in svg
        assert "nan" not in svg.lower()


def test_null_values_and_missing_keys_render_as_dash():
    report = new_report()
    sec = report["outputs"]["mask"]
    sec.update(worst_value=None, worst_ci95=None, worst_n=None, confidence=None, options=None, members=None)
    sec["categories"]["noise"].update(value=None, ci95=None, sqnr_db=None, mask_iou_min=None)
    report["overall"]["sqnr_db"] = None
    report["categories"]["clean"]["severities"] = {"1": None}
    page = render_html(report)
    assert re.search(r"<td>SQNR</td><td>—</td>", page)
    mask = sections_of(page)["mask"]
    assert re.search(r'<tr class="worst-row"><td>noise</td><td>—</td><td>—<span class="lown"', mask) and "SQNR" in mask
    assert parse(page).errors == []
    for garbage in ({"outputs": "x"}, {"outputs": {"a": None, "b": {"categories": {"c": "x"}}}},
                    {"outputs": {"a": {"categories": {"c": {"severities": {"1": {"value": "x", "ci95": [1]}}}}}},
                     "warnings": "one sentence", "deciding_output": "zz", "worst_severity": 3}):
        page = render_html(garbage)
        assert parse(page).errors == [] and "<script" not in page


def test_deciding_cell_read_from_top_level_without_output_section():
    report = new_report()
    del report["outputs"]
    header = render_html(report).split("</header>")[0]
    assert "deciding output <b>regressors</b>" in header and "<b>12.0% [9.4–15.1%]</b> over 500 trials" in header


def test_old_reports_have_no_per_output_parts():
    page = render_html(make_report())
    for marker in ('class="output"', "<h2>Outputs</h2>", 'class="warnings"', ".warnings{", "deciding output", "lown"):
        assert marker not in page


# --- the field verdict on the page: stress beside it, cells that do not count, each kind's words -------------

from edgeq.analysis.compare import compare_outputs  # noqa: E402
from edgeq.analysis.plan import OutputInfo, OutputSpec  # noqa: E402
from edgeq.inputs.risky.roles import suite_roles  # noqa: E402

CELL = 200  # samples per cell
CLASSIFICATION_WORDS = ("predicted class", "same class", "top-1 accuracy", "float accuracy", "quant accuracy",
                        "float acc.", "accuracy drop")


def tags_for(cells):
    category = np.concatenate([np.full(CELL, c, dtype="<U16") for c, _ in cells])
    severity = np.concatenate([np.full(CELL, s, dtype=np.int32) for _, s in cells])
    return {"category": category, "severity": severity, "source_index": np.tile(np.arange(CELL), len(cells))}


def moved(classes, share, where, k=4):
    """``classes`` with the first ``share`` of every cell inside ``where`` moved to the next class."""
    out = classes.copy()
    for lo in range(0, len(classes), CELL):
        rows = np.arange(lo, lo + int(share * CELL))
        rows = rows[where[rows]]
        out[rows] = (out[rows] + 1) % k
    return out


def one_hot(classes, k=4):
    out = np.zeros((len(classes), k), np.float32)
    out[np.arange(len(classes)), classes] = 5.0
    return out


def field_report():
    """An image classifier, labelled: brightness+ loses 4 % (field, decides), the pixel outlier and the
    near-boundary points lose 30 % (stress), noise 3 is where float itself falls to 30 % (float fails too)."""
    cells = [("clean", 0), ("brightness+", 1), ("outlier", 1), ("outlier", 3), ("boundary", 3), ("noise", 3)]
    tags = tags_for(cells)
    y = np.tile(np.arange(CELL) % 4, len(cells))
    cat = tags["category"]
    float_pred = moved(y, 0.7, cat == "noise")
    quant = moved(float_pred, 0.3, np.isin(cat, ["outlier", "boundary"]))
    quant = moved(quant, 0.04, cat == "brightness+")
    roles = suite_roles(["clean", "brightness+", "outlier", "boundary", "noise"], ["image"])
    report = compare_outputs(one_hot(float_pred), one_hot(quant), dict(tags, y=y), roles=roles,
                             boundary={"median_margin": 11.0, "margin_levels": {"3": 0.03},
                                       "share_of_data": {"3": 0.004}})
    report["inputs"] = {"n": len(y), "kinds": {"x": "image"}, "cell_roles": roles}
    return json.loads(json.dumps(report))  # as read back from report.json


def regression_report():
    cells = [("clean", 0), ("noise", 1), ("outlier", 3)]
    tags = tags_for(cells)
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(len(tags["category"]), 3)).astype(np.float32)
    cand = ref + rng.normal(0, 0.01, size=ref.shape).astype(np.float32)
    cand[tags["category"] == "outlier"] += 1.0
    return compare_outputs(ref, cand, tags, outputs=[OutputInfo(0, "value", (3,), "FULLY_CONNECTED")],
                           spec=OutputSpec.from_sources(flags=("value=regression",)),
                           roles=suite_roles(["clean", "noise", "outlier"], ["image"]))


def landmark_report():
    cells = [("clean", 0), ("noise", 1)]
    tags = tags_for(cells)
    n = len(tags["category"])
    rng = np.random.default_rng(0)
    presence = (rng.uniform(size=(n, 1)) < 0.5).astype(np.float32) * 0.9 + 0.05
    points = rng.uniform(0, 32, size=(n, 42)).astype(np.float32)
    hand = rng.uniform(size=(n, 1)).astype(np.float32)
    outputs = [OutputInfo(0, "presence", (1,), "LOGISTIC"), OutputInfo(1, "landmarks", (42,), "FULLY_CONNECTED"),
               OutputInfo(2, "handedness", (1,), "LOGISTIC")]
    broken = points + (presence < 0.5) * 50.0  # garbage only where there is no hand
    return compare_outputs([presence, points, hand], [presence, broken, hand], tags, outputs=outputs)


def section_of(page, heading):
    start = page.index(f"<h2>{heading}")
    return page[page.rindex("<section", 0, start):page.index("</section>", start)]


def visible_text(fragment):
    p = parse(fragment)
    return " ".join("".join(p.text).split())


def test_stress_section_shows_the_worst_stress_cell_its_table_and_the_boundary_finding():
    report = field_report()
    assert report["verdict"] == "degraded" and report["stress"]["worst"]["band"] == "catastrophic"
    page = render_html(report)
    assert parse(page).errors == []
    stress = section_of(page, "Stress findings (beside the verdict, never deciding it)")
    assert ("worst stress cell <b>outlier, severity 1</b>: accuracy drop <b>30.0% [23.8–36.7%]</b> over 200 trials"
            in stress)
    assert '<span class="pill verdict-catastrophic">catastrophic level</span>' in stress
    rows = re.findall(r"<tr><td>output_0</td><td>([^<]*)</td><td>([^<]*)</td><td[^>]*>([^<]*)</td><td>([^<]*)</td>",
                      stress)
    assert rows == [("outlier, severity 1", "accuracy drop", "30.0% [23.8–36.7%]", "200"),
                    ("outlier, severity 3", "accuracy drop", "30.0% [23.8–36.7%]", "200"),
                    ("boundary, severity 3", "accuracy drop", "30.0% [23.8–36.7%]", "200")]
    text = visible_text(stress)
    assert "a pixel cannot leave the range" in text  # why each cell is stress
    assert "points at 3.0% of the median float margin; 0.40% of the real samples lie that close" in text
    finding = next(f for f in report["stress"]["findings"] if f.startswith("boundary/3"))
    assert "0.4% of the real samples lie that close" in finding and html_escape(finding) in stress
    assert "--fail-on stress=degraded" in text and "float fails too" in text and "Only field cells decide" in text
    assert page.index("<h2>Categories</h2>") < page.index("<h2>Stress findings") < page.index('class="output"')
    header = page[page.index("<header>"):page.index("</header>")]
    assert "Stress findings" not in header and "outlier" not in header  # beside the verdict, not in it
    # no stress cells: no section
    for quiet in (make_report(), new_report(), dict(report, stress={"worst": None, "cells": [], "findings": [],
                                                                    "boundary": None})):
        assert "Stress findings" not in render_html(quiet)


def test_cells_that_do_not_count_are_marked_with_their_reason_as_text():
    report = field_report()
    page = render_html(report)
    header = visible_text(page[page.index("<header>"):page.index("</header>")])
    assert "decided by field cells only" in header and "3 stress cell(s) and 1 cell(s) where float fails too" in header
    cats = section_of(page, "Categories")
    outlier = re.search(r'<tr class="nc"><td><b>outlier</b>.*?</tr>', cats).group(0)
    assert '<span class="ncm">stress</span>' in outlier
    assert "not counted: stress: a pixel cannot leave the range" in visible_text(outlier)  # text, not a tooltip
    noise = re.search(r'<tr class="nc"><td><b>noise</b>.*?</tr>', cats).group(0)
    assert '<span class="ncm">float fails too</span>' in noise
    both = "float fails here too: float accuracy 30.0% vs its floor 62.5% (chance 25.0%)"  # float's figure and floor
    assert both in visible_text(noise)
    assert "keep 50% of its clean accuracy above chance" in cats  # the rule behind the floor
    bright = re.search(r'<tr class="worst-row"><td><b>brightness\+</b>.*?</tr>', cats).group(0)
    assert "ncm" not in bright and "not counted" not in bright
    assert cats.index("<b>brightness+</b>") < cats.index("<b>outlier</b>")  # counted categories first
    # the output's own cell table
    out = sections_of(page)["output_0"]
    marked = re.findall(r'<tr class="nc"><td>([^<]*)<span class="ncm">([^<]*)</span><div class="why">([^<]*)</div>',
                        out)
    assert [(c, m) for c, m, _ in marked] == [("outlier", "stress"), ("outlier", "stress"), ("boundary", "stress"),
                                               ("noise", "float fails too")]
    assert marked[-1][2] == "not counted: float fails here too: float accuracy 30.0% vs its floor 62.5% (chance 25.0%)"
    assert re.search(r'<tr class="worst-row"><td>brightness\+</td><td>1</td>', out)  # the one-level category's severity
    assert re.search(r'fill-opacity="0.25" stroke="[^"]+" stroke-dasharray="3,2"><title>noise, severity 3: [^<]*'
                     r'\(not counted: float fails too\)</title>', out)
    # worst conditions: the counted cells only, the verdict's cell first
    worst = section_of(page, "Worst conditions")
    assert re.findall(r"<tr><td><b>([^<]*)</b>", worst) == ["brightness+/1", "clean"]


def test_gated_outputs_say_where_they_are_judged():
    report = landmark_report()
    gate = report["outputs"]["landmarks"]["when"]
    said = f"judged only where presence&gt;0.5 (open on {gate['open']} of {gate['of']} samples)"
    page = render_html(report)
    secs = sections_of(page)
    assert said in secs["landmarks"] and said in secs["handedness"] and said not in secs["presence"]
    assert said in section_of(page, "Outputs")
    assert (said in page[:page.index("</header>")]) == (report["deciding_output"] in ("landmarks", "handedness"))
    assert parse(page).errors == []


def test_detector_and_regression_reports_do_not_speak_classification():
    page = render_html(new_report())  # decided by a detector; one of its outputs is a labelled classifier
    overview = page[page.index("<h2>Overall</h2>"):page.index('<section class="output">')]  # the Outputs table
    for words in CLASSIFICATION_WORDS + ("pick the same", "mean KL"):
        assert words not in overview, words
    overall = section_of(page, "Overall")
    assert "<td>detection flip rate</td>" in overall and "share of detections (float ∪ quantized)" in overall
    assert "<td>detections kept</td>" in overall
    assert "accuracy drop [95%]" in sections_of(page)["Identity"]  # the classifier keeps its own words

    report = regression_report()
    assert report["outputs"]["value"]["kind"] == "regression"
    page = render_html(report)
    for words in CLASSIFICATION_WORDS + ("class", "flip", "mean KL"):
        assert words not in visible_text(page), words
    overall = section_of(page, "Overall")
    assert "<td>fail rate</td>" in overall and "outside the tolerance" in overall
    assert "<td>within tolerance</td>" in overall
    assert "<th>outside tolerance / samples</th>" in sections_of(page)["value"]
    cats = section_of(page, "Categories")
    assert "<th>fail rate</th>" in cats and "<th>float accuracy</th>" not in cats


@pytest.mark.parametrize("kind,metric,rate,meaning", [
    ("segmentation", "fail_rate", "fail rate", "share of masks (one per sample) whose IoU"),
    ("multilabel", "label_flip_rate", "label flip rate", "share of the labels either model found"),
    ("embedding", "fail_rate", "fail rate", "cosine similarity to the float vector"),
    ("plugin-kind", "fail_rate", "rate", "the output's verdict rate"),
])
def test_each_kind_has_its_own_words(kind, metric, rate, meaning):
    cells = {"clean": group(0.01, 2, 200, [0.0, 0.03]), "noise": group(0.05, 10, 200, [0.03, 0.08])}
    report = new_report(outputs={"out": section(kind, cells, "degraded", ("noise", None), metric)},
                        deciding_output="out", metric_basis=metric, categories=cells, overall=cells["clean"])
    overall = section_of(render_html(report), "Overall")
    assert f"<td>{rate}</td>" in overall and html_escape(meaning) in overall
    for words in CLASSIFICATION_WORDS:
        assert words not in overall


def test_old_reports_without_the_new_keys_render_unmarked():
    for old in (make_report(), new_report()):
        page = render_html(old)
        p = parse(page)
        assert p.errors == [] and p.stack == []
        for marker in ('class="ncm"', 'class="nc"', "not counted", "Stress findings", "field cells only",
                       "judged only where", ".ncm{"):
            assert marker not in page, marker
    page = render_html(make_report())  # a classification with labels keeps its words and accuracy columns
    overall = section_of(page, "Overall")
    assert "<td>float accuracy</td>" in overall and "share of inputs whose predicted class changes" in overall
    assert "<th>float accuracy</th>" in section_of(page, "Categories")
    worst = section_of(page, "Worst conditions")
    assert re.findall(r"<tr><td><b>([^<]*)</b>", worst)[0] == "brightness+"


def test_hostile_strings_in_the_new_keys_are_escaped():
    report = field_report()
    report["stress"]["findings"].append(EVIL)
    report["stress"]["cells"][0].update(reason=EVIL, output=EVIL, category=EVIL)
    report["categories"]["outlier"]["severities"]["1"]["not_counted"] = "stress: " + EVIL
    report["categories"]["noise"]["float_competence"]["rule"] = EVIL
    report["outputs"]["output_0"]["when"] = {"output": EVIL, "op": ">", "threshold": 0.5, "rule": EVIL,
                                             "open": 3, "of": 9, "reason": EVIL, "source": EVIL}
    report["inputs"]["kinds"] = {EVIL: EVIL}
    page = render_html(report)
    assert EVIL not in page and "<script" not in page
    assert page.count(html_escape(EVIL)) >= 8
    p = parse(page)
    assert p.errors == [] and p.stack == []


def test_malformed_new_keys_do_not_crash():
    base = field_report()
    for bad in ({"stress": "x"}, {"stress": {"cells": "x", "worst": 3}}, {"stress": {"cells": [None, {"value": "x"}],
                                                                                    "findings": [None, 3]}},
                {"stress": {"cells": [{"category": "boundary", "severity": 2}], "boundary": {"share_of_data": "x"}}}):
        page = render_html(dict(base, **bad))
        assert parse(page).errors == [] and "nan" not in page.lower()
    report = copy.deepcopy(base)
    cell = report["categories"]["noise"]
    cell.update(float_competence={"fails": True, "float": None}, not_counted=None, chance="x")
    report["outputs"]["output_0"]["when"] = "presence>0.5"
    report["outputs"]["output_0"]["categories"]["outlier"]["severities"] = {"1": None, "3": {"role": "stress"}}
    page = render_html(report)
    assert parse(page).errors == []
    noise = re.search(r'<tr class="nc"><td><b>noise</b>.*?</tr>', section_of(page, "Categories")).group(0)
    assert '<div class="why">not counted: float fails here too</div>' in noise  # no figures: no numbers made up
