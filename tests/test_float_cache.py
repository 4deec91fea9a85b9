"""Float outputs reused across evaluations (``store.run_cache``): end to end on the real agent (local and
over the loopback sshd), the key, the checks, the bound and concurrent writers.

Every test has its own EDGEQ_CACHE (the user's cache is never touched) and turns the cache on explicitly
(the suite may run with EDGEQ_FLOAT_CACHE=off elsewhere)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeq.cli.main import main
from edgeq.devices import rounds as rounds_module
from edgeq.devices.inventory import Device
from edgeq.devices.rounds import open_rounds
from edgeq.devices.run import RunSpec
from edgeq.evaluate import EXAMPLE_DATA
from edgeq.files import sha256_file
from edgeq.results import RunResult
from edgeq.rows import run_rows, take_run_rows
from edgeq.store.run_cache import RunCache, cache_enabled, key_fields, key_for

SUITE = Path("inputs") / "risky.npz"
CELLS = ("verdict", "worst_category", "worst_severity", "overall", "categories", "outputs")


@pytest.fixture
def cache_root(monkeypatch, tmp_path) -> Path:
    monkeypatch.setenv("EDGEQ_CACHE", str(tmp_path / "edgeq-cache"))
    monkeypatch.setenv("EDGEQ_FLOAT_CACHE", "on")
    monkeypatch.delenv("EDGEQ_FLOAT_CACHE_MB", raising=False)
    return tmp_path / "edgeq-cache" / "float-runs"


@pytest.fixture
def jobs(monkeypatch) -> list[tuple[str, int]]:
    """(label, rows) of every job the agent ran through rounds (a fixed evaluation with the cache on runs
    through them too)."""
    seen = []
    real = rounds_module._run_one

    def spy(device, deployer, session, item, *args, **kwargs):
        seen.append((item.spec.label, item.samples))
        return real(device, deployer, session, item, *args, **kwargs)

    monkeypatch.setattr(rounds_module, "_run_one", spy)
    return seen


@pytest.fixture(scope="module")
def float16_quant(example_tflite, tmp_path_factory) -> Path:
    """Another quantization policy of the same float model (ai-edge-quantizer float16, no TensorFlow)."""
    from edgeq.models.convert import convert_model

    return convert_model(example_tflite[0], tmp_path_factory.mktemp("f16"), policy="float16").quant_path


def evaluate(float_model, quant_model, out, *args) -> tuple[dict, str]:
    result = CliRunner().invoke(main, ["evaluate", str(float_model), "--quant-model", str(quant_model), "--data",
                                       str(EXAMPLE_DATA), "--max-per-category", "100", "-o", str(out),
                                       "--no-history", "-q", *map(str, args)])
    assert result.exit_code == 0, result.output
    return json.loads((Path(out) / "report.json").read_text()), result.output


def cells(report: dict) -> dict:
    return {k: report.get(k) for k in CELLS}


def entries(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []


# ---- the key --------------------------------------------------------------------------------------------------

FACTS = {"runtime": {"name": "ai_edge_litert", "version": "2.3.0"}, "arch": "x86_64", "hostname": "a",
         "cpu_model": "x", "agent_sha256": "0" * 64}
BASE = dict(model_sha256="a" * 64, inputs_sha256="b" * 64, device_name="local", facts=FACTS, resolver="AUTO",
            threads=1, batch_size=1)


def test_every_part_of_the_key_changes_it_and_nothing_else_does():
    key = key_for(**BASE)
    assert key == key_for(**BASE) and len(key) == 64 and key.fields == key_fields(**BASE)
    # facts the outputs do not depend on (host name, the agent's build, the CPU's name) leave the key alone
    assert key == key_for(**dict(BASE, facts=dict(FACTS, hostname="b", cpu_model="y", agent_sha256="1" * 64)))
    changed = [dict(BASE, model_sha256="c" * 64), dict(BASE, inputs_sha256="c" * 64), dict(BASE, device_name="pi"),
               dict(BASE, facts=dict(FACTS, runtime={"name": "tflite_runtime", "version": "2.3.0"})),
               dict(BASE, facts=dict(FACTS, runtime={"name": "ai_edge_litert", "version": "2.4.0"})),
               dict(BASE, facts=dict(FACTS, arch="aarch64")), dict(BASE, resolver="BUILTIN_REF"),
               dict(BASE, threads=4), dict(BASE, batch_size=8)]
    keys = {key_for(**c) for c in changed}
    assert len(keys) == len(changed) and key not in keys


def test_the_cache_is_off_when_asked(monkeypatch):
    monkeypatch.setenv("EDGEQ_FLOAT_CACHE", "off")
    assert not cache_enabled()
    monkeypatch.setenv("EDGEQ_FLOAT_CACHE", "on")
    assert cache_enabled() and not cache_enabled(False)


# ---- end to end ---------------------------------------------------------------------------------------------------

def test_a_new_quantized_model_reuses_every_float_row(example_tflite, float16_quant, cache_root, jobs, tmp_path):
    float_model, dynamic = example_tflite
    first, _ = evaluate(float_model, dynamic, tmp_path / "one", "--sampling", "fixed")
    assert first["float_reused"] is None and [label for label, _ in jobs] == ["float", "quant"]
    (entry,) = entries(cache_root)
    assert len(run_rows(RunResult.load(entry))) == first["overall"]["n"]
    assert json.loads((entry / "key.json").read_text())["fields"]["device"] == "local"

    jobs.clear()
    second, _ = evaluate(float_model, float16_quant, tmp_path / "two", "--sampling", "fixed")
    assert [label for label, _ in jobs] == ["quant"]  # the float model was not run
    n = second["overall"]["n"]
    assert second["float_reused"] == {"rows": n, "of": n, "key": entry.name, "cache": str(entry)}
    assert f"float outputs: {n:,} of {n:,} rows reused from the cache" in " ".join(second["notes"])
    assert second["sampling"]["float_latency"] == "cached"
    assert second["latency_ms"]["float"] == first["latency_ms"]["float"]  # the cached run's latency
    linked = tmp_path / "two" / "runs" / "float"
    assert RunResult.load(linked).n == n and second["runs"]["float"] == str(linked)

    without, _ = evaluate(float_model, float16_quant, tmp_path / "three", "--sampling", "fixed", "--no-float-cache")
    assert without["float_reused"] is None and cells(without) == cells(second)

    jobs.clear()  # adaptive: every row it takes is cached, so no float round runs at all
    adaptive, _ = evaluate(float_model, float16_quant, tmp_path / "four")
    assert [label for label, _ in jobs] == ["quant"] * len(adaptive["sampling"]["rounds"])
    rows = adaptive["sampling"]["rows_run"]
    assert adaptive["float_reused"]["rows"] == adaptive["float_reused"]["of"] == rows
    assert not list((tmp_path / "four" / "rounds" / "float").glob("round-*"))
    assert adaptive["sampling"]["float_latency"] == "cached"
    plain, _ = evaluate(float_model, float16_quant, tmp_path / "five", "--no-float-cache")
    assert cells(plain) == cells(adaptive)
    assert entries(cache_root) == [entry]


def test_a_second_evaluation_of_the_suite_reuses_its_boundary_bisections(example_tflite, float16_quant, cache_root,
                                                                         monkeypatch, tmp_path):
    """The boundary pairs the first evaluation bisected (on the host, with the float model) are saved under the
    suite's identity; the next evaluation of the same suite, with another quantized model, bisects none of them
    again and makes the same bytes. Off with the float cache."""
    from edgeq.inputs.inputset import load_inputset
    from edgeq.inputs.risky import boundary

    bisected = []
    real = boundary._bisect

    def spy(float_model, arrays, head, a, *args):
        bisected.append(len(a))
        return real(float_model, arrays, head, a, *args)

    monkeypatch.setattr(boundary, "_bisect", spy)
    float_model, dynamic = example_tflite
    first, _ = evaluate(float_model, dynamic, tmp_path / "one")
    facts = first["inputs"]["boundary_bisections"]
    assert facts["reused"] == 0 and sum(bisected) > 0 and Path(facts["cache"]).is_file()
    assert Path(facts["cache"]).name == f"{first['inputs']['suite_sha256']}.npz"
    bisected.clear()
    second, _ = evaluate(float_model, float16_quant, tmp_path / "two")
    assert second["inputs"]["suite_sha256"] == first["inputs"]["suite_sha256"]
    again = second["inputs"]["boundary_bisections"]
    assert again["reused"] > 0 and again["pairs"] == facts["pairs"]
    assert f"{again['reused']} of {again['pairs']} interpolation pairs' bisections reused" in " ".join(second["notes"])
    one, two = (load_inputset(tmp_path / name / "inputs" / "risky.npz") for name in ("one", "two"))
    shared, at_one, at_two = np.intersect1d(one.suite["rows"], two.suite["rows"], return_indices=True)
    boundary_rows = np.asarray(one.category)[at_one] == "boundary"
    assert boundary_rows.sum() and np.array_equal(np.asarray(one.arrays["x"])[at_one],
                                                  np.asarray(two.arrays["x"])[at_two])
    assert sum(bisected) <= again["pairs"] - again["reused"]  # only pairs the first never made rows of
    off, _ = evaluate(float_model, float16_quant, tmp_path / "three", "--no-float-cache")
    assert "boundary_bisections" not in off["inputs"]
    whole, _ = evaluate(float_model, dynamic, tmp_path / "four", "--sampling", "fixed")  # bisects the rest, keeps all
    assert np.load(facts["cache"])["done"].all() and whole["inputs"]["suite_sha256"] == first["inputs"]["suite_sha256"]
    bisected.clear()
    last, _ = evaluate(float_model, dynamic, tmp_path / "five", "--sampling", "fixed")
    assert last["inputs"]["boundary_bisections"]["reused"] == facts["pairs"] and bisected == []
    assert sha256_file(tmp_path / "five" / SUITE) == sha256_file(tmp_path / "four" / SUITE)


@pytest.fixture(params=["local", "ssh"])
def device_args(request):
    if request.param == "local":
        return ["--device", "local"]
    _, inventory = request.getfixturevalue("ssh_device")
    return ["--device", "pi-loop", "--inventory", inventory]


def test_a_run_that_needs_more_rows_runs_only_the_missing_float_rows(example_tflite, cache_root, jobs, tmp_path,
                                                                      device_args):
    """A budget first (a few rows), then the whole adaptive run: the rows the first ran are not run again."""
    float_model, dynamic = example_tflite
    first, _ = evaluate(float_model, dynamic, tmp_path / "one", "--budget", "0.002s", *device_args)
    ran_first = np.load(tmp_path / "one" / "runs" / "float" / "rows.npy")
    jobs.clear()
    second, _ = evaluate(float_model, dynamic, tmp_path / "two", *device_args)
    rows = np.load(tmp_path / "two" / "runs" / "float" / "rows.npy")
    assert len(rows) == second["sampling"]["rows_run"] > len(ran_first)
    reused = np.intersect1d(rows, ran_first)
    assert second["float_reused"]["rows"] == len(reused) > 0 and second["float_reused"]["of"] == len(rows)
    new_float = [np.load(p / "rows.npy") for p in sorted((tmp_path / "two" / "rounds" / "float").glob("round-*"))]
    ran_now = np.concatenate(new_float)
    assert len(ran_now) == len(rows) - len(reused) == sum(k for label, k in jobs if label == "float")
    assert not np.intersect1d(ran_now, ran_first).size  # no float row computed twice
    assert sum(k for label, k in jobs if label == "quant") == len(rows)  # the quantized model on every row
    assert second["latency_ms"]["float"]["n"] == len(ran_now)  # float latency from what ran now
    (entry,) = entries(cache_root)
    assert np.array_equal(run_rows(RunResult.load(entry)), np.union1d(rows, ran_first))
    plain, _ = evaluate(float_model, dynamic, tmp_path / "three", "--no-float-cache", *device_args)
    assert cells(plain) == cells(second)
    assert np.array_equal(np.load(tmp_path / "three" / "runs" / "float" / "outputs" / "output_0.npy"),
                          np.load(tmp_path / "two" / "runs" / "float" / "outputs" / "output_0.npy"))


def test_another_resolver_never_reuses(example_tflite, cache_root, jobs, tmp_path):
    float_model, dynamic = example_tflite
    evaluate(float_model, dynamic, tmp_path / "one", "--sampling", "fixed")
    jobs.clear()
    other, _ = evaluate(float_model, dynamic, tmp_path / "two", "--sampling", "fixed",
                        "--resolver", "BUILTIN_WITHOUT_DEFAULT_DELEGATES")
    assert other["float_reused"] is None and [label for label, _ in jobs] == ["float", "quant"]
    assert sorted(json.loads((e / "key.json").read_text())["fields"]["resolver"] for e in entries(cache_root)) == \
        ["AUTO", "BUILTIN_WITHOUT_DEFAULT_DELEGATES"]


def test_a_damaged_cached_file_is_dropped_and_computed_again(example_tflite, cache_root, jobs, tmp_path):
    float_model, dynamic = example_tflite
    first, _ = evaluate(float_model, dynamic, tmp_path / "one", "--sampling", "fixed")
    (entry,) = entries(cache_root)
    target = entry / "outputs" / "output_0.npy"
    data = bytearray(target.read_bytes())
    data[-3] ^= 0x01  # one bit of one float output, in place
    target.write_bytes(bytes(data))
    jobs.clear()
    second, output = evaluate(float_model, dynamic, tmp_path / "two", "--sampling", "fixed")
    assert "warning: float cache entry" in output and "failed its check and was dropped" in output
    assert any("failed its check" in w for w in second["warnings"])
    assert second["float_reused"] is None and [label for label, _ in jobs] == ["float", "quant"]
    assert cells(second) == cells(first)
    assert RunCache().lookup(entry.name) is not None  # written again, whole


def test_an_entry_of_another_format_is_ignored_without_a_warning(example_tflite, cache_root, tmp_path):
    float_model, dynamic = example_tflite
    evaluate(float_model, dynamic, tmp_path / "one", "--sampling", "fixed")
    (entry,) = entries(cache_root)
    (entry / "rows.npy").unlink()
    warned = []
    assert RunCache(warn=warned.append).lookup(entry.name) is None and not warned
    second, output = evaluate(float_model, dynamic, tmp_path / "two", "--sampling", "fixed")
    assert second["float_reused"] is None and "warning" not in output
    assert RunCache().lookup(entry.name) is not None  # replaced by this format's entry


def test_a_round_runs_a_label_only_on_rows_it_does_not_skip(local, example_tflite, small_inputs, tmp_path):
    from edgeq.errors import ConfigError

    specs = [RunSpec(model=example_tflite[0], inputs=small_inputs, label="float"),
             RunSpec(model=example_tflite[1], inputs=small_inputs, label="quant")]
    with open_rounds(local, specs, tmp_path / "rounds") as rounds:
        whole = rounds.run(np.arange(10), skip={"float": np.arange(20)})
        part = rounds.run(np.arange(10, 30), skip={"float": np.arange(20)})
        with pytest.raises(ConfigError, match="labelled 'floot'"):
            rounds.run(np.arange(30, 32), skip={"floot": [30]})
    assert whole[0] is None and whole[1].n == 10 and not (tmp_path / "rounds" / "float" / "round-1").exists()
    assert np.array_equal(run_rows(part[0]), np.arange(20, 30)) and np.array_equal(run_rows(part[1]), np.arange(10, 30))
    assert whole.costs()["rows_skipped"] == {"float": 10} and part.costs()["rows_skipped"] == {"float": 10}


# ---- the store: subsets, the bound, concurrent writers -------------------------------------------------------

@pytest.fixture(scope="module")
def float_rounds(example_tflite, tmp_path_factory):
    """Three rounds of the float model on disjoint rows of a 300-row suite, batch size 4: (runs, key parts)."""
    from edgeq.inputs.inputset import InputSet

    root = tmp_path_factory.mktemp("float_rounds")
    with np.load(EXAMPLE_DATA) as data:
        x, y = data["x"][:300].copy(), data["y"][:300]
    suite = InputSet(arrays={"x": x}, y=y, category=np.array(["clean"] * 150 + ["other"] * 150),
                     severity=np.zeros(300, dtype=np.int32)).save(root / "suite.npz")
    device = Device(name="local", transport="local", python=sys.executable, workdir=str(root / "device"))
    spec = RunSpec(model=example_tflite[0], inputs=suite, label="float", batch_size=4)
    with open_rounds(device, [spec], root / "rounds") as rounds:
        runs = [rounds.run(rows)[0] for rows in (np.arange(0, 300, 3), np.arange(1, 300, 3), np.arange(2, 120, 3))]
        facts = rounds.opened.facts
    parts = dict(model_sha256=sha256_file(example_tflite[0]), inputs_sha256=sha256_file(suite), device_name="local",
                 facts=facts, resolver="AUTO", batch_size=4)
    return runs, parts


def test_a_subset_keeps_outputs_tags_and_per_sample_latency(float_rounds, tmp_path):
    run = float_rounds[0][0]  # rows 0, 3, …, 297 in invocations of 4
    rows = run_rows(run)[[0, 1, 5, 6, 7, 50, 99]]
    taken = take_run_rows(run, rows, tmp_path / "subset")
    local = np.searchsorted(run_rows(run), rows)
    assert np.array_equal(run_rows(taken), rows) and taken.n == len(rows)
    assert np.array_equal(np.asarray(taken.outputs[0]), np.asarray(run.outputs[0])[local])
    assert np.array_equal(np.asarray(taken.samples["category"]), np.asarray(run.samples["category"])[local])
    owner = np.repeat(np.arange(len(run.batch_sizes)), run.batch_sizes)[local]  # each wanted sample's invocation
    kept = np.unique(owner)
    assert list(taken.batch_sizes) == [2, 3, 1, 1]
    expected = np.asarray(run.latency_ns)[:, kept] / np.asarray(run.batch_sizes)[kept]  # per-sample latency kept
    assert np.allclose(taken.latency_ms_per_sample(), expected.ravel() / 1e6, rtol=0, atol=1e-5)


def test_the_bound_removes_the_least_recently_used_entry(float_rounds, tmp_path):
    runs, parts = float_rounds
    keys = [key_for(**parts, threads=t) for t in (1, 2, 3)]
    probe = RunCache(tmp_path / "probe")
    probe.store(keys[0], [runs[0]])
    size = probe.total_bytes()
    warned = []
    cache = RunCache(tmp_path / "cache", budget_bytes=int(2.5 * size), warn=warned.append)
    cache.store(keys[0], [runs[0]])
    cache.store(keys[1], [runs[0]])
    assert cache.lookup(keys[0]) is not None  # used: keys[1] is now the least recently used
    cache.store(keys[2], [runs[0]])
    assert [e["key"] for e in cache.entries()] == [keys[0], keys[2]] and cache.total_bytes() <= 2.5 * size
    assert cache.lookup(keys[1]) is None and not warned
    small = RunCache(tmp_path / "small", budget_bytes=size // 2, warn=warned.append)
    assert small.store(keys[0], [runs[0]]) is None and small.entries() == []
    assert "larger than the cache's budget" in warned[0]


def test_stores_add_up_rows_and_a_subset_of_an_entry_is_reused(float_rounds, tmp_path):
    runs, parts = float_rounds
    key = key_for(**parts, threads=1)
    cache = RunCache(tmp_path / "cache")
    cache.store(key, [runs[0]])
    cache.store(key, [runs[1], runs[2]])
    held = cache.lookup(key, into=tmp_path / "mine")
    assert held.path == tmp_path / "mine"
    assert np.array_equal(run_rows(held), np.union1d(np.arange(0, 300, 3), np.union1d(np.arange(1, 300, 3),
                                                                                          np.arange(2, 120, 3))))
    rows = run_rows(runs[1])
    assert np.array_equal(np.asarray(held.outputs[0])[np.searchsorted(run_rows(held), rows)],
                          np.asarray(runs[1].outputs[0]))
    cache.evict()  # within the budget: nothing goes
    assert RunResult.load(tmp_path / "mine").n == held.n


WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from edgeq.results import RunResult
    from edgeq.store import run_cache
    from edgeq.store.run_cache import CacheKey, RunCache
    import json

    root, key, fields, go, *paths = sys.argv[1:]
    real = run_cache.merge_rounds
    def slow(*args, **kwargs):  # hold the entry long enough for the other writer to arrive
        time.sleep(0.5)
        return real(*args, **kwargs)
    run_cache.merge_rounds = slow
    while not Path(go).exists():
        time.sleep(0.01)
    RunCache(root).store(CacheKey(key, json.loads(fields)), [RunResult.load(p) for p in paths])
""")


def test_two_writers_of_one_key_leave_one_whole_entry(float_rounds, tmp_path):
    """Two processes store different rows under one key at the same moment while a reader keeps looking:
    the reader sees no entry or a whole one, and the entry ends with both writers' rows."""
    runs, parts = float_rounds
    key = key_for(**parts, threads=1)
    root, go = tmp_path / "cache", tmp_path / "go"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(root), key, json.dumps(key.fields), str(go),
                                 str(run.path)]) for run in runs[:2]]
    seen, stop = [], threading.Event()

    def reader():
        cache = RunCache(root)
        while not stop.is_set():
            found = cache.lookup(key)
            seen.append(None if found is None else found.n)

    thread = threading.Thread(target=reader)
    thread.start()
    go.touch()
    try:
        assert [w.wait(timeout=120) for w in writers] == [0, 0]
    finally:
        stop.set()
        thread.join()
    whole = RunCache(root).lookup(key)
    assert whole is not None and np.array_equal(run_rows(whole), np.union1d(run_rows(runs[0]), run_rows(runs[1])))
    assert set(seen) <= {None, runs[0].n, runs[1].n, whole.n}
    assert [p.name for p in root.iterdir() if p.name != ".locks"] == [key]  # no staging or replaced folder left
