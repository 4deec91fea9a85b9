"""Comparison metrics, the verdict rule and the CI gates, on hand-made outputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeq.compare import compare_outputs, group_metrics, kl_mean, sqnr_db, verdict
from edgeq.errors import ConfigError
from edgeq.gates import evaluate_gates, parse_gates


def one_hot_logits(classes, n_classes=3, scale=5.0):
    logits = np.zeros((len(classes), n_classes), dtype=np.float32)
    logits[np.arange(len(classes)), classes] = scale
    return logits


def test_identical_outputs_are_perfect():
    ref = one_hot_logits([0, 1, 2, 1])
    m = group_metrics(ref, ref.copy(), np.array([0, 1, 2, 0]))
    assert m["agreement"] == 1.0 and m["flip_rate"] == 0.0
    assert m["float_accuracy"] == m["quant_accuracy"] == 0.75
    assert m["accuracy_drop"] == 0.0
    assert math.isinf(m["sqnr_db"]) and m["kl_mean"] == pytest.approx(0.0, abs=1e-12)
    assert m["max_abs_error"] == 0.0


def test_flips_drop_and_errors_are_counted():
    labels = np.array([0, 1, 2, 1])
    ref = one_hot_logits([0, 1, 2, 1])
    cand = one_hot_logits([0, 1, 0, 0])
    m = group_metrics(ref, cand, labels)
    assert m["quant_accuracy"] == 0.5 and m["accuracy_drop"] == 0.5
    assert m["agreement"] == 0.5 and m["flip_rate"] == 0.5
    assert m["max_abs_error"] == pytest.approx(5.0)
    assert m["kl_mean"] > 0.5


def test_sqnr_in_decibels():
    ref = np.ones((10, 4))
    cand = ref + 0.1
    assert sqnr_db(ref, cand) == pytest.approx(20.0)  # signal 1, noise 0.01 -> 100x


def test_kl_uses_probabilities_as_given():
    p = np.array([[0.5, 0.5]])
    q = np.array([[0.9, 0.1]])
    expected = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert kl_mean(p, q) == pytest.approx(expected)


def test_single_unit_outputs_are_binary_classifiers():
    ref = np.array([[0.9], [0.2], [0.7]])
    cand = np.array([[0.6], [0.6], [0.1]])
    m = group_metrics(ref, cand, np.array([1, 0, 1]))
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


def test_verdict_uses_flip_rate_without_labels():
    categories = {"a": {"accuracy_drop": None, "flip_rate": 0.15}}
    assert verdict(categories) == ("catastrophic", "a")


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
    assert report["metric_basis"] == "accuracy_drop"
    assert report["overall"]["n"] == 8


def test_compare_without_labels_reports_flip_rate_basis():
    ref = one_hot_logits([0, 1, 2, 0])
    report = compare_outputs(ref, ref.copy(), {"category": np.array(["clean"] * 4)})
    assert report["metric_basis"] == "flip_rate"
    assert report["overall"]["float_accuracy"] is None
    assert report["verdict"] == "robust"


def test_shape_mismatch_is_an_error():
    with pytest.raises(ConfigError, match="differ in shape"):
        compare_outputs(np.zeros((3, 2)), np.zeros((3, 3)), {})


def report_with(drop, flip, sqnr, verdict_name="degraded", p99=2.0):
    return {"verdict": verdict_name,
            "categories": {"clean": {"accuracy_drop": 0.0, "flip_rate": 0.0, "sqnr_db": 40.0, "kl_mean": 0.0},
                           "noise": {"accuracy_drop": drop, "flip_rate": flip, "sqnr_db": sqnr, "kl_mean": 0.1}},
            "latency_ms": {"quant": {"p99": p99}}}


def test_gates_fail_only_when_crossed():
    gates = parse_gates("drop=0.05,flip=0.1,sqnr=20,verdict=catastrophic,p99-ms=5")
    passed = evaluate_gates(report_with(0.05, 0.1, 20.0), gates)
    assert not any(g["failed"] for g in passed)
    failed = evaluate_gates(report_with(0.06, 0.2, 19.0, "catastrophic", 6.0), gates)
    assert [g["failed"] for g in failed] == [True, True, True, True, True]
    assert failed[0]["where"] == "noise" and failed[0]["observed"] == 0.06


def test_verdict_gate_orders_verdicts():
    (gate,) = evaluate_gates(report_with(0, 0, 40, "degraded"), parse_gates("verdict=degraded"))
    assert gate["failed"]
    (gate,) = evaluate_gates(report_with(0, 0, 40, "robust"), parse_gates("verdict=degraded"))
    assert not gate["failed"]


@pytest.mark.parametrize("text, needle", [
    ("drop", "not NAME=VALUE"), ("speed=3", "unknown gate"), ("drop=lots", "needs a number"),
    ("verdict=robust", "degraded or catastrophic"),
])
def test_bad_gates_are_config_errors(text, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_gates(text)
