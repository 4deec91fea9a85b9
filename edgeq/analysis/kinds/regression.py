"""Regression, landmarks and embeddings: numbers judged in their own units.

There is no class to flip, so an error only means something against a tolerance.
Like Polygraphy's atol/rtol, an element passes when |q − f| ≤ atol + rtol·|f| and a
sample passes when all its elements do; the verdict rate is the share of samples that
fail. The default atol is a fraction of the float output's own spread (its standard
deviation over the reference samples), so "10 % of the spread" means the same for
pixel landmarks and for normalised coordinates; the chosen atol is reported. Mean
and p99 absolute errors are shown in the output's units and relative to the spread;
cosine similarity says whether an embedding still points the same way.
"""

from __future__ import annotations

import numpy as np

from edgeq.analysis.kinds import (Limits, Option, OutputKind, contract_keys, error_evidence, error_summary, flat,
                                  rate, reference_rows, register)

DEFAULT_ATOL_SPREAD = 0.1  # atol = this × the float output's spread, unless given
EXACT_P99_ELEMENTS = 4096


def spread_of(ref, reference_mask: np.ndarray) -> float:
    rows = flat(reference_rows(ref, reference_mask))
    spread = float(np.std(rows.astype(np.float64)))
    return spread if spread > 0 else float(np.max(np.abs(rows))) or 1.0


def _cosine(r: np.ndarray, c: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(r, axis=1) * np.linalg.norm(c, axis=1)
    dots = np.einsum("ij,ij->i", r, c)
    same = np.all(r == c, axis=1)
    return np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), np.where(same, 1.0, 0.0))


def _error_spread(abs_err: np.ndarray) -> dict[str, np.ndarray]:
    """Per-sample mean error, and every element's error while that stays small.

    Above EXACT_P99_ELEMENTS values per sample (masks, depth maps) the group p99 is
    taken over per-sample p99s instead, to keep memory at one number per sample.
    """
    ev = {"abs_mean": abs_err.mean(axis=1)}
    if abs_err.shape[1] <= EXACT_P99_ELEMENTS:
        ev["abs_err"] = abs_err.astype(np.float32)
    else:
        ev["abs_p99"] = np.percentile(abs_err, 99, axis=1)
    return ev


class Regression(OutputKind):
    name = "regression"
    metric = "fail_rate"
    description = "numbers in their own units: share of samples outside atol + rtol·|float|"
    defaults = {"atol": Option(None, Limits(0)),  # None: atol_spread × the float output's spread
                "rtol": Option(0.0, Limits(0)),
                "atol_spread": Option(DEFAULT_ATOL_SPREAD, Limits(0))}

    def prepare(self, ref, cand, plan, reference_mask):
        plan.options["spread"] = spread_of(ref["output"], reference_mask)
        if "atol" in plan.options and plan.options["atol"] is None:
            plan.options["atol"] = float(plan.options["atol_spread"] * plan.options["spread"])

    def evidence(self, ref, cand, plan, labels):
        r, c = flat(ref["output"]).astype(np.float64), flat(cand["output"]).astype(np.float64)
        abs_err = np.abs(r - c)
        with np.errstate(over="ignore"):  # a huge rtol allows everything (inf), it does not warn
            allowed = plan.options["atol"] + plan.options["rtol"] * np.abs(r)
        # not (err <= allowed): a NaN or Inf the quantized model produced is a failure, not a pass
        ev = {"fail": ~(abs_err <= allowed).all(axis=1), "cosine": _cosine(r, c)}
        ev.update(_error_spread(abs_err))
        ev.update(error_evidence(r, c))
        return ev

    def summarize(self, ev, labels, plan):
        n = len(ev["fail"])
        fails = int(np.count_nonzero(ev["fail"]))
        spread = plan.options["spread"]
        mean_abs = float(ev["abs_mean"].mean()) if n else 0.0
        p99 = float(np.percentile(ev["abs_err"], 99)) if "abs_err" in ev and n else (
            float(np.percentile(ev["abs_p99"], 99)) if n else 0.0)
        out = contract_keys(n, rate(fails, n), fail_rate=rate(fails, n), mean_abs_error=mean_abs,
                            p99_abs_error=p99, mean_abs_error_rel=mean_abs / spread, p99_abs_error_rel=p99 / spread,
                            cosine_mean=float(ev["cosine"].mean()) if n else 1.0,
                            cosine_min=float(ev["cosine"].min()) if n else 1.0)
        out.update(error_summary(ev))
        out.update(value=out["fail_rate"], events=fails, trials=n)
        return out


class Embedding(Regression):
    """An embedding passes while it points the same way: cosine similarity ≥ min_cosine."""

    name = "embedding"
    metric = "fail_rate"
    description = "vectors compared by direction: share of samples with cosine similarity below min_cosine"
    defaults = {"min_cosine": Option(0.99, Limits(-1, 1))}

    def evidence(self, ref, cand, plan, labels):
        r, c = flat(ref["output"]).astype(np.float64), flat(cand["output"]).astype(np.float64)
        cosine = _cosine(r, c)
        ev = {"fail": ~(cosine >= plan.options["min_cosine"]), "cosine": cosine}  # NaN (from Inf/NaN) fails
        ev.update(_error_spread(np.abs(r - c)))
        ev.update(error_evidence(r, c))
        return ev


REGRESSION = register(Regression())
EMBEDDING = register(Embedding())
