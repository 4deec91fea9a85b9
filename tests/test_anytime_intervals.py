"""Cells judged from rounds that stopped on what they saw carry the anytime-valid interval
(``interval="anytime"``); fixed-n cells keep Wilson / Newcombe. The report names the method."""

from __future__ import annotations

import numpy as np
import pytest

from edgeq.analysis.compare import compare_outputs
from edgeq.analysis.sequential import INTERVAL_METHOD, confidence_sequence, paired_drop


def logits(classes: np.ndarray, k: int = 4) -> np.ndarray:
    out = np.zeros((len(classes), k), np.float32)
    out[np.arange(len(classes)), classes] = 5.0
    return out


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    n = 200
    truth = rng.integers(0, 4, n)
    quant = truth.copy()
    quant[:12] = (truth[:12] + 1) % 4  # 12 flips, all float-right → quant-wrong
    samples = {"category": np.array(["clean"] * 100 + ["noise"] * 100), "severity": np.array([0] * 100 + [2] * 100)}
    return logits(truth), logits(quant), samples, truth


def cell(result, category, level=None):
    entry = result["outputs"]["output_0"]["categories"][category]
    return entry if level is None else entry["severities"][str(level)]


def test_anytime_cells_carry_the_confidence_sequence_and_the_method(pair):
    ref, cand, samples, _ = pair
    fixed = compare_outputs(ref, cand, samples)
    anytime = compare_outputs(ref, cand, samples, interval="anytime")
    assert fixed["interval_method"] == "wilson" and anytime["interval_method"] == INTERVAL_METHOD
    c = cell(anytime, "clean")
    assert c["events"] == 12 and c["trials"] == 100
    assert c["ci95"] == pytest.approx(list(confidence_sequence(12, 100)))
    lo_w, hi_w = cell(fixed, "clean")["ci95"]
    assert c["ci95"][0] < lo_w and c["ci95"][1] > hi_w  # the price of stopping on what was seen


def test_an_accuracy_drop_uses_its_discordant_pairs(pair):
    ref, cand, samples, truth = pair
    anytime = compare_outputs(ref, cand, dict(samples, y=truth), interval="anytime")
    c = cell(anytime, "clean")
    assert c["discordant"] == [12, 0] and c["accuracy_drop"] == pytest.approx(0.12)
    assert c["ci95"] == pytest.approx(list(paired_drop(12, 0, 100)))


def test_an_unknown_interval_is_refused(pair):
    ref, cand, samples, _ = pair
    with pytest.raises(ValueError, match="interval must be one of"):
        compare_outputs(ref, cand, samples, interval="bayes")
