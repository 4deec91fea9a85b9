"""The adaptive planner alone (a unit test of one layer): rounds over a suite's tags, decided
from cells as the comparison reports them. The device side and the statistics have their own
tests (test_rounds.py, test_sequential.py); the whole loop is tested through evaluate."""

from __future__ import annotations

import numpy as np
import pytest

from edgeq.analysis.adaptive import SCHEDULE, Planner, width

SIZE = 500


def suite(categories=("clean", "noise", "blur"), severities=(1, 2, 3)):
    """Tags of a suite laid out as edgeq writes it: clean once, each family at three severities."""
    cat, sev = [], []
    for name in categories:
        levels = (0,) if name == "clean" else severities
        for level in levels:
            cat += [name] * SIZE
            sev += [level] * SIZE
    return np.array(cat), np.array(sev)


def sections_for(planner, rates: dict, taken: dict, labelled=False):
    """A comparison's sections where cell (category, severity) has rate ``rates[...]`` and its
    interval is a plausible width for the rows it ran (a stand-in for the anytime interval)."""
    categories = {}
    for (cat, lvl), g in planner.groups.items():
        n = taken[(cat, lvl)]
        if n == 0:
            continue
        p = rates.get((cat, lvl), 0.0)
        half = 3.0 / n + 2.0 * np.sqrt(max(p * (1 - p), 1e-9) / n)
        figures = {"value": p, "ci95": [max(0.0, p - half), min(1.0, p + half)], "trials": n,
                   "events": int(round(p * n)), "low_n": n < 30}
        if lvl is None:
            categories[cat] = figures
        else:
            categories.setdefault(cat, {"severities": {}})["severities"][str(lvl)] = figures
    return {"output_0": {"drives_verdict": True, "categories": categories}}


def run(planner, rates, budget_rows=None):
    rounds, taken = [], {k: 0 for k in planner.groups}
    while True:
        rows = planner.next_round(budget_rows)
        if rows is None:
            return rounds
        assert np.all(np.diff(rows) > 0), "rows ascend and never repeat within a round"
        rounds.append(rows)
        for key, g in planner.groups.items():
            taken[key] = g.taken
        planner.update(sections_for(planner, rates, taken))


def test_the_neediest_group_is_the_widest_undecided_interval():
    assert width([0.01, 0.05]) == pytest.approx(0.04) and width(None) == 1.0


def test_clear_cells_stop_early_and_the_worst_cell_near_a_line_runs_all_its_rows():
    """A robust model whose worst cell sits on the degraded line: that cell gets every row, the clear ones stop."""
    cat, sev = suite()
    planner = Planner(cat, sev, seed=1)
    rounds = run(planner, {("noise", 3): 0.0, ("blur", 2): 0.021})  # blur/2 sits on the line
    groups = planner.groups
    assert groups[("blur", 2)].taken == SIZE and groups[("blur", 2)].state == "exhausted"
    assert groups[("clean", None)].state == "decided" and groups[("clean", None)].taken < SIZE
    every = np.concatenate(rounds)
    assert len(np.unique(every)) == len(every) == planner.rows_run  # no row runs twice
    assert planner.rows_run < 0.6 * planner.suite_rows
    described = planner.describe()
    assert "clean" in described["decided_early"] and described["undecided"] == [] and described["moot"] == []
    assert described["stop_reason"] == "every cell decided or at its cap"


def test_a_cell_near_a_line_that_cannot_change_the_verdict_is_moot():
    """With noise/3 firmly catastrophic, blur/2 on the degraded line cannot change the verdict, and its 500 rows
    could not decide it at its rate: until cells stops it early (moot) and runs fewer rows than when it is the
    worst cell; noise/3 itself stops after one round."""
    cat, sev = suite()
    worst = Planner(cat, sev, seed=1)
    run(worst, {("blur", 2): 0.021})
    planner = Planner(cat, sev, seed=1)
    run(planner, {("noise", 3): 0.6, ("blur", 2): 0.021})
    groups = planner.groups
    assert groups[("noise", 3)].taken == SCHEDULE[0] and groups[("noise", 3)].state == "decided"
    assert groups[("blur", 2)].state == "decided" and groups[("blur", 2)].taken < SIZE
    described = planner.describe()
    assert described["moot"] == ["blur/2 (output_0)"] and described["undecided"] == []
    assert planner.rows_run < worst.rows_run
    assert described["stop_reason"] == "every cell decided or at its cap"


def test_until_verdict_stops_once_a_deciding_cell_is_firmly_catastrophic():
    cat, sev = suite()
    planner = Planner(cat, sev, seed=1, until="verdict")
    run(planner, {("noise", 3): 0.6, ("blur", 2): 0.021})
    assert planner.rows_run == len(planner.groups) * SCHEDULE[0]  # one round, then the verdict is firm
    assert "firmly catastrophic" in planner.describe()["stop_reason"]
    assert planner.groups[("blur", 2)].taken == SCHEDULE[0]


def test_until_verdict_stops_once_a_cell_is_firmly_degraded_and_none_can_reach_catastrophic():
    """noise/3 at 12 % is firmly degraded (lines at 2 % and 30 % here) after a few rounds; blur/2 at 1.9 % would
    need every row to be decided, but its interval stays under the catastrophic line, so it cannot change a
    degraded verdict: until verdict stops every group then, until cells only the cells that are moot."""
    cat, sev = suite()
    lines = {"degraded": 0.02, "catastrophic": 0.3}
    rates = {("noise", 3): 0.12, ("blur", 2): 0.019}
    cells = Planner(cat, sev, seed=1, thresholds=lines)
    run(cells, rates)
    planner = Planner(cat, sev, seed=1, until="verdict", thresholds=lines)
    run(planner, rates)
    assert "blur/2 (output_0)" in cells.describe()["moot"]
    assert planner.rows_run < cells.rows_run and planner.groups[("blur", 2)].taken < SIZE
    assert "firmly degraded" in planner.describe()["stop_reason"]


def test_until_verdict_keeps_sampling_while_an_open_cell_could_still_be_catastrophic():
    """A firmly degraded cell does not stop the rounds while another cell's interval reaches the catastrophic
    line: blur/3, near it, gets every row."""
    cat, sev = suite()
    lines = {"degraded": 0.02, "catastrophic": 0.3}
    planner = Planner(cat, sev, seed=1, until="verdict", thresholds=lines)
    run(planner, {("noise", 3): 0.12, ("blur", 3): 0.29})
    assert planner.groups[("blur", 3)].taken == SIZE and planner.groups[("noise", 3)].state == "decided"


def gated_sections(planner, opens: dict, rate: float = 1.0):
    """Sections of a gated output (landmarks judged only where a gate opens): group (category, severity) has
    ``opens[...]`` of its rows with the gate open, each a failure at ``rate``; every other group's gate opens on
    1 % of its rows, with no failure."""
    from edgeq.analysis.sequential import confidence_sequence

    categories = {}
    for (cat, lvl), g in planner.groups.items():
        if not g.taken:
            continue
        trials = int(opens.get((cat, lvl), 0.01) * g.taken)
        events = rate * trials if (cat, lvl) in opens else 0
        figures = {"value": events / trials if trials else None, "trials": trials, "events": events,
                   "ci95": list(confidence_sequence(events, trials)) if trials else None, "low_n": trials < 30}
        if lvl is None:
            categories[cat] = figures
        else:
            categories.setdefault(cat, {"severities": {}})["severities"][str(lvl)] = figures
    return {"landmarks": {"drives_verdict": True, "categories": categories}}


def test_until_verdict_spends_its_rows_where_a_catastrophe_is_becoming_firm():
    """A gated output fails on every row where its gate opens, but the gate opens on 8 % of blur/3's rows and
    4 % of noise/2's: only blur/3 can reach enough trials soon. After the first round, the rounds go to the
    groups that look catastrophic (blur/3 first), not to every group, until blur/3 is firmly catastrophic."""
    cat, sev = suite()
    planner = Planner(cat, sev, seed=1, until="verdict")
    opens = {("blur", 3): 0.08, ("noise", 2): 0.04}
    while (rows := planner.next_round()) is not None:
        planner.update(gated_sections(planner, opens))
    taken = {g.name: g.taken for g in planner.groups.values()}
    assert "firmly catastrophic" in planner.describe()["stop_reason"]
    assert taken["blur/3"] >= 30 / 0.08 and all(t == SCHEDULE[0] for n, t in taken.items()
                                                if n not in ("blur/3", "noise/2"))
    assert planner.rows_run == 2 * SIZE + 5 * SCHEDULE[0]  # the two leads whole, the rest one round each


def test_a_stress_cell_never_makes_the_verdict_firm():
    cat, sev = suite()
    planner = Planner(cat, sev, seed=1, until="verdict")
    taken = {k: 0 for k in planner.groups}
    rows = planner.next_round()
    for key, g in planner.groups.items():
        taken[key] = g.taken
    sections = sections_for(planner, {("noise", 3): 0.6}, taken)
    sections["output_0"]["categories"]["noise"]["severities"]["3"]["counts_for_verdict"] = False
    planner.update(sections)
    assert rows is not None and planner.next_round() is not None


def test_a_budget_goes_to_the_most_uncertain_groups_and_names_what_it_left():
    cat, sev = suite()
    planner = Planner(cat, sev, seed=1)
    rates = {("blur", 2): 0.021, ("blur", 3): 0.09}
    first = planner.next_round()
    taken = {k: g.taken for k, g in planner.groups.items()}
    planner.update(sections_for(planner, rates, taken))
    second = planner.next_round(max_rows=40)
    assert len(second) == 40
    spent = {g.name: g.taken - SCHEDULE[0] for g in planner.groups.values()}
    assert spent["blur/2"] + spent["blur/3"] == 40  # the two near a line get the rows
    assert planner.next_round(max_rows=0) is None
    assert set(planner.describe()["undecided"]) >= {"blur/2", "blur/3"}
    assert planner.describe()["stop_reason"] == "budget spent" and len(first) == len(planner.groups) * SCHEDULE[0]


def test_each_group_is_a_random_sample_the_same_for_the_same_seed():
    cat, sev = suite()
    a, b, c = Planner(cat, sev, seed=3), Planner(cat, sev, seed=3), Planner(cat, sev, seed=4)
    ra, rb, rc = a.next_round(), b.next_round(), c.next_round()
    assert np.array_equal(ra, rb) and not np.array_equal(ra, rc)
    clean = ra[ra < SIZE]
    assert clean.max() > SIZE // 2  # not the first rows of the group: a random prefix


def test_a_gated_cell_the_cap_cannot_decide_does_not_hold_its_group_open():
    """Landmarks judged only where the model sees a hand, on photos with few hands: a handful of
    trials per cell even at the cap. Such a cell cannot keep every group running to its cap; a
    gated cell that the cap can decide (open on most rows) still does."""
    cat, sev = suite(categories=("clean", "noise"))
    planner = Planner(cat, sev, seed=1)
    planner.next_round()
    planner.next_round()  # 64 rows per group taken
    sections = sections_for(planner, {}, {k: g.taken for k, g in planner.groups.items()})
    rare = {"drives_verdict": True, "categories": {"clean": {"value": 0.0, "ci95": [0.0, 0.8], "trials": 2,
                                                             "events": 0, "low_n": True}}}
    common = {"drives_verdict": True, "categories": {"clean": {"value": 0.0, "ci95": [0.0, 0.06], "trials": 60,
                                                               "events": 0, "low_n": False}}}
    planner.update(dict(sections, landmarks=rare))
    assert "clean (landmarks)" in planner.describe()["out_of_reach"]
    assert all(d != "undecided" for d, _ in [planner.groups[("clean", None)].cells["landmarks"]])
    planner.update(dict(sections, landmarks=common))
    assert planner.groups[("clean", None)].cells["landmarks"][0] == "undecided"
