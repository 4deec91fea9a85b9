"""Which samples the next round runs: adaptive sampling of the risky suite.

Most inferences of a fixed-n suite decide nothing: a cell with no flip in a few hundred
samples is already firmly below the degraded line, and a cell at 60 % flips is firmly
catastrophic after a few dozen. The suite is therefore run in rounds. Each (category,
severity) group of rows gets a seeded random order, so any prefix of it is a random
sample of the group; round k asks each open group for its next rows up to the k-th step of
``SCHEDULE``. After each round the comparison (with anytime-valid intervals, see
``sequential``) decides every cell whose interval lies wholly below the degraded line, wholly
at or above the catastrophic line, or wholly between them; a group stays open while any of
its cells on an output that drives the verdict is undecided, until it has run all its rows —
unless the cell is ``moot``: it cannot change the verdict (another cell is already firmly
where its interval cannot reach) and its group's every row could not decide it at its rate.
The worst cell near a line is never moot: it gets all its rows.

``until="verdict"`` also stops as soon as the verdict itself is firm: a deciding cell is
firmly catastrophic, so no other cell can change it; or one is firmly degraded and no open
cell's interval reaches the catastrophic line, so none can make it worse. While some deciding
cell looks catastrophic (its estimate at or above the line) but is not yet firm — often a gated
output judged on the few rows where its gate opens — rounds advance only the groups nearest to
making it firm (``_leads``), so a firm catastrophe costs those groups' rows, not every group's.
A device-time budget caps each round's rows; when it runs short, the rows go to the most
uncertain groups first and the groups left open are named in ``describe()``.

Pure bookkeeping over the suite's tags and the comparison's cells: no device, no runtime.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgeq.analysis.compare import cells_of
from edgeq.analysis.field import counts
from edgeq.analysis.rules import MIN_N, THRESHOLDS
from edgeq.analysis.sequential import (DECIDED_ABOVE, DECIDED_BETWEEN, UNDECIDED, confidence_sequence, decide,
                                       trials_to_decide_zero)

SCHEDULE = (32, 64, 128, 256, 512, 1024, 2048, 4096)  # cumulative rows per group after each round
UNTIL = ("cells", "verdict")
LEADS = 2  # until="verdict": groups a round advances while some look catastrophic but are not yet firm
OUT_OF_REACH = "out_of_reach"  # undecided, and the group's remaining rows could not decide it (see out_of_reach)
MOOT = "moot"  # undecided, its cap could not decide it at the rate seen, and it cannot change the verdict (see moot)
ZERO_CELL_TRIALS = trials_to_decide_zero()  # 213: trials a cell with no event needs to be below the degraded line


def out_of_reach(figures: dict, taken: int, size: int, thresholds: dict = THRESHOLDS) -> bool:
    """Whether running the group's every row could not decide this cell: a gated output open on a
    few samples (landmarks where the model sees a hand in 2 % of the photos) keeps a handful of
    trials at the cap. Its trials and events are projected to the cap at the rate seen so far;
    when that many trials could neither put it below the degraded line even with no event
    (``trials_to_decide_zero``) nor decide it at its rate, more rows are spent elsewhere. A cell of
    every row (a cell near a line) is never out of reach: it gets all its rows."""
    trials = figures.get("trials") or 0
    if not trials or taken <= 0 or trials >= taken:
        return False
    if trials * size / taken >= ZERO_CELL_TRIALS:
        return False
    return undecided_at_cap(figures, taken, size, thresholds)


def undecided_at_cap(figures: dict, taken: int, size: int, thresholds: dict = THRESHOLDS) -> bool:
    """Whether the cell would still be undecided with all ``size`` rows of its group run, its trials and events
    projected there at the rate seen after ``taken`` rows (False once they have all run)."""
    trials = figures.get("trials") or 0
    if not trials or taken <= 0 or taken >= size:
        return False
    scale = size / taken
    return decide(confidence_sequence((figures.get("events") or 0) * scale, trials * scale), thresholds) == UNDECIDED


def moot(figures: dict, taken: int, size: int, raise_line: float, thresholds: dict = THRESHOLDS) -> bool:
    """Whether an undecided cell's remaining rows are better spent elsewhere: its interval cannot reach
    ``raise_line`` (the line a cell must reach to raise the verdict: the degraded line while no cell is firmly
    above it, the catastrophic line once one is firmly degraded, none once one is firmly catastrophic; a cell
    reported beside the verdict never raises it), and its group's every row could not decide it at the rate
    seen. On MediaPipe hand landmark the presence output flips on 0.4–2.8 % of the rows of most cells while the
    world landmarks are firmly catastrophic: a presence cell at 2–3 % cannot be decided with all 500 rows and
    cannot change the verdict (one at 0.4 % can be decided at the cap, and gets its rows: until="cells" still
    runs 98 % of that suite). A cell that could raise the verdict — the worst cell near a line — is never moot:
    it gets all its rows."""
    if counts(figures) and _reaches(figures, raise_line):
        return False
    return undecided_at_cap(figures, taken, size, thresholds)


def _reaches(figures: dict, line: float) -> bool:
    """Whether a cell's interval (none yet: the whole range) reaches ``line``."""
    ci95 = figures.get("ci95")
    return ci95 is None or float(ci95[1]) >= line


def width(ci95) -> float:
    """How unsure an undecided cell is: its interval's width (1 with no interval yet). A budget goes
    to the groups whose undecided cells are widest."""
    return 1.0 if ci95 is None else float(ci95[1] - ci95[0])


@dataclass
class Group:
    """One (category, severity) group of suite rows, in its seeded random order."""

    category: str
    severity: int | None
    order: np.ndarray  # suite row indices, the order rounds take them in
    taken: int = 0
    state: str = "open"  # open, decided, exhausted (all rows run), stopped (verdict firm or budget)
    cells: dict = field(default_factory=dict)  # output → decision of its cell here
    need: float = 1.0  # the widest interval among its undecided cells
    lead: float | None = None  # until="verdict": rows it may still take to make a catastrophe firm (None: none)

    @property
    def name(self) -> str:
        return self.category if self.severity is None else f"{self.category}/{self.severity}"

    @property
    def size(self) -> int:
        return len(self.order)


class Planner:
    """Plans rounds over a suite from its ``category`` and ``severity`` tags (one per row)."""

    def __init__(self, category, severity, *, seed: int = 0, until: str = "cells",
                 schedule: tuple = SCHEDULE, thresholds: dict = THRESHOLDS, min_n: int = MIN_N):
        if until not in UNTIL:
            raise ValueError(f"until must be one of {UNTIL}, got {until!r}")
        self.until, self.schedule, self.thresholds, self.min_n = until, tuple(schedule), thresholds, min_n
        self.groups = _groups(np.asarray(category), None if severity is None else np.asarray(severity), seed)
        self.rounds: list[dict] = []
        self.stop_reason: str | None = None

    # -- rounds ------------------------------------------------------------------------------

    def next_round(self, max_rows: int | None = None, per_group: int | None = None) -> np.ndarray | None:
        """The suite rows of the next round (ascending), or None when nothing is left to run.
        ``max_rows`` (a budget) caps them: the most uncertain groups get theirs first;
        ``per_group`` caps each group's (a calibration round that times every group a little)."""
        wanted = [(g, min(self._target(g), g.taken + (per_group or g.size)) - g.taken)
                  for g in self.groups.values() if g.state == "open"]
        wanted = [(g, k) for g, k in wanted if k > 0]
        if self.until == "verdict":
            wanted = _leads(wanted) or wanted
        if not wanted:
            self.stop_reason = self.stop_reason or "every cell decided or at its cap"
            return None
        if max_rows is not None:
            if max_rows <= 0:
                self._stop_open("budget spent")
                return None
            wanted = _within(wanted, max_rows)
        rows = np.concatenate([g.order[g.taken:g.taken + k] for g, k in wanted])
        for g, k in wanted:
            g.taken += k
        self.rounds.append({"rows": int(rows.size), "groups": len(wanted)})
        return np.sort(rows).astype(np.int64)

    def update(self, sections: dict) -> None:
        """Read the comparison's cells (``compare_runs(...)["outputs"]``) after a round."""
        for g in self.groups.values():
            g.cells = {}
        for name, section in sections.items():
            if not section.get("drives_verdict", True):
                continue
            for category, level, figures in cells_of(section):
                g = self.groups.get((category, _level(level)))
                if g is not None and figures.get("value") is not None:
                    g.cells[name] = (self._decision(g, figures), figures)
        line = self._raise_line()
        for g in self.groups.values():
            for name, (d, f) in list(g.cells.items()):
                if d == UNDECIDED and moot(f, g.taken, g.size, line, self.thresholds):
                    g.cells[name] = (MOOT, f)
            undecided = [f for d, f in g.cells.values() if d == UNDECIDED]
            g.need = max((width(f.get("ci95")) for f in undecided), default=0.0)
            g.lead = _lead(g, self.thresholds["catastrophic"], self.min_n) if self.until == "verdict" else None
            if g.state == "open":
                if g.cells and not undecided and g.lead is None:  # a lead stays open: its catastrophe is not firm
                    g.state = "decided"
                elif g.taken >= g.size:
                    g.state = "exhausted"
        firm = self._firm_verdict() if self.until == "verdict" else None
        if firm:
            self._stop_open(f"the verdict is firm: {firm}")

    def _firm_verdict(self) -> str | None:
        """Why no more rows can change the verdict, or None. Catastrophic: a deciding cell with enough trials
        is firmly at or above the catastrophic line. Degraded: one is firmly at or above the degraded line, and
        no deciding cell of an open group (however few its trials) reaches the catastrophic line. Robust needs
        every cell decided below the degraded line: that is ``until="cells"``'s end."""
        counted = [(g, d, f) for g in self.groups.values() for d, f in g.cells.values() if counts(f)]
        if any(d == DECIDED_ABOVE and not f.get("low_n") for _, d, f in counted):
            return "a deciding cell is firmly catastrophic"
        degraded = any(d in (DECIDED_BETWEEN, DECIDED_ABOVE) and not f.get("low_n") for _, d, f in counted)
        reach = [f for g, d, f in counted if g.state == "open" and _reaches(f, self.thresholds["catastrophic"])]
        if degraded and not reach:
            return "a deciding cell is firmly degraded and no open cell's interval reaches the catastrophic line"
        return None

    def _raise_line(self) -> float:
        """The line an undecided cell's interval must reach to raise the verdict (``moot``): the catastrophic
        line once a deciding cell with enough trials is firmly degraded, none (inf) once one is firmly
        catastrophic, else the degraded line."""
        firm = [d for g in self.groups.values() for d, f in g.cells.values() if counts(f) and not f.get("low_n")]
        if DECIDED_ABOVE in firm:
            return float("inf")
        return self.thresholds["catastrophic" if DECIDED_BETWEEN in firm else "degraded"]

    def _decision(self, g: Group, figures: dict) -> str:
        """The cell's decision; ``out of reach`` when the group's remaining rows cannot decide it."""
        ci95 = figures.get("ci95")
        found = UNDECIDED if ci95 is None else decide(ci95, self.thresholds)
        if found == UNDECIDED and out_of_reach(figures, g.taken, g.size, self.thresholds):
            return OUT_OF_REACH
        return found

    def _target(self, g: Group) -> int:
        step = next((s for s in self.schedule if s > g.taken), None)
        return g.size if step is None else min(step, g.size)

    def _stop_open(self, reason: str) -> None:
        for g in self.groups.values():
            if g.state == "open":
                g.state = "stopped"
        self.stop_reason = reason

    # -- what the report says ----------------------------------------------------------------

    @property
    def rows_run(self) -> int:
        return sum(g.taken for g in self.groups.values())

    @property
    def suite_rows(self) -> int:
        return sum(g.size for g in self.groups.values())

    def describe(self) -> dict:
        """The adaptive sampling section of report.json."""
        states = {}
        for g in self.groups.values():
            states.setdefault(g.state, []).append(g.name)
        left = [g for g in self.groups.values() if g.state == "stopped"
                and any(d == UNDECIDED for d, _ in g.cells.values())]
        return {"sampling": "adaptive", "until": self.until, "schedule": list(self.schedule),
                "rounds": self.rounds, "rows_run": self.rows_run, "suite_rows": self.suite_rows,
                "share_run": self.rows_run / self.suite_rows if self.suite_rows else None,
                "stop_reason": self.stop_reason,
                "groups": {name: {"state": g.state, "rows": g.taken, "of": g.size}
                           for name, g in ((g.name, g) for g in self.groups.values())},
                "undecided": sorted(g.name for g in left),
                "decided_early": sorted(g.name for g in self.groups.values()
                                        if g.state == "decided" and g.taken < g.size),
                "out_of_reach": _named(self.groups, OUT_OF_REACH), "moot": _named(self.groups, MOOT)}


def _named(groups: dict, decision: str) -> list[str]:
    """"group (output)" of every cell with ``decision``."""
    return sorted(f"{g.name} ({name})" for g in groups.values() for name, (d, _) in g.cells.items() if d == decision)


def _groups(category: np.ndarray, severity: np.ndarray | None, seed: int) -> dict:
    """Every (category, severity) group's rows, each shuffled by its own seeded generator."""
    levels = np.zeros(len(category), dtype=np.int64) if severity is None else severity.astype(np.int64)
    groups = {}
    keys = sorted({(str(c), int(s)) for c, s in zip(category, levels)})
    for number, (cat, lvl) in enumerate(keys):
        rows = np.flatnonzero((category == cat) & (levels == lvl))
        order = np.random.default_rng([seed, number]).permutation(rows)
        key = (cat, None if lvl == 0 else lvl)
        groups[key] = Group(cat, key[1], order)
    return groups


def _lead(g: Group, catastrophic: float, min_n: int) -> float | None:
    """Rows group ``g`` may still need before a catastrophe there is firm: it has a deciding cell whose estimate
    is at or above the catastrophic line but that is not yet firm (undecided, or too few trials: a gated output
    judged on the few rows where its gate opens); None when it has none. The estimate: the rows at which the
    cell's trials would reach ``min_n`` at the rate its gate opened so far (0 once they have)."""
    found = None
    for d, f in g.cells.values():
        if not counts(f) or (f.get("value") or 0.0) < catastrophic or (d == DECIDED_ABOVE and not f.get("low_n")):
            continue
        trials = f.get("trials") or 0
        rows = 0.0 if trials >= min_n else (min_n - trials) * g.taken / max(trials, 1)
        found = rows if found is None else min(found, rows)
    return found


def _leads(wanted: list, count: int = LEADS) -> list:
    """until="verdict": the open groups most likely to make the verdict firmly catastrophic, soonest first — only
    they take the next round, so one firm catastrophe costs their rows, not every group's. Which group a round
    advances does not touch any cell's anytime-valid interval (each still sees a random prefix of its rows)."""
    leads = sorted((gk for gk in wanted if gk[0].lead is not None), key=lambda gk: (gk[0].lead, gk[0].name))
    return leads[:count]


def _within(wanted: list, max_rows: int) -> list:
    """Rows for the neediest groups first, each its round's share, until ``max_rows``."""
    chosen, left = [], max_rows
    for g, k in sorted(wanted, key=lambda gk: (-gk[0].need, gk[0].taken)):
        take = min(k, left)
        if take > 0:
            chosen.append((g, take))
            left -= take
    return chosen


def _level(level) -> int | None:
    if level in (None, "", 0, "0"):
        return None
    return int(level)
