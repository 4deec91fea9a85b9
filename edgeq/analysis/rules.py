"""The verdict's rules, written once: every module that judges, reports, repairs, tracks
history or offers a command-line default reads them from here.

DESIGN.md's contract: a deciding cell's rate (accuracy drop with labels, else the output
kind's flip or fail rate) below ``degraded`` is robust, at or above ``catastrophic`` is
catastrophic, degraded in between; a cell with fewer than ``MIN_N`` trials cannot decide
beside cells with enough. A fix aims under the degraded threshold and history calls a
drop a regression from the same threshold, so changing a number here changes all of them.
"""

from __future__ import annotations

THRESHOLDS = {"degraded": 0.02, "catastrophic": 0.10}  # a deciding cell's rate: robust below, catastrophic at/above
MIN_N = 30  # trials a cell needs before it may decide beside cells with enough
FIX_TARGET = THRESHOLDS["degraded"]  # edgeq fix / localize: a field condition above this needs repair
HISTORY_DROP_TOLERANCE = THRESHOLDS["degraded"]  # history: a drop this much worse than the baseline regresses
