"""``ignore``: an output the user says not to judge (kept in the report as such)."""

from __future__ import annotations

from edgeq.analysis.kinds import OutputKind, error_evidence, error_summary, register


class Ignore(OutputKind):
    name = "ignore"
    metric = "none"
    description = "not judged; SQNR and the largest error are still shown"

    def evidence(self, ref, cand, plan, labels):
        return error_evidence(ref["output"], cand["output"])

    def summarize(self, ev, labels, plan):
        n = len(ev["max_abs"])
        out = {"n": n, "value": None, "events": 0, "trials": 0}
        out.update(error_summary(ev))
        return out


IGNORE = register(Ignore())
