"""A quantized model that outputs NaN or Inf on a device has failed on those samples, whatever
the output kind: a NaN must never compare as "within tolerance" or as "the same class"."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from edgeq.analysis.compare import compare_outputs
from edgeq.analysis.plan import OutputSpec


@pytest.mark.parametrize("kind", ["regression", "embedding", "classification", "multilabel", "segmentation"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_quantized_outputs_are_failures(kind, bad):
    rng = np.random.default_rng(0)
    shape = (100, 8, 8, 3) if kind == "segmentation" else (100, 6)
    ref = rng.random(shape).astype(np.float32)
    cand = ref.copy()
    cand[:50] = bad
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = compare_outputs([ref], [cand], {}, spec=OutputSpec.from_sources(flags=(f"output_0={kind}",)))
    overall = result["overall"]
    assert result["verdict"] == "catastrophic"
    assert overall["value"] >= 0.5 and overall["ci95"][0] <= overall["value"] <= overall["ci95"][1]
