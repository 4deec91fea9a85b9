"""Comparison metrics, the worst-cell verdict, intervals and the CI gates, on hand-made outputs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from edgeq.analysis.compare import compare_outputs, verdict
from edgeq.analysis.gates import evaluate_gates, parse_gates
from edgeq.analysis.intervals import paired_difference, wilson
from edgeq.errors import ConfigError
from edgeq.results import strict_json


def one_hot_logits(classes, n_classes=3, scale=5.0):
    logits = np.zeros((len(classes), n_classes), dtype=np.float32)
    logits[np.arange(len(classes)), classes] = scale
    return logits


def overall(ref, cand, labels=None):
    samples = {} if labels is None else {"y": np.asarray(labels)}
    return compare_outputs(ref, cand, samples, min_n=1)["overall"]


def test_identical_outputs_are_perfect():
    ref = one_hot_logits([0, 1, 2, 1])
    m = overall(ref, ref.copy(), [0, 1, 2, 0])
    assert m["agreement"] == 1.0 and m["flip_rate"] == 0.0
    assert m["float_accuracy"] == m["quant_accuracy"] == 0.75
    assert m["accuracy_drop"] == 0.0
    assert math.isinf(m["sqnr_db"]) and m["kl_mean"] == pytest.approx(0.0, abs=1e-12)
    assert m["max_abs_error"] == 0.0


def test_flips_drop_and_errors_are_counted():
    ref = one_hot_logits([0, 1, 2, 1])
    cand = one_hot_logits([0, 1, 0, 0])
    m = overall(ref, cand, [0, 1, 2, 1])
    assert m["quant_accuracy"] == 0.5 and m["accuracy_drop"] == 0.5
    assert m["agreement"] == 0.5 and m["flip_rate"] == 0.5
    assert m["max_abs_error"] == pytest.approx(5.0)
    assert m["kl_mean"] > 0.5
    assert m["value"] == 0.5 and m["ci95"][0] < 0.5 < m["ci95"][1]


def test_sqnr_in_decibels():
    ref = np.ones((10, 4))
    assert overall(ref, ref + 0.1)["sqnr_db"] == pytest.approx(20.0)  # signal 1, noise 0.01 -> 100x


def test_kl_uses_probabilities_as_given():
    p = np.array([[0.5, 0.5]])
    q = np.array([[0.9, 0.1]])
    expected = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert overall(p, q)["kl_mean"] == pytest.approx(expected)


def test_top_k_agreement_counts_near_misses():
    ref = np.array([[5.0, 4.0, 0.0, -1.0, -2.0, -3.0, -4.0]] * 4)
    cand = ref.copy()
    cand[0] = [4.0, 5.0, 0.0, -1.0, -2.0, -3.0, -4.0]     # flip, float's class 2nd: inside top-5
    cand[1] = [-9.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0]        # flip, float's class last: outside top-5
    m = overall(ref, cand)
    assert m["flip_rate"] == 0.5 and m["top_k"] == 5 and m["topk_agreement"] == 0.75


def test_single_unit_outputs_are_binary_classifiers():
    ref = np.array([[0.9], [0.2], [0.7]])
    cand = np.array([[0.6], [0.6], [0.1]])
    m = overall(ref, cand, [1, 0, 1])
    assert m["float_accuracy"] == 1.0
    assert m["quant_accuracy"] == pytest.approx(1 / 3)


@pytest.mark.parametrize("drops, expected", [
    ({"a": 0.0, "b": 0.019}, "robust"),
    ({"a": 0.0, "b": 0.02}, "degraded"),
    ({"a": 0.099, "b": 0.05}, "degraded"),
    ({"a": 0.10, "b": -0.3}, "catastrophic"),
])
def test_verdict_thresholds(drops, expected):
    categories = {k: {"accuracy_drop": v, "flip_rate": 0.0} for k, v in drops.items()}
    result, worst = verdict(categories)
    assert result == expected
    assert worst == max(drops, key=drops.get)


def flipped_cells(rates: dict[tuple[str, int], float], n: int = 100):
    """Outputs where each (category, severity) cell flips the given share of its n samples."""
    refs, cands, cats, sevs = [], [], [], []
    for (category, severity), share in rates.items():
        classes = np.arange(n) % 3
        ref = one_hot_logits(classes)
        cand = ref.copy()
        flips = int(round(share * n))
        cand[:flips] = one_hot_logits((classes[:flips] + 1) % 3)
        refs.append(ref), cands.append(cand)
        cats += [category] * n
        sevs += [severity] * n
    return np.concatenate(refs), np.concatenate(cands), {"category": np.array(cats), "severity": np.array(sevs)}


def test_the_worst_severity_decides_not_the_category_mean():
    """13 % at severity 3 and 11 % at 2 average to 9 % with severity 1: still catastrophic."""
    ref, cand, samples = flipped_cells({("clean", 0): 0.0, ("outlier", 1): 0.03, ("outlier", 2): 0.11,
                                        ("outlier", 3): 0.13})
    report = compare_outputs(ref, cand, samples)
    assert report["categories"]["outlier"]["flip_rate"] == pytest.approx(0.09)
    assert report["verdict"] == "catastrophic"
    assert (report["worst_category"], report["worst_severity"]) == ("outlier", "3")
    section = report["outputs"][report["deciding_output"]]
    assert section["worst_value"] == pytest.approx(0.13) and section["worst_n"] == 100
    assert section["worst_ci95"] == pytest.approx(list(wilson(13, 100)))


def test_compare_outputs_groups_by_category_and_severity():
    classes = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    ref = one_hot_logits(classes)
    cand = ref.copy()
    cand[6] = one_hot_logits([2])[0]  # one flip in "noise" severity 2
    samples = {"y": classes, "category": np.array(["clean"] * 4 + ["noise"] * 4),
               "severity": np.array([0, 0, 0, 0, 1, 1, 2, 2])}
    report = compare_outputs(ref, cand, samples)
    assert list(report["categories"]) == ["clean", "noise"]
    noise = report["categories"]["noise"]
    assert noise["accuracy_drop"] == 0.25
    assert noise["severities"]["2"]["flip_rate"] == 0.5
    assert noise["severities"]["1"]["flip_rate"] == 0.0
    assert "severities" not in report["categories"]["clean"]
    assert report["verdict"] == "catastrophic" and report["worst_category"] == "noise"
    assert report["worst_severity"] == "2"
    assert report["metric_basis"] == "accuracy_drop"
    assert report["overall"]["n"] == 8


def test_tiny_cells_are_flagged_and_the_verdict_says_so():
    """Five samples per cell and one flip: catastrophic, but the report says it rests on too few."""
    ref, cand, samples = flipped_cells({("clean", 0): 0.0, ("noise", 1): 0.2}, n=5)
    report = compare_outputs(ref, cand, samples, min_n=30)
    assert report["verdict"] == "catastrophic"
    assert report["verdict_confidence"]["level"] == "low-n"
    assert report["categories"]["noise"]["low_n"] is True
    assert any("too few samples" in w for w in report["warnings"])
    (gate,) = evaluate_gates(report, parse_gates("min-n=30"))
    assert gate["failed"] and gate["observed"] == 5


def test_confidence_is_firm_only_when_the_interval_stays_in_the_band():
    ref, cand, samples = flipped_cells({("clean", 0): 0.0, ("noise", 1): 0.3}, n=500)
    report = compare_outputs(ref, cand, samples)
    assert report["verdict"] == "catastrophic" and report["verdict_confidence"]["level"] == "firm"
    ref, cand, samples = flipped_cells({("clean", 0): 0.0, ("noise", 1): 0.11}, n=100)
    assert compare_outputs(ref, cand, samples)["verdict_confidence"]["level"] == "tentative"
    ref, cand, samples = flipped_cells({("clean", 0): 0.0, ("noise", 1): 0.0}, n=500)
    robust = compare_outputs(ref, cand, samples)
    assert robust["verdict"] == "robust" and robust["verdict_confidence"]["level"] == "firm"
    ref, cand, samples = flipped_cells({("clean", 0): 0.0, ("noise", 1): 0.0}, n=50)
    assert compare_outputs(ref, cand, samples)["verdict_confidence"]["level"] == "tentative"


def test_compare_without_labels_reports_flip_rate_basis():
    ref = one_hot_logits([0, 1, 2, 0])
    report = compare_outputs(ref, ref.copy(), {"category": np.array(["clean"] * 4)})
    assert report["metric_basis"] == "flip_rate"
    assert report["overall"]["float_accuracy"] is None
    assert report["verdict"] == "robust"


def test_reports_are_strict_json():
    ref = one_hot_logits([0, 1, 2, 0])
    report = strict_json(compare_outputs(ref, ref.copy(), {"category": np.array(["clean"] * 4)}))
    text = json.dumps(report, allow_nan=False)
    assert report["overall"]["sqnr_db"] is None  # identical outputs: infinite SQNR is written as null
    assert "Infinity" not in text and "NaN" not in text


def test_shape_mismatch_is_an_error():
    with pytest.raises(ConfigError, match="differ in shape"):
        compare_outputs(np.zeros((3, 2)), np.zeros((3, 3)), {})


# --- intervals, against independent calculations ------------------------------------------------

@pytest.mark.parametrize("k, n, lo, hi", [(0, 10, 0.0, 0.2775), (5, 10, 0.2366, 0.7634), (1, 5, 0.0362, 0.6245),
                                          (13, 100, 0.0776, 0.2098)])
def test_wilson_matches_published_values(k, n, lo, hi):
    assert wilson(k, n) == pytest.approx((lo, hi), abs=5e-4)


def test_paired_interval_approaches_the_normal_one_for_large_n():
    """Newcombe's interval ≈ Wald's for a paired difference when n is large."""
    both, only_f, only_q, neither = 8000, 600, 200, 1200
    n = both + only_f + only_q + neither
    delta = (only_f - only_q) / n
    half = 1.959964 * math.sqrt((only_f + only_q) - (only_f - only_q) ** 2 / n) / n
    lo, hi = paired_difference(both, only_f, only_q, neither)
    assert lo == pytest.approx(delta - half, abs=1.5e-3) and hi == pytest.approx(delta + half, abs=1.5e-3)
    assert lo < delta < hi


def test_paired_interval_of_no_change_contains_zero():
    lo, hi = paired_difference(40, 0, 0, 10)
    assert lo < 0 < hi or (lo <= 0 <= hi)


# --- gates ---------------------------------------------------------------------------------------

def report_with(drop, flip, sqnr, verdict_="robust", p99=1.0):
    return {"verdict": verdict_, "categories": {"noise": {"accuracy_drop": drop, "flip_rate": flip,
                                                          "sqnr_db": sqnr, "kl_mean": 0.1}},
            "latency_ms": {"quant": {"p99": p99}}}


def test_gates_fail_only_when_crossed():
    gates = parse_gates("drop=0.05,flip=0.1,sqnr=20,verdict=catastrophic,p99-ms=5")
    passed = evaluate_gates(report_with(0.05, 0.1, 20.0), gates)
    assert not any(g["failed"] for g in passed)
    failed = evaluate_gates(report_with(0.06, 0.2, 19.0, "catastrophic", 6.0), gates)
    assert [g["failed"] for g in failed] == [True, True, True, True, True]
    assert failed[0]["where"] == "noise" and failed[0]["observed"] == 0.06


def test_gates_look_at_every_cell_of_every_verdict_output():
    ref, cand, samples = flipped_cells({("clean", 0): 0.0, ("noise", 1): 0.0, ("noise", 2): 0.07})
    report = compare_outputs(ref, cand, samples)
    (gate,) = evaluate_gates(report, parse_gates("flip=0.05"))
    assert gate["failed"] and gate["observed"] == pytest.approx(0.07) and "severity 2" in gate["where"]


def test_verdict_gate_orders_verdicts():
    (gate,) = evaluate_gates(report_with(0, 0, 40, "degraded"), parse_gates("verdict=degraded"))
    assert gate["failed"]
    (gate,) = evaluate_gates(report_with(0, 0, 40, "robust"), parse_gates("verdict=degraded"))
    assert not gate["failed"]


@pytest.mark.parametrize("text, needle", [
    ("drop", "not NAME=VALUE"), ("speed=3", "unknown gate"), ("drop=lots", "needs a number"),
    ("verdict=robust", "degraded or catastrophic"), ("drop=nan", "finite"), ("sqnr=inf", "finite"),
])
def test_bad_gates_are_config_errors(text, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_gates(text)


def test_a_robust_verdict_from_tiny_cells_rests_on_too_few_samples():
    ref, cand, samples = flipped_cells({("clean", 0): 0.0, ("noise", 1): 0.0}, n=5)
    report = compare_outputs(ref, cand, samples, min_n=30)
    assert report["verdict"] == "robust" and report["verdict_confidence"]["level"] == "low-n"
    assert any("too few samples" in w for w in report["warnings"])


def test_analysis_imports_no_transport_runtime_or_tensorflow():
    """DESIGN rule: a comparison reruns offline anywhere, so analysis needs none of them."""
    import subprocess
    import sys

    code = ("import sys, edgeq.analysis.compare, edgeq.analysis.gates; from edgeq.analysis.kinds import _load_all; "
            "_load_all(); print(sorted({m.split('.')[0] if not m.startswith('edgeq') else '.'.join(m.split('.')[:2]) "
            "for m in sys.modules if m.startswith(('paramiko', 'ai_edge_litert', 'tflite_runtime', 'tensorflow', "
            "'edgeq.devices', 'edgeq.cli'))}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
