"""The lab's shared history on a real PostgreSQL server: the same commands as on SQLite,
two writers at once, and a database that goes away while a job runs."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import pytest
from click.testing import CliRunner
from pg_server import PostgresServer

from edgeq.cli.main import main
from edgeq.errors import ConfigError
from edgeq.store.db import Record, Store


@pytest.fixture(scope="module")
def postgres():
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture
def fresh_db(postgres):
    """A database of its own per test, on the one server."""
    name = "t" + uuid.uuid4().hex[:10]
    with Store.open(postgres.url) as store:
        store.connection.commit()
        store.connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(f"CREATE DATABASE {name}")
    return postgres.url.rsplit("/", 1)[0] + "/" + name


def test_evaluate_history_and_report_on_postgresql(example_tflite, small_inputs, fresh_db, tmp_path):
    runner = CliRunner()
    args = ["evaluate", str(example_tflite[0]), "--quant-model", str(example_tflite[1]), "--data",
            str(small_inputs), "-o", str(tmp_path / "out"), "--max-per-category", "10", "--db", fresh_db, "-q"]
    for _ in range(2):
        done = runner.invoke(main, args)
        assert done.exit_code == 0 and "not recorded" not in done.output, done.output
    with Store.open(fresh_db) as store:
        rows = store.query()
    assert [r.kind for r in rows] == ["evaluate", "evaluate"] and rows[0].device == "local"
    assert rows[0].model_sha256 == rows[1].model_sha256 and rows[0].created <= rows[1].created
    shown = runner.invoke(main, ["history", "--db", fresh_db, "--json", str(tmp_path / "h.json")])
    assert shown.exit_code == 0, shown.output
    (series,) = json.loads((tmp_path / "h.json").read_text())["series"]
    assert len(series["runs"]) == 2
    page = tmp_path / "history.html"
    assert runner.invoke(main, ["report", fresh_db, "-o", str(page)]).exit_code == 0
    assert "<svg" in page.read_text()


WRITER = """
import sys, time, uuid
from edgeq.store.db import Record, Store
url, who, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
with Store.open(url) as store:
    for i in range(count):
        store.add(Record(id=uuid.uuid4().hex, kind="run", created=time.time(), device=who, p99_ms=float(i)))
"""


def test_two_writers_at_once_on_a_new_database(fresh_db):
    """Both create the table and write at the same moment: every row lands, neither fails."""
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, fresh_db, f"ci-{n}", "40"], stderr=subprocess.PIPE,
                                text=True) for n in range(2)]
    for writer in writers:
        _, err = writer.communicate(timeout=300)
        assert writer.returncode == 0, err[-2000:]
    with Store.open(fresh_db) as store:
        rows = store.query()
    assert sorted(r.device for r in rows) == ["ci-0"] * 40 + ["ci-1"] * 40
    assert len({r.id for r in rows}) == 80


def test_database_down_during_a_run_keeps_the_results_and_says_so(postgres, fresh_db, example_tflite,
                                                                   small_inputs, tmp_path, monkeypatch):
    with Store.open(fresh_db) as store:
        store.add(Record(id=uuid.uuid4().hex, kind="run", created=time.time(), device="before"))
    monkeypatch.setattr("edgeq.store.db.CONNECT_ATTEMPTS", (0.0, 0.1))
    postgres.pause()
    try:
        out = tmp_path / "run"
        done = CliRunner().invoke(main, ["run", "--device", "local", "--model", str(example_tflite[1]),
                                         "--inputs", str(small_inputs), "-o", str(out), "--db", fresh_db])
    finally:
        postgres.resume()
    assert done.exit_code == 0, done.output  # the measurement is good; only its history row is missing
    warning = [line for line in done.output.splitlines() if "not recorded in history" in line]
    assert len(warning) == 1 and str(out) in warning[0] and "after 2 tries" in warning[0], done.output
    assert "Traceback" not in done.output and (out / "manifest.json").exists()
    with Store.open(fresh_db) as store:  # what was there survives; the server is back
        assert [r.device for r in store.query()] == ["before"]


def test_a_bad_url_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"postgresql\+psycopg://edgeq:\*\*\*@127.0.0.1:1/x: cannot connect"):
        Store.open("postgresql+psycopg://edgeq:secret@127.0.0.1:1/x")
    with pytest.raises(ConfigError, match="not a usable database URL"):
        Store.open("nosuchdialect://x/y")
