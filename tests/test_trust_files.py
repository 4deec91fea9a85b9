"""Issue 23: bad input is exit 2 and one line naming the file/flag and the reason; a device
failure 3, a failed gate 1, Ctrl-C 130; no traceback, no hang; nothing written outside the
requested place, nothing lost; results on stdout, diagnostics on stderr.

1. an output that is one of the command's inputs is refused, naming both;
2. an .npz whose zip CRC is wrong is refused (file and member named), a block at a time;
3. a garbage report.json is refused; NULL/NaN rows in the history (SQLite and PostgreSQL)
   show as — or are skipped with a note;
4. every password form in a database URL is redacted wherever the URL is shown;
5. streams: ``--json -`` owns stdout, ``-`` is refused where a file is needed, Ctrl-C is 130,
   ``inputs search MODEL`` leaves no model copy behind, ``fix -o DIR`` onto a folder is one line;
6. labels out of range and a ``--quantized`` model made from another model are refused.

Real CLI, real models, real files, a real PostgreSQL server.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import tracemalloc
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeq.cli.main import main
from edgeq.evaluate import EXAMPLE_DATA, EXAMPLE_MODEL

EDGEQ = [sys.executable, "-m", "edgeq"]
PROGRESS = re.compile(r"^\[\s*\d+\.\ds\] ")  # a progress line on stderr (non-TTY), not part of the error
NOISE = re.compile(r"^(INFO: Created TensorFlow Lite|WARNING: All log messages|I0000 |W0000 |To enable the)")


def one_line_error(args, needles, code=2, absent=()):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == code, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception  # no traceback
    lines = [line for line in result.output.splitlines()
             if line.strip() and not PROGRESS.match(line) and not NOISE.match(line) and line.startswith("edgeq:")]
    assert len(lines) == 1 and lines[0].startswith("edgeq: error: "), result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    for needle in absent:
        assert needle not in lines[0], lines[0]
    return lines[0]


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".part" in p.name or p.name.startswith(".report-"))


@pytest.fixture
def pair(example_tflite):
    return [str(p) for p in example_tflite]


@pytest.fixture
def data_copy(tmp_path) -> Path:
    target = tmp_path / "data.npz"
    target.write_bytes(EXAMPLE_DATA.read_bytes())
    return target


# ---- 1. outputs written over inputs -----------------------------------------------------------

def test_inputs_risky_refuses_to_write_over_its_data(data_copy, tmp_path):
    before = sha(data_copy)
    one_line_error(["inputs", "risky", "--data", str(data_copy), "-o", str(data_copy), "--max-per-category", "5"],
                   ["--output", "--data", "data.npz", "same file"])
    assert sha(data_copy) == before and leftovers(tmp_path) == []


def test_a_link_to_the_data_is_the_same_file(data_copy, tmp_path):
    link = tmp_path / "link.npz"
    link.symlink_to(data_copy)
    before = sha(data_copy)
    one_line_error(["inputs", "risky", "--data", str(data_copy), "-o", str(link), "--max-per-category", "5"],
                   ["--output", "link.npz", "--data", "data.npz"])
    hard = tmp_path / "hard.npz"
    os.link(data_copy, hard)
    one_line_error(["inputs", "risky", "--data", str(hard), "-o", str(data_copy), "--max-per-category", "5"],
                   ["--output", "--data", "hard.npz"])
    assert sha(data_copy) == before and link.is_symlink()


def minimal_report(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps({"verdict": "robust", "worst_category": "clean",
                                                    "overall": {"n": 4}, "categories": {"clean": {"n": 4}}}))
    return folder


def test_report_refuses_to_replace_its_report_json_with_html(tmp_path):
    folder = minimal_report(tmp_path / "out")
    before = sha(folder / "report.json")
    one_line_error(["report", str(folder), "-o", str(folder / "report.json")],
                   ["--output", "report.json", "SOURCE", "same file"])
    assert sha(folder / "report.json") == before
    page = tmp_path / "page.html"  # the same folder to another file still works
    result = CliRunner().invoke(main, ["report", str(folder), "-o", str(page)])
    assert result.exit_code == 0, result.output
    assert page.read_text().startswith("<!DOCTYPE html>")


def test_report_refuses_to_write_over_its_database(tmp_path):
    from edgeq.store.db import Record, Store

    db = tmp_path / "h.sqlite"
    with Store.open(str(db)) as store:
        store.add(Record(id="a", kind="run", created=time.time(), device="pi", p99_ms=1.0))
    before = sha(db)
    one_line_error(["report", str(db), "-o", str(db)], ["--output", "h.sqlite", "SOURCE"])
    assert sha(db) == before


def test_report_refuses_to_write_into_a_run_it_reads(run_dirs, tmp_path):
    folder = minimal_report(tmp_path / "out")
    report = json.loads((folder / "report.json").read_text())
    report["runs"] = {"float": str(run_dirs[0]), "quant": str(run_dirs[1])}
    (folder / "report.json").write_text(json.dumps(report))
    target = run_dirs[1] / "meta.json"
    before = sha(target)
    one_line_error(["report", str(folder), "-o", str(target)], ["--output", "meta.json", "quant run"])
    assert sha(target) == before


def test_two_outputs_of_one_command_naming_one_file_are_refused(tmp_path):
    # the run folders need not exist: refused before any work
    one_line_error(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--json", str(tmp_path / "x"),
                    "--html", str(tmp_path / "x")], ["--html", "--json", "the same file"])
    assert list(tmp_path.iterdir()) == []


def test_compare_refuses_to_write_into_a_run_folder_it_reads(run_dirs):
    target = run_dirs[0] / "run.json"
    before = sha(target)
    one_line_error(["compare", str(run_dirs[0]), str(run_dirs[1]), "--json", str(target)],
                   ["--json", "run.json", "inside the input REF"])
    assert sha(target) == before


def test_soak_junit_or_json_over_its_model_is_refused_before_any_device_time(pair, small_inputs, tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(Path(pair[1]).read_bytes())
    before = sha(model)
    for flag in ("--junit", "--json"):
        one_line_error(["soak", "--device", "local", "--model", str(model), "--inputs", str(small_inputs),
                        "--duration", "2s", "--window", "1s", "-o", str(tmp_path / "soak"), flag, str(model),
                        "--no-history"], [flag, "m.tflite", "--model"])
    assert sha(model) == before and not (tmp_path / "soak").exists()


def test_an_output_folder_holding_a_soak_is_refused(tmp_path):
    from edgeq.cli.common import check_folder_free
    from edgeq.errors import ConfigError

    check_folder_free(tmp_path / "new", "--outdir", "soak.json")  # nothing there: fine
    (tmp_path / "soak.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"--outdir .*: already holds soak.json .*--attach"):
        check_folder_free(tmp_path, "--outdir", "soak.json", f"follow it with --attach {tmp_path}")


def test_a_second_soak_into_a_running_soaks_folder_is_refused(pair, small_inputs, tmp_path):
    from conftest import write_inventory

    inventory = write_inventory(tmp_path / "edgeq.toml", {
        name: {"transport": "local", "python": sys.executable, "workdir": str(tmp_path / name)}
        for name in ("board-a", "board-b")})
    soak = ["soak", "--inventory", str(inventory), "--model", pair[1], "--inputs", str(small_inputs),
            "--duration", "60s", "--window", "5s", "-o", str(tmp_path / "s"), "--detach", "--no-history"]
    first = CliRunner().invoke(main, soak + ["--device", "board-a"])
    assert first.exit_code == 0, first.output
    handle = (tmp_path / "s" / "soak.json").read_text()
    try:
        one_line_error(soak + ["--device", "board-b"], ["--outdir", "soak.json", "--attach"])
        assert (tmp_path / "s" / "soak.json").read_text() == handle
    finally:
        if json.loads((tmp_path / "s" / "soak.json").read_text())["device"] == "board-b":
            CliRunner().invoke(main, ["soak", "--inventory", str(inventory), "--attach", str(tmp_path / "s"),
                                      "--stop", "--no-history"])
        (tmp_path / "s" / "soak.json").write_text(handle)
        CliRunner().invoke(main, ["soak", "--inventory", str(inventory), "--attach", str(tmp_path / "s"),
                                  "--stop", "--no-history"])


# ---- 2. a damaged .npz -------------------------------------------------------------------------

def damaged(tmp_path: Path, x: np.ndarray, y: np.ndarray | None = None, where: float = 0.5,
            name: str = "bad.npz") -> Path:
    """An uncompressed .npz (as np.savez and edgeq write them) with one byte of x's data flipped."""
    path = tmp_path / name
    arrays = {"x": x} if y is None else {"x": x, "y": y}
    np.savez(path, **arrays)
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("x.npy")
    raw = bytearray(path.read_bytes())
    name_len, extra_len = int.from_bytes(raw[info.header_offset + 26:info.header_offset + 28], "little"), \
        int.from_bytes(raw[info.header_offset + 28:info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len
    at = start + 128 + int((info.file_size - 129) * where)  # past the .npy header, in the data
    raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(zipfile.BadZipFile, match="CRC"):  # numpy refuses it
        np.load(path)["x"]
    return path


def test_inputs_check_and_run_refuse_a_npz_whose_crc_is_wrong(pair, tmp_path):
    with np.load(EXAMPLE_DATA) as d:
        x, y = d["x"][:40], d["y"][:40]
    bad = damaged(tmp_path, x, y)
    one_line_error(["inputs", "check", str(bad)], ["bad.npz", "[x]", "CRC"])
    one_line_error(["run", "--model", pair[0], "--inputs", str(bad), "-o", str(tmp_path / "r"), "--no-history"],
                   ["bad.npz", "[x]", "CRC"])
    assert not (tmp_path / "r").exists()


def test_a_large_member_is_checked_a_block_at_a_time(tmp_path):
    from edgeq.errors import InputSetError
    from edgeq.inputs.inputset import load_inputset
    from edgeq.inputs.npz import BLOCK_BYTES, verify_crcs

    x = np.random.default_rng(0).random((6 * BLOCK_BYTES // 256, 64), dtype=np.float32)  # 24 MiB, read as DiskArray
    bad = damaged(tmp_path, x, where=0.97)
    tracemalloc.start()
    try:
        with pytest.raises(InputSetError, match=r"bad\.npz \[x\]: is damaged: its zip CRC-32"):
            verify_crcs(bad)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, peak  # a block, not the member (24 MiB)
    with pytest.raises(InputSetError, match="CRC"):
        load_inputset(bad)
    good = tmp_path / "good.npz"
    np.savez(good, x=x)
    assert load_inputset(good).n == len(x)


# ---- 3. garbage report.json; NULL/NaN history rows ---------------------------------------------

GARBAGE = {
    "no-verdict": ('{"hello": 1}', ["no 'verdict'"]),
    "list": ("[1, 2]", ["not an object"]),
    "not-json": ("{bad", ["not valid JSON"]),
    "empty": ("", ["not valid JSON"]),
    "odd-verdict": ('{"verdict": "great", "categories": {}}', ["'verdict'", "great"]),
    "no-categories": ('{"verdict": "robust"}', ["no 'categories'"]),
    "categories-list": ('{"verdict": "robust", "categories": [1]}', ["'categories'"]),
    "runs-text": ('{"verdict": "robust", "categories": {}, "runs": "x"}', ["'runs'"]),
}


@pytest.mark.parametrize("case", sorted(GARBAGE))
def test_report_on_a_garbage_report_json_is_one_line_and_writes_nothing(tmp_path, case):
    text, needles = GARBAGE[case]
    folder = tmp_path / case
    folder.mkdir()
    (folder / "report.json").write_text(text)
    page = tmp_path / "page.html"
    one_line_error(["report", str(folder), "-o", str(page)], [f"{case}/report.json"] + needles)
    assert not page.exists() and leftovers(tmp_path) == []


def odd_rows(store) -> None:
    """Rows another writer could leave: no time, NaN/inf numbers, text in a number column, NULL text."""
    from edgeq.store.db import Record

    now = time.time()
    store.add(Record(id="good-1", kind="evaluate", created=now - 3600, device="pi", model_sha256="abc",
                     verdict="robust", accuracy_drop=0.01, p50_ms=1.0, p99_ms=2.0))
    store.add(Record(id="nan-2", kind="evaluate", created=now, device="pi", model_sha256="abc",
                     accuracy_drop=float("nan"), p50_ms=float("nan"), p99_ms=float("inf"),
                     energy_mj=float("-inf"), float_p50_ms=float("nan")))
    store.add(Record(id="no-time", kind=None, created=None, device="pi", model_sha256="abc", p99_ms=3.0))
    store.add(Record(id="nan-time", kind="run", created=float("nan"), device=None))


def check_history_and_report(db: str, tmp_path: Path) -> None:
    runner = CliRunner()
    shown = runner.invoke(main, ["history", "--db", db, "--json", str(tmp_path / "h.json")])
    assert shown.exit_code == 0, (shown.output, shown.exception)
    assert "—" in shown.output and "Traceback" not in shown.output
    note = [line for line in shown.output.splitlines() if line.startswith("note:")]
    assert len(note) == 1 and "2 row(s)" in note[0] and "no-time" in note[0] and "nan-time" in note[0], shown.output
    payload = json.loads((tmp_path / "h.json").read_text())
    (series,) = payload["series"]
    assert [r["id"] for r in series["runs"]] == ["good-1", "nan-2"]
    assert series["runs"][1]["p99_ms"] is None and series["runs"][1]["accuracy_drop"] is None
    assert sorted(r["id"] for r in payload["skipped_rows"]) == ["nan-time", "no-time"]
    page = tmp_path / "history.html"
    done = runner.invoke(main, ["report", db, "-o", str(page)])
    assert done.exit_code == 0, (done.output, done.exception)
    text = page.read_text()
    assert "<svg" in text and "2 row(s) skipped" in text and "—" in text


def test_history_and_report_on_null_and_nan_rows_sqlite(tmp_path):
    from edgeq.store.db import Store

    db = str(tmp_path / "odd.sqlite")
    with Store.open(db) as store:
        odd_rows(store)
    with sqlite3.connect(db) as raw:  # SQLite keeps text in a REAL column
        raw.execute("INSERT INTO edgeq_runs (id, kind, created, device, model_sha256, p99_ms, threads) "
                    "VALUES ('text-3', 'run', ?, 'pi', 'abc', 'fast', 'one')", (time.time() - 30,))
    with Store.open(db) as store:
        rows = store.query()
    assert [r.id for r in rows] == ["good-1", "text-3", "nan-2"]
    assert rows[1].p99_ms is None and rows[1].threads is None
    with sqlite3.connect(db) as raw:
        raw.execute("DELETE FROM edgeq_runs WHERE id = 'text-3'")
    check_history_and_report(db, tmp_path)


@pytest.fixture(scope="module")
def postgres():
    from pg_server import PostgresServer

    server = PostgresServer().start()
    yield server
    server.stop()


def fresh_database(postgres) -> str:
    from edgeq.store.db import Store

    name = "t" + uuid.uuid4().hex[:10]
    with Store.open(postgres.url) as store:
        store.connection.commit()
        store.connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(f"CREATE DATABASE {name}")
    return postgres.url.rsplit("/", 1)[0] + "/" + name


def test_history_and_report_on_null_and_nan_rows_postgresql(postgres, tmp_path):
    from edgeq.store.db import Store

    db = fresh_database(postgres)
    with Store.open(db) as store:  # PostgreSQL keeps NaN and ±Infinity in REAL columns
        odd_rows(store)
        raw = store.connection
        with raw.begin():
            raw.exec_driver_sql("UPDATE edgeq_runs SET p50_ms = 'NaN'::real, created = 'NaN'::real "
                                "WHERE id = 'nan-time'")
    check_history_and_report(db, tmp_path)


# ---- 4. passwords in database URLs ------------------------------------------------------------

SECRETS = ("s3cr3t-pw", "p@ss:w0rd", "p%40ss%3Aw0rd", "k3y@z", "k3y%40z")


@pytest.mark.parametrize("url, shown", [
    ("postgresql://u:s3cr3t-pw@h/db", "postgresql://u:***@h/db"),
    ("postgresql://u@h/db?password=s3cr3t-pw", "postgresql://u@h/db?password=***"),
    ("postgresql://u:p%40ss%3Aw0rd@h:5432/db", "postgresql://u:***@h:5432/db"),
    ("postgresql://u:p@ss:w0rd@h/db", "postgresql://u:***@h/db"),
    ("postgresql+psycopg://u@h/db?sslmode=require&PASSWORD=p%40ss%3Aw0rd&x=1",
     "postgresql+psycopg://u@h/db?sslmode=require&PASSWORD=***&x=1"),
    ("postgresql://h/db?password=k3y@z", "postgresql://h/db?password=***"),
    ("postgresql://u:s3cr3t-pw@h/db?sslpassword=k3y%40z", "postgresql://u:***@h/db?sslpassword=***"),
    ("postgresql://u:pa/ss?w0rd@h/db", "postgresql://u:***@h/db"),
    ("sqlite:////tmp/a@b/h.sqlite", "sqlite:////tmp/a@b/h.sqlite"),
    ("/home/me/h.sqlite", "/home/me/h.sqlite"),
])
def test_every_password_form_is_redacted(url, shown):
    from edgeq.store.db import redact_url

    assert redact_url(url) == shown


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, text


@pytest.mark.parametrize("url", [
    "postgresql+psycopg://edgeq@127.0.0.1:1/x?password=s3cr3t-pw",
    "postgresql+psycopg://edgeq:p%40ss%3Aw0rd@127.0.0.1:1/x",
    "postgresql+psycopg://edgeq@127.0.0.1:1/x?sslpassword=k3y%40z&password=p%40ss%3Aw0rd",
])
def test_an_unreachable_database_never_shows_its_password(url, pair, small_inputs, tmp_path, monkeypatch):
    monkeypatch.setattr("edgeq.store.db.CONNECT_ATTEMPTS", (0.0,))
    line = one_line_error(["history", "--db", url], ["127.0.0.1:1", "cannot connect"])
    assert_no_secret(line)
    line = one_line_error(["report", url, "-o", str(tmp_path / "h.html")], ["127.0.0.1:1"])
    assert_no_secret(line)
    ran = CliRunner().invoke(main, ["run", "--model", pair[0], "--inputs", str(small_inputs), "-o",
                                    str(tmp_path / "r"), "--db", url])
    assert ran.exit_code == 0 and "not recorded in history" in ran.output, ran.output
    assert_no_secret(ran.output)


def test_a_working_database_url_with_a_password_is_shown_redacted(postgres, tmp_path):
    db = fresh_database(postgres) + "?password=s3cr3t-pw"  # trust authentication ignores it
    run = subprocess.run(EDGEQ + ["history", "--db", db, "--json", "-"], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["database"].endswith("?password=***")
    assert "no runs recorded in" in run.stderr  # JSON owns stdout: the human line went to stderr
    assert_no_secret(run.stdout + run.stderr)


# ---- 5. streams, '-', Ctrl-C, temporary files, fix onto a folder ------------------------------

@pytest.fixture
def run_dirs(example_tflite, small_inputs, local, tmp_path):
    from edgeq.devices.run import RunSpec, run_on_device

    dirs = [tmp_path / "runs" / "float", tmp_path / "runs" / "quant"]
    run_on_device(local, [RunSpec(model=example_tflite[0], inputs=small_inputs),
                          RunSpec(model=example_tflite[1], inputs=small_inputs)], dirs)
    return dirs


def edgeq(args, cwd, code=0, env=None, timeout=300):
    run = subprocess.run(EDGEQ + args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert run.returncode == code, run.stdout + run.stderr
    return run


def test_run_json_to_stdout_is_the_whole_of_stdout(pair, small_inputs, tmp_path):
    run = edgeq(["run", "--model", pair[0], "--inputs", str(small_inputs), "-o", "r", "--no-history",
                 "--json", "-"], tmp_path)
    assert json.loads(run.stdout)["samples"] == 40
    assert "40 samples on local" in run.stderr


def test_convert_json_to_stdout_is_the_whole_of_stdout(pair, tmp_path):
    run = edgeq(["convert", pair[0], "-o", "m", "--json", "-"], tmp_path)
    card = json.loads(run.stdout)
    assert "float" in card and "digits_mlp.float.tflite" in run.stderr


@pytest.mark.parametrize("args", [
    ["compare", "a", "b", "--html", "-"],
    ["soak", "--device", "local", "--model", "m.tflite", "--inputs", "i.npz", "--junit", "-", "--no-history"],
    ["report", "out", "-o", "-"],
    ["inputs", "risky", "--data", str(EXAMPLE_DATA), "-o", "-"],
])
def test_a_dash_where_a_file_is_needed_is_refused(tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    flag = args[args.index("-") - 1]
    one_line_error(args, ["'-' (stdout) is only for --json", {"-o": "--output"}.get(flag, flag)])
    assert list(tmp_path.iterdir()) == []  # no file named "-"


def test_junit_is_written_whole_through_a_temporary_name(tmp_path):
    from edgeq.errors import ConfigError
    from edgeq.reports.soak import junit_xml, summarize, write_junit

    suites = [(dict(summarize([]), gates=[]), "pi", "m.tflite")]
    target = tmp_path / "junit.xml"
    target.write_text("last night")
    write_junit(target, suites)
    assert target.read_text() == junit_xml(suites) and sorted(p.name for p in tmp_path.iterdir()) == ["junit.xml"]
    for bad in ("-", str(tmp_path)):
        with pytest.raises(ConfigError, match="--junit"):
            write_junit(bad, suites)


def test_ctrl_c_exits_130_with_one_line(pair, small_inputs, tmp_path):
    """A real SIGINT to the whole process group, as a terminal sends it, in the middle of a run."""
    proc = subprocess.Popen(EDGEQ + ["run", "--model", pair[0], "--inputs", str(small_inputs), "-o", "r",
                                     "--no-history", "--min-duration", "60"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            # as a terminal: a CI shell may start background jobs with SIGINT ignored,
                            # and Python then keeps ignoring it (no KeyboardInterrupt ever)
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "r").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2.0)  # the agent is running its timed passes
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)  # no hang
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Aborted" not in err
    lines = [line for line in err.splitlines() if line.strip() and not PROGRESS.match(line)]
    assert lines == ["edgeq: interrupted (Ctrl-C)"], err
    assert not (tmp_path / "r" / "manifest.json").exists()


def test_ctrl_c_anywhere_in_a_command_is_130(monkeypatch, tmp_path):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("edgeq.store.db.Store.open", interrupted)
    result = CliRunner().invoke(main, ["history", "--db", str(tmp_path / "h.sqlite")])
    assert result.exit_code == 130 and result.output.strip() == "edgeq: interrupted (Ctrl-C)", result.output
    monkeypatch.setattr("edgeq.inputs.inputset.load_inputset", interrupted)
    result = CliRunner().invoke(main, ["inputs", "check", str(EXAMPLE_DATA)])
    assert result.exit_code == 130, result.output
    # the edgeq program ignores a second Ctrl-C while it exits; a host calling it in-process keeps its own
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_second_ctrl_c_while_edgeq_exits_does_not_kill_it(tmp_path):
    """The handled first Ctrl-C is followed by SIG_IGN: a second SIGINT during the exit (after Python put
    SIGINT's default action back, it would kill the process: returncode -2) leaves the exit code 130."""
    script = ("import os, signal, sys\n"
              "import edgeq.cli.common as common\n"
              "sys.argv = ['edgeq']\n"
              "try:\n"
              "    common.exit_interrupted('edgeq: interrupted')\n"
              "finally:\n"
              "    os.kill(os.getpid(), signal.SIGINT)  # the second one, as the process exits\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert done.returncode == 130 and done.stderr.strip() == "edgeq: interrupted", (done.returncode, done.stderr)


@pytest.mark.parametrize("command", ["search", "worst"])
def test_inputs_search_and_worst_leave_no_model_copy_behind(tmp_path, command):
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    env = dict(os.environ, TMPDIR=str(private_tmp))
    edgeq(["inputs", command, str(EXAMPLE_MODEL), "--data", str(EXAMPLE_DATA), "--budget", "64", "-q"],
          tmp_path, env=env)
    assert [p.name for p in private_tmp.iterdir()] == []


def test_fix_onto_a_folder_named_like_its_target_is_one_line(example_tflite, small_inputs, tmp_path):
    outdir = tmp_path / "fixed"
    (outdir / "digits_mlp.fixed.tflite").mkdir(parents=True)
    one_line_error(["fix", str(example_tflite[0]), "--inputs", str(small_inputs), "-o", str(outdir)],
                   ["--outdir", "digits_mlp.fixed.tflite", "is a folder"])
    assert sorted(p.name for p in outdir.iterdir()) == ["digits_mlp.fixed.tflite"]  # refused before any work
    (outdir / "digits_mlp.fixed.tflite").rmdir()
    (outdir / "digits_mlp.fix.json").mkdir()
    one_line_error(["fix", str(example_tflite[0]), "--inputs", str(small_inputs), "-o", str(outdir)],
                   ["--outdir", "digits_mlp.fix.json", "is a folder"])


# ---- 6. labels out of range; a quantized model made from another model --------------------------

@pytest.fixture
def ten_labels(tmp_path) -> Path:
    with np.load(EXAMPLE_DATA) as d:
        x, y = d["x"][:200], d["y"][:200].copy()
    y[3] = 10
    np.savez(tmp_path / "ten.npz", x=x, y=y)
    return tmp_path / "ten.npz"


def test_inputs_worst_refuses_labels_the_model_cannot_produce(pair, ten_labels):
    one_line_error(["inputs", "worst", "--float", pair[0], "--quantized", pair[1], "--data", str(ten_labels),
                    "--budget", "64"], ["[y]", "outside 0..9", "from 0 to 10", "10 classes"])


@pytest.mark.parametrize("command", ["localize", "fix"])
def test_localize_and_fix_refuse_labels_the_model_cannot_produce(pair, ten_labels, tmp_path, command):
    one_line_error([command, pair[0], "--data", str(ten_labels), "-o", str(tmp_path / "w")],
                   ["ten.npz [y]", "outside 0..9", "10 classes"])


@pytest.fixture(scope="module")
def other_model(tmp_path_factory) -> Path:
    """A quantized model of another network (32 inputs, not the example's 64)."""
    import keras

    from edgeq.models.convert import convert_model

    folder = tmp_path_factory.mktemp("other")
    model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(64), keras.layers.Dense(10)])
    model.save(folder / "other.keras")
    return convert_model(folder / "other.keras", folder).quant_path


@pytest.mark.parametrize("command", ["localize", "fix"])
def test_localize_and_fix_refuse_a_quantized_model_of_another_model(pair, small_inputs, other_model, tmp_path,
                                                                    command):
    line = one_line_error([command, pair[0], "--inputs", str(small_inputs), "--quantized", str(other_model),
                           "-o", str(tmp_path / "w")],
                          ["--quantized", "other.dynamic-range.tflite", "not made from MODEL", "digits_mlp",
                           "different input signatures"])
    # the same check inputs search makes
    search = one_line_error(["inputs", "search", "--float", pair[0], "--quantized", str(other_model), "--data",
                             str(EXAMPLE_DATA)], ["different input signatures"])
    assert search.split("have different input signatures")[1] in line
