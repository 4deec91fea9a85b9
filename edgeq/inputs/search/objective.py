"""How far apart the float and quantized models are on one output: the search's objective.

The output is judged by its kind (``edgeq.analysis.kinds``, chosen as a comparison
would choose it, or by ``--output``). Per sample the objective gives ``flip`` — the
kind's own failure: a changed top-1 class for a classification output, an error beyond
the kind's tolerance for any other — and ``score``, larger when the sample is closer
to (or further into) a failure; a flip always scores above 0 and a non-flip at most 0.

Classification (several classes): with c the float model's class and margins taken on
log-probabilities (logits, or the log of probabilities; never saturating like
probabilities do), m_f = float margin of c over the runner-up and m_q = the quantized
model's margin of the same class c over its best other class. The score is
``(m_f − m_q) − m_f = −m_q``: the margin difference quantization made, less the float
margin still to cross; it is > 0 exactly when the quantized model picks another class.
A single score per sample is a binary classifier: the same with the threshold as the
boundary. Any other kind: the largest absolute error in units of the kind's tolerance
(regression's default atol, 0.1 × the float output's spread over the seeds), minus 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgeq.analysis.kinds import flat, get_kind, in_unit_interval, is_probability_rows
from edgeq.analysis.plan import OutputInfo, OutputSpec, describe_outputs, plan_outputs, resolve

TINY = 1e-30


@dataclass
class Judged:
    flip: np.ndarray  # bool per sample
    score: np.ndarray  # float per sample
    float_class: np.ndarray | None = None
    quant_class: np.ndarray | None = None
    kl: np.ndarray | None = None
    error: np.ndarray | None = None
    # per-class log-scores of each model (rows: samples), whose argmax is the class above: what the search's
    # boundary line search interpolates (classification: log-probabilities; binary: [threshold, score] logits)
    float_scores: np.ndarray | None = None
    quant_scores: np.ndarray | None = None


@dataclass
class Objective:
    output: OutputInfo
    kind: str  # classification | binary | error
    reason: str
    options: dict = field(default_factory=dict)

    def judge(self, float_outputs: list[np.ndarray], quant_outputs: list[np.ndarray]) -> Judged:
        f = flat(np.asarray(float_outputs[self.output.index])).astype(np.float64)
        q = flat(np.asarray(quant_outputs[self.output.index])).astype(np.float64)
        if self.kind == "classification":
            return self._classes(f, q)
        if self.kind == "binary":
            return self._binary(f, q)
        err = np.abs(f - q)
        err = np.where(np.isfinite(err), err, np.inf).max(axis=1) / self.options["atol"]
        return Judged(flip=err > 1.0, score=np.minimum(err, 1e6) - 1.0, error=err)

    def _classes(self, f, q) -> Judged:
        lf, lq = self._log_probs(f), self._log_probs(q)
        finite = np.isfinite(q).all(axis=1)
        c = lf.argmax(axis=1)
        m_q = lq[np.arange(len(c)), c] - _runner_up(lq, c)  # m_f - m_q - m_f: only m_q is left
        quant_class = np.where(finite, lq.argmax(axis=1), -1)
        flip = quant_class != c
        score = np.where(flip, np.maximum(-m_q, 1e-9), np.minimum(-m_q, 0.0))
        score = np.where(finite, score, 1e6)
        p, r = np.exp(lf), np.where(finite[:, None], lq, 0.0)
        kl = np.where(finite, np.sum(p * (lf - r), axis=1), np.inf)
        return Judged(flip=flip, score=score, float_class=c, quant_class=quant_class, kl=kl, float_scores=lf,
                      quant_scores=np.where(finite[:, None], lq, -np.inf))

    def _log_probs(self, x):
        if self.options.get("probabilities"):
            return np.log(np.clip(x, TINY, None))
        shifted = x - np.max(np.where(np.isfinite(x), x, -np.inf), axis=1, keepdims=True)
        return shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))

    def _binary(self, f, q) -> Judged:
        t = self.options["threshold"]
        zf, zq = self._logit(f[:, 0]), self._logit(q[:, 0])
        zt = self._logit(np.array([t]))[0]
        fc = (f[:, 0] > t).astype(np.int64)
        qc = np.where(np.isfinite(q[:, 0]), (q[:, 0] > t).astype(np.int64), -1)
        side = np.where(fc == 1, 1.0, -1.0)
        m_q = (zq - zt) * side
        flip = qc != fc
        score = np.where(flip, np.maximum(-m_q, 1e-9), np.minimum(-m_q, 0.0))
        zt_column = np.full(len(fc), zt)
        return Judged(flip=flip, score=np.where(np.isfinite(score), score, 1e6), float_class=fc,
                      quant_class=qc, error=np.abs(zf - zq),
                      float_scores=np.stack([zt_column, zf], 1),
                      quant_scores=np.stack([zt_column, np.where(np.isfinite(zq), zq, -np.inf)], 1))

    def _logit(self, v):
        if not self.options.get("probabilities"):
            return v
        v = np.clip(v, 1e-12, 1 - 1e-12)
        return np.log(v) - np.log1p(-v)

    def describe(self) -> dict:
        return {"output": self.output.short, "index": self.output.index, "kind": self.kind, "reason": self.reason,
                "options": {k: v for k, v in self.options.items()}}


def _runner_up(logp: np.ndarray, c: np.ndarray) -> np.ndarray:
    masked = logp.copy()
    masked[np.arange(len(c)), c] = -np.inf
    best = masked.max(axis=1) if masked.shape[1] > 1 else np.full(len(c), -np.inf)
    return np.where(np.isfinite(best), best, logp[np.arange(len(c)), c] - 1e3)


def resolve_output(info, output: str | None, where: str = "--output") -> int | None:
    """The index of the output ``output`` names in a model (a ModelInfo), through the one resolver
    the comparison uses (an exact name wins over ``output_K``); None when no output is named.
    Called before any query, so a wrong name costs no device time."""
    if output is None:
        return None
    outputs = describe_outputs([t.name for t in info.outputs], [tuple(t.shape[1:]) for t in info.outputs], info)
    return resolve(str(output), outputs, where)


def choose_objective(names: list[str], float_outputs: list[np.ndarray], quant_outputs: list[np.ndarray],
                     output: str | None = None, info=None) -> Objective:
    """The objective on ``output`` (name or index), else on the first output that decides a verdict,
    preferring a classification output; the output's kind is planned as a comparison plans it."""
    shapes = [tuple(np.asarray(o).shape[1:]) for o in float_outputs]
    outputs = describe_outputs(names, shapes, info)
    plans = plan_outputs(outputs, OutputSpec(), has_labels=False, values=[np.asarray(o) for o in float_outputs])
    if output is not None:
        index = resolve(str(output), outputs, "--output")
        plan = next((p for p in plans if p.index == index or index in p.members.values()), None)
        chosen_by = "chosen with --output"
    else:
        deciding = [p for p in plans if p.drives_verdict]
        plan = next((p for p in deciding if p.kind == "classification"), deciding[0] if deciding else None)
        index = plan.index if plan is not None else 0
        chosen_by = "the first output that decides a verdict" + (" (a classification)" if plan is not None
                                                                  and plan.kind == "classification" else "")
    o = outputs[index]
    f, q = np.asarray(float_outputs[index]), np.asarray(quant_outputs[index])
    kind = plan.kind if plan is not None and plan.index == index else "regression"
    units = int(np.prod(o.shape)) if o.shape else 1
    if kind == "classification":
        probabilities = (in_unit_interval(f) and in_unit_interval(q)) if units == 1 else (
            is_probability_rows(f) and is_probability_rows(q))
        if units == 1:
            threshold = (plan.options.get("threshold") if plan.options.get("threshold") is not None
                         else (0.5 if in_unit_interval(f) else 0.0))
            return Objective(o, "binary", f"{o.short}: {plan.reason} ({chosen_by})",
                             {"threshold": float(threshold), "probabilities": probabilities})
        return Objective(o, "classification", f"{o.short}: {plan.reason} ({chosen_by})",
                         {"probabilities": probabilities})
    regression = get_kind("regression")
    spread = float(np.std(flat(f).astype(np.float64))) or float(np.max(np.abs(f))) or 1.0
    atol = regression.defaults["atol_spread"] * spread
    why = (f"{o.short}: judged as {kind}; the search uses the largest absolute error against atol = "
           f"{regression.defaults['atol_spread']:g} × the float output's spread over the seeds ({chosen_by})")
    return Objective(o, "error", why, {"atol": atol, "spread": spread, "kind": kind})
