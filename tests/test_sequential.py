"""Anytime-valid confidence sequences for adaptive sampling (``edgeq.analysis.sequential``).

Measured here (2,000 repetitions per rate, seed 0, numpy 2.4; looks after 32, 64, 128,
256, 512 cumulative trials; stop at the first look where the CS decides the cell below
2 %, at/above 10 % or between, else at 512):

(the table is ``sequential.COVERAGE_TABLE``; ``scripts/sequential_table.py`` prints it again)

CS@every: the CS held p at all five looks (time-uniform). Wilson@stop: the fixed-n 95 %
interval at the CS's stopping time; Wilson(own stop): Wilson used both to stop and to
report, as a naive adaptive run would — 90.8 % at p = 2 % and 85.4 % at p = 10 %, the
thresholds themselves, where it matters. With 20,000 repetitions (seed 1) the same
columns read within ±0.01. A 0-of-n cell is decided below 2 % at 213 trials; a 60 %
cell at/above 10 % from 13 trials (the first look of 32).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeq.analysis import sequential as seq
from edgeq.analysis.intervals import wilson
from edgeq.analysis.rules import THRESHOLDS

# confseq 0.0.11 bernoulli_confidence_interval(k, t, 0.05, t_opt=256, alpha_opt=0.05), built from its
# C++ source in a scratch venv (not a dependency): the same method; the module's bounds agree to 9e-13
CONFSEQ = {(0, 100): (0.0, 0.05270271619278333), (5, 100): (0.006969943018162894, 0.14717994075431873),
           (50, 100): (0.34720358443632904, 0.6527964155634436), (100, 100): (0.9472972838070746, 1.0),
           (0, 300): (0.0, 0.013164658745985491), (1, 1000): (0.0, 0.007270468211541495),
           (2, 1000): (1.475852558574964e-06, 0.009534886188652291), (1, 10): (0.0, 0.8098611099342179),
           (3, 3): (0.012433585241048206, 1.0), (0.5, 100): (0.0, 0.06614118088494508)}

GRID_T = list(range(1, 70)) + [100, 128, 200, 256, 300, 512, 1000]


def test_matches_the_authors_library():
    for (k, t), (lo, hi) in CONFSEQ.items():
        got = seq.confidence_sequence(k, t)
        assert got[0] == pytest.approx(lo, rel=1e-9, abs=1e-15) and got[1] == pytest.approx(hi, rel=1e-9), (k, t)


def test_holds_the_estimate_within_unit_interval_exact_at_the_ends():
    for t in GRID_T:
        for k in range(t + 1):
            lo, hi = seq.confidence_sequence(k, t)
            assert 0.0 <= lo <= k / t <= hi <= 1.0
            assert (lo == 0.0) == (k <= 1)  # 0 exactly at 0 events; at 1 event no rate above 0 is excluded
            assert (hi == 1.0) == (k >= t - 1)
    assert seq.confidence_sequence(0, 0) == (0.0, 1.0)
    assert seq.confidence_sequence(0, 213)[1] < THRESHOLDS["degraded"] <= seq.confidence_sequence(0, 212)[1]


def test_shrinks_with_n():
    for share in (0.0, 0.01, 0.05, 0.1, 0.5, 0.9, 1.0):
        widths = []
        for t in (100, 200, 400, 800, 1600, 3200):
            lo, hi = seq.confidence_sequence(round(share * t), t)
            widths.append(hi - lo)
        assert all(b < a for a, b in zip(widths, widths[1:])), (share, widths)


def test_wider_than_wilson():
    """The price of anytime validity: the CS holds Wilson's interval at the same counts. Only at 0
    (or all) events beyond ~400 trials is its one open end tighter (3.6/n vs Wilson's 3.8/n at 512:
    Wilson's two-sided bound at 0 events is loose, a one-sided exact 95 % bound is 3.0/n)."""
    for t in GRID_T:
        for k in range(t + 1):
            lo, hi = seq.confidence_sequence(k, t)
            wlo, whi = wilson(k, t)
            if 0 < k < t or t < 400:
                assert lo <= wlo + 1e-15 and hi >= whi - 1e-15, (k, t)
                assert hi - lo > whi - wlo, (k, t)
    for t in (32, 64, 128, 256, 512):  # the looks: clearly wider in the middle
        lo, hi = seq.confidence_sequence(t // 10, t)
        wlo, whi = wilson(t // 10, t)
        assert hi - lo > 1.2 * (whi - wlo)


def test_the_set_is_the_interval():
    """No rate outside [lower, upper] has a mixture ratio below 1/alpha (no pocket the bisection missed)."""
    m, level = seq.mixture_concentration(), math.log(1 / seq.ALPHA)
    for t in (1, 2, 5, 10, 32, 64, 128, 256, 512):
        for k in sorted(set(np.linspace(0, t, 12).round().astype(int).tolist())):
            lo, hi = seq.confidence_sequence(k, t)
            outside = [p for p in np.concatenate([np.geomspace(1e-9, 1 - 1e-9, 300), np.linspace(0, 1, 301)[1:-1]])
                       if p < lo * (1 - 1e-9) or p > hi + (1 - hi) * 1e-9]
            assert all(seq.log_mixture(p, k, t, m) >= level for p in outside), (k, t)
            inside = np.linspace(lo, hi, 50)[1:-1]
            assert all(seq.log_mixture(p, k, t, m) < level for p in inside), (k, t)


def test_batch_and_bad_input():
    lo, hi = seq.confidence_sequences([0, 3, 10], 10)
    assert [(a, b) for a, b in zip(lo, hi)] == [seq.confidence_sequence(k, 10) for k in (0, 3, 10)]
    for bad in ((-1, 10), (11, 10), (1, -1), (math.nan, 10)):
        with pytest.raises(ValueError):
            seq.confidence_sequence(*bad)
    with pytest.raises(ValueError):
        seq.confidence_sequence(1, 10, alpha=0)
    with pytest.raises(ValueError):
        seq.paired_drop(6, 5, 10)


def test_decide():
    d, c = THRESHOLDS["degraded"], THRESHOLDS["catastrophic"]
    assert seq.decide((0.0, d - 1e-9)) == seq.DECIDED_BELOW
    assert seq.decide((0.0, d)) == seq.UNDECIDED  # the degraded line itself is not below it
    assert seq.decide((c, 0.5)) == seq.DECIDED_ABOVE
    assert seq.decide((c - 1e-9, 0.5)) == seq.UNDECIDED
    assert seq.decide((d, c - 1e-9)) == seq.DECIDED_BETWEEN
    assert seq.decide((d, c)) == seq.UNDECIDED
    assert seq.decide((0.0, 1.0)) == seq.UNDECIDED
    assert seq.decide((-0.05, 0.01)) == seq.DECIDED_BELOW  # a drop may be negative


def test_zero_events_stop_early_and_a_bad_cell_at_the_first_look():
    zero = seq.trials_to_decide_zero()
    print(f"\n0-of-n decided below {THRESHOLDS['degraded']:.0%} after {zero} trials")
    assert 150 <= zero <= 300 and zero == 213
    assert seq.decide(seq.confidence_sequence(0, zero)) == seq.DECIDED_BELOW
    assert seq.decide(seq.confidence_sequence(0, zero - 1)) == seq.UNDECIDED
    assert seq.decide(seq.confidence_sequence(19, 32)) == seq.DECIDED_ABOVE  # 60 % at the first look
    sixty = next(t for t in range(1, 100) if seq.decide(seq.confidence_sequence(round(0.6 * t), t)) != seq.UNDECIDED)
    assert sixty <= 32 and seq.decide(seq.confidence_sequence(round(0.6 * sixty), sixty)) == seq.DECIDED_ABOVE
    rows = {r["p"]: r for r in seq.simulate_coverage(rates=(0.0, 0.6), reps=500)}
    assert rows[0.0]["mean_trials"] == 256  # the first look after 213
    assert rows[0.6]["mean_trials"] <= 64


def test_cell_status_for_a_planner():
    start = seq.cell_status(0, 32)
    assert start.decision == seq.UNDECIDED and start.straddles == ("degraded", "catastrophic")
    assert start.uncertainty == pytest.approx(start.interval[1]) and start.further_trials == 213 - 32
    bad = seq.cell_status(19, 32)
    assert bad.decision == seq.DECIDED_ABOVE and bad.uncertainty == 0.0 and bad.further_trials == 0
    assert bad.straddles == ()
    middle = seq.cell_status(5, 100)  # 5 %: undecided now, decided between later
    assert middle.decision == seq.UNDECIDED and middle.straddles == ("degraded", "catastrophic")
    assert 0 < middle.further_trials < 1000
    assert seq.decide(seq.confidence_sequence(0.05 * (100 + middle.further_trials), 100 + middle.further_trials)) \
        == seq.DECIDED_BETWEEN
    on_the_line = seq.cell_status(2, 100, cap=1 << 14)  # exactly 2 %: never decided at this estimate
    assert on_the_line.further_trials is None
    empty = seq.cell_status(0, 0)
    assert empty.estimate is None and empty.interval == (0.0, 1.0) and empty.further_trials is None
    # the closer to a threshold, the more trials it takes
    far, near = seq.cell_status(0.3, 1), seq.cell_status(0.15, 1)
    assert far.further_trials < near.further_trials
    paired = seq.paired_status(3, 1, 64)
    assert paired.interval == seq.paired_drop(3, 1, 64) and paired.decision == seq.UNDECIDED
    assert paired.further_trials > 0 and paired.estimate == pytest.approx(2 / 64)


def test_coverage_under_the_stopping_rule(capsys):
    rows = seq.simulate_coverage(reps=2000, seed=0)
    with capsys.disabled():
        print("\n" + "\n".join(seq.coverage_lines(rows)))
    for row in rows:
        assert row["cs_every_look"] >= 0.95, row  # time-uniform: p inside at every look
        assert row["cs_at_stop"] >= row["cs_every_look"]
        assert row["wrong_decisions"] <= 1 - row["cs_at_stop"] + 1e-12  # a wrong band needs a miss
    # Wilson is only recorded (see the module docstring); nothing is asserted about it


def test_paired_drop():
    lo_a, hi_a = seq.confidence_sequence(7, 200, alpha=0.025)
    lo_b, hi_b = seq.confidence_sequence(2, 200, alpha=0.025)
    assert seq.paired_drop(7, 2, 200) == (lo_a - hi_b, hi_a - lo_b)
    lo, hi = seq.paired_drop(7, 2, 200)
    assert lo < 5 / 200 < hi
    assert seq.paired_drop(0, 0, 0) == (-1.0, 1.0)
    all_lost = seq.paired_drop(50, 0, 50)  # every sample lost: the drop's upper end is 1 exactly
    assert all_lost == (seq.confidence_sequence(50, 50, 0.025)[0] - seq.confidence_sequence(0, 50, 0.025)[1], 1.0)
    assert seq.paired_drop(0, 50, 50)[0] == -1.0
    assert seq.decide(seq.paired_drop(0, 0, 300)) == seq.DECIDED_BELOW
    # wider than the fixed-n paired interval of intervals.py would be, never narrower than one CS at alpha
    one_lo, one_hi = seq.confidence_sequence(7, 200)
    assert hi - lo > one_hi - one_lo


def test_paired_drop_coverage():
    pairs = ((0.0, 0.0), (0.01, 0.01), (0.03, 0.01), (0.08, 0.02), (0.15, 0.01), (0.3, 0.1), (0.4, 0.0))
    rows = seq.simulate_paired(pairs, reps=2000, seed=0)
    for row in rows:
        print(row)
        assert row["cs_every_look"] >= 0.95, row
    assert rows[-1]["mean_trials"] < 200  # a 40-point drop is decided early


def test_describe():
    facts = seq.describe()
    assert facts["interval_method"] == seq.INTERVAL_METHOD and facts["alpha"] == 0.05
    assert "Ville" in facts["interval_description"] and "Howard" in facts["interval_description"]
