"""The results database, regression flags and the history page."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from click.testing import CliRunner

from edgeq.cli.main import main
from edgeq.errors import ConfigError
from edgeq.store.history import flag_regressions, sparkline
from edgeq.store.db import Record, Store


def record(p99, drop=0.01, device="pi5", sha="abc123", created=None, energy=None):
    return Record(id=uuid.uuid4().hex, kind="evaluate", created=created or time.time(), device=device,
                  model_name="m.keras", model_sha256=sha, runtime="ai_edge_litert 2.3.0", resolver="AUTO",
                  threads=1, verdict="robust", accuracy_drop=drop, p50_ms=p99 / 2, p99_ms=p99, energy_mj=energy)


@pytest.mark.parametrize("location", ["file", "sqlalchemy"])
def test_store_round_trip_and_filters(tmp_path, location):
    where = str(tmp_path / "h.sqlite") if location == "file" else f"sqlite:///{tmp_path / 'h2.sqlite'}"
    with Store.open(where) as store:
        store.add(record(10.0, created=1000.0))
        store.add(record(11.0, created=2000.0, device="pi4"))
        store.add(record(12.0, created=3000.0, sha="ffff"))
    with Store.open(where) as store:
        assert [r.p99_ms for r in store.query()] == [10.0, 11.0, 12.0]
        assert [r.p99_ms for r in store.query(device="pi5")] == [10.0, 12.0]
        assert [r.p99_ms for r in store.query(model="ff")] == [12.0]
        assert [r.p99_ms for r in store.query(model="m.keras", limit=1)] == [12.0]


def test_a_broken_database_is_a_clear_error(tmp_path):
    bad = tmp_path / "not-a-db.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigError, match="not-a-db.sqlite"):
        Store.open(str(bad))


def test_regressions_against_each_baseline():
    runs = [record(10.0), record(10.5), record(9.8), record(10.2), record(12.0, drop=0.05)]
    flags = [p.flags for p in flag_regressions(runs, "median")]
    assert flags[:4] == [[], [], [], []]
    assert any(f.startswith("p99_ms +") for f in flags[4]) and any("accuracy drop" in f for f in flags[4])
    assert flag_regressions(runs, "first")[1].flags == []  # +5% is within tolerance
    assert flag_regressions([record(10.0), record(11.5)], "previous")[1].regressed
    assert not flag_regressions([record(0.003), record(0.004)], "previous")[1].regressed  # microsecond noise
    assert sparkline([1, 2, None, 8]) == "▁▂ █"


def test_evaluate_records_history_and_history_flags_a_regression(example_tflite, small_inputs, tmp_path):
    db = str(tmp_path / "nightly.sqlite")
    runner = CliRunner()
    args = ["evaluate", str(example_tflite[0]), "--quant-model", str(example_tflite[1]), "--data", str(small_inputs),
            "-o", str(tmp_path / "out"), "--max-per-category", "10", "--db", db, "-q"]
    for _ in range(2):
        assert runner.invoke(main, args).exit_code == 0
    with Store.open(db) as store:  # a slow night, recorded as a device would have reported it
        last = store.query()[-1]
        store.add(Record(**{**last.__dict__, "id": uuid.uuid4().hex, "created": time.time() + 60,
                            "p99_ms": (last.p99_ms or 0) + 5.0}))
    shown = runner.invoke(main, ["history", "--db", db, "--json", str(tmp_path / "h.json"), "--fail-on-regression"])
    assert shown.exit_code == 1, shown.output
    assert "p99_ms +" in shown.output and "local" in shown.output
    payload = json.loads((tmp_path / "h.json").read_text())
    (one,) = payload["series"]
    assert len(one["runs"]) == 3 and one["runs"][-1]["flags"] and not one["runs"][0]["flags"]
    page = tmp_path / "history.html"
    assert runner.invoke(main, ["report", db, "-o", str(page)]).exit_code == 0
    text = page.read_text()
    assert "<svg" in text and "regressions vs median baseline" in text and "p99_ms +" in text
    rerendered = tmp_path / "again.html"
    assert runner.invoke(main, ["report", str(tmp_path / "out"), "-o", str(rerendered)]).exit_code == 0
    assert "<svg" in rerendered.read_text()


def test_no_history_and_an_unusable_database_never_lose_the_run(example_tflite, small_inputs, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = CliRunner().invoke(main, ["run", "--model", str(example_tflite[0]), "--inputs", str(small_inputs),
                                       "-o", str(tmp_path / "r"), "--db", str(blocker / "db.sqlite")])
    assert result.exit_code == 0
    assert "warning: not recorded in history" in result.output
    assert (tmp_path / "r" / "manifest.json").exists()
