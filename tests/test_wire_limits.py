"""Hostile and broken agents on the wire, and run files larger than the job can produce.

Each hostile agent is a real subprocess speaking the protocol badly (a few lines of Python,
or the real agent with one method patched), started through the local transport exactly as
a device's agent is. Timeouts here only bound a hang; nothing asserts speed.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from edgeq.devices.agent_client import MAX_LINE, AgentSession
from edgeq.devices.deploy import AGENT_SOURCE
from edgeq.devices.run import RunSpec, expected_sizes, job_values, prepare
from edgeq.devices.transport.base import sha256_file
from edgeq.devices.transport.local import LocalTransport
from edgeq.devices.transport.ssh import SshTransport
from edgeq.errors import AgentError, TransportError
from edgeq.devices.pull import pull_run
from edgeq.results import MANIFEST

HOSTILE = r'''
import json, sys, time
mode = sys.argv[1]
out = sys.stdout.buffer
def say(obj):
    out.write((json.dumps(obj) + "\n").encode()); out.flush()
for line in sys.stdin:
    request = json.loads(line)
    rid = request["id"]
    if request["op"] == "shutdown":
        say({"id": rid, "ok": True, "result": {}}); break
    if mode == "flood":            # one endless line, no newline ever
        while True:
            out.write(b"x" * 65536); out.flush()
    if mode == "noise":            # endless short lines that are not JSON
        while True:
            out.write(b"not json at all\n"); out.flush()
    if mode == "slow-noise":       # a little garbage now and then, never an answer
        while True:
            out.write(b"garbage\n"); out.flush(); time.sleep(0.1)
    if mode == "bad-answer":       # JSON, right id, but not an answer
        say({"id": rid, "ok": "yes", "result": 3})
    if mode == "wrong-id":
        say({"id": rid + 41, "ok": True, "result": {}})
    if mode == "not-object":
        say([rid, "ok"])
    if mode == "stderr-chatter":   # talks on stderr (which shares an SSH channel's descriptor), never answers
        while True:
            sys.stderr.write("working\n"); sys.stderr.flush(); time.sleep(0.05)
    if mode == "echo":             # a proper answer as large as the request
        say({"id": rid, "ok": True, "result": {"pad": request.get("pad", "")}})
    if mode == "banner":           # a login script's echo, then a proper answer
        out.write(b"Welcome to the board\n\n"); out.flush()
        say({"id": rid, "event": "progress", "done": 1, "total": 1})
        say({"id": rid, "ok": True, "result": {"free": 1}})
'''

# The real agent, with only its final answers garbled: events stay valid.
GARBLED_AGENT = r'''
import sys
sys.path.insert(0, {agent_dir!r})
import {module} as agent
plain_emit = agent.Agent.emit
def emit(self, request_id, payload):
    if payload.get("ok") is True and "event" not in payload:
        payload = dict(payload, result="garbled")
    plain_emit(self, request_id, payload)
agent.Agent.emit = emit
sys.exit(agent.main(sys.argv[1:]))
'''


def hostile_session(tmp_path, mode: str) -> AgentSession:
    return _session_running(hostile_argv(tmp_path, mode))


def hostile_argv(tmp_path, mode: str) -> list[str]:
    script = tmp_path / "hostile_agent.py"
    script.write_text(HOSTILE)
    return [sys.executable, str(script), mode]


def starting(base: type, argv: list[str]) -> type:
    """``base`` (a transport class) that starts ``argv`` whatever it is asked to start: AgentSession
    starts ``python agent``, and the mode rides along."""
    class WithArgs(base):
        def _start_impl(self, _argv):
            return super()._start_impl(argv)

    return WithArgs


def _session_running(argv) -> AgentSession:
    return AgentSession(starting(LocalTransport, argv)("hostile"), argv[0], argv[1])


def ends_with(session: AgentSession, match: str, timeout: float = 600.0, op: str = "df") -> AgentError:
    """The request fails with ``match``; the session is closed whatever happens."""
    try:
        with pytest.raises(AgentError, match=match) as caught:
            session.request(op, path="/", timeout=timeout)
    finally:
        session.close()
    return caught.value


def test_an_endless_line_is_refused_not_buffered(tmp_path):
    error = ends_with(hostile_session(tmp_path, "flood"), f"longer than {MAX_LINE >> 20} MiB")
    assert error.kind == "Protocol" and "broke the protocol during 'df'" in str(error)


def test_a_flood_of_non_json_lines_is_a_protocol_error(tmp_path):
    error = ends_with(hostile_session(tmp_path, "noise"), "lines .* of non-JSON output")
    assert error.kind == "Protocol"


def test_garbage_does_not_reset_the_deadline(tmp_path):
    # 10 garbage lines a second stay under the allowance for 20 s: a deadline that garbage
    # reset would end in the noise error instead; a correct one ends in "no valid answer".
    ends_with(hostile_session(tmp_path, "slow-noise"), r"no valid answer to 'df' within 2 s", timeout=2.0)


def test_over_ssh_a_flood_garbage_and_a_silent_agent_end_as_on_this_host(tmp_path, ssh_device):
    # the channel is read in chunks on the waiting thread: the line limit and the deadline hold there too
    device, _ = ssh_device

    def over_ssh(mode: str, match: str, timeout: float = 600.0) -> AgentError:
        argv = hostile_argv(tmp_path, mode)
        with starting(SshTransport, argv)(device) as transport:
            return ends_with(AgentSession(transport, argv[0], argv[1]), match, timeout)

    for _ in range(3):  # a session cut off mid-flood leaves the next ones on this host working
        assert over_ssh("flood", f"longer than {MAX_LINE >> 20} MiB").kind == "Protocol"
        assert over_ssh("noise", "lines .* of non-JSON output").kind == "Protocol"
    over_ssh("slow-noise", r"no valid answer to 'df' within 2 s", timeout=2.0)
    over_ssh("stderr-chatter", r"no valid answer to 'df' within 2 s", timeout=2.0)
    argv = hostile_argv(tmp_path, "banner")
    with starting(SshTransport, argv)(device) as transport, AgentSession(transport, argv[0], argv[1]) as session:
        assert session.request("df", path="/", timeout=600) == {"free": 1}
        # Channel.fileno() gives the channel an OS pipe that paramiko writes and closes from several
        # threads without a lock; a late write after the close hit the next session's socket (its
        # reused descriptor) and killed it. Reads must wait without that pipe.
        assert session.process.channel._pipe is None


def pipelined_echoes(session: AgentSession, count: int, size: int) -> list[int]:
    """``count`` requests of ``size`` bytes sent before any answer is read, then their answers' sizes.

    Each answer alone is larger than a pipe (and all of them than an SSH window): a host that wrote
    on the reading thread until the last request was out would wait forever for the agent, itself
    waiting for the host to read. Run on a thread, so such a hang fails the test instead of hanging it.
    """
    answers: list[int] = []

    def exchange():
        ids = [session.send("echo", pad="abcdefghijklmnop"[k % 16] * size) for k in range(count)]
        answers.extend(len(session.receive(i, "echo", timeout=600)["pad"]) for i in ids)

    worker = threading.Thread(target=exchange, daemon=True)
    worker.start()
    worker.join(timeout=300)
    alive = worker.is_alive()
    session.close(abandon=alive)
    assert not alive, "pipelined requests and answers deadlocked"
    return answers


def test_large_pipelined_requests_and_answers_never_deadlock(tmp_path, ssh_device):
    assert pipelined_echoes(hostile_session(tmp_path, "echo"), 8, 300_000) == [300_000] * 8
    argv = hostile_argv(tmp_path, "echo")
    with starting(SshTransport, argv)(ssh_device[0]) as transport:
        assert pipelined_echoes(AgentSession(transport, argv[0], argv[1]), 12, 400_000) == [400_000] * 12


@pytest.mark.parametrize("mode", ["bad-answer", "wrong-id", "not-object"])
def test_json_that_is_no_answer_fails_at_once(tmp_path, mode):
    # timeout=None: if the bad line were dropped, the test would hang, not pass
    error = ends_with(hostile_session(tmp_path, mode), "broke the protocol during 'df': unexpected message",
                      timeout=None)
    assert error.kind == "Protocol"


def test_a_banner_before_the_answers_is_tolerated(tmp_path):
    session = hostile_session(tmp_path, "banner")
    events = []
    try:
        assert session.request("df", path="/", on_event=events.append, timeout=600) == {"free": 1}
    finally:
        session.close()
    assert events and events[0]["event"] == "progress"


def test_a_garbled_final_answer_of_a_real_run_is_a_named_error(tmp_path, example_tflite, small_inputs):
    agent_copy = tmp_path / "agent_copy" / "edgeq_agent_copy.pyz"
    agent_copy.parent.mkdir()
    agent_copy.write_bytes(AGENT_SOURCE.read_bytes())
    wrapper = tmp_path / "garbled_agent.py"
    wrapper.write_text(GARBLED_AGENT.format(agent_dir=str(agent_copy), module="edgeq_agent"))
    spec = RunSpec(model=example_tflite[1], inputs=small_inputs)
    job = {"model": str(spec.model), "inputs": str(spec.inputs), "input_arrays": ["x"],
           "out": str(tmp_path / "out"), **job_values(spec, "run")}
    events = []
    session = AgentSession(LocalTransport("garbled"), sys.executable, str(wrapper))
    try:
        with pytest.raises(AgentError, match=r"broke the protocol during 'run': unexpected message .*garbled"):
            session.request("run", job=job, on_event=events.append, timeout=None)
    finally:
        session.close()
    assert events, "the run's progress events were valid and reached the host"
    assert (tmp_path / "out" / MANIFEST).exists()  # the agent did finish: only its answer was bad


# ----------------------------------------------------------------------------- pulled file sizes


def fake_run(remote: Path, files: dict[str, bytes | int], sizes: dict[str, int] | None = None) -> None:
    """A run directory as the agent leaves it; an int content is a sparse file of that size."""
    listing = {}
    for rel, content in files.items():
        path = remote / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, int):
            with open(path, "wb") as handle:
                handle.truncate(content)
            listing[rel] = {"sha256": "0" * 64, "size": content}
        else:
            path.write_bytes(content)
            listing[rel] = {"sha256": sha256_file(path), "size": len(content)}
    for rel, size in (sizes or {}).items():
        listing[rel]["size"] = size
    (remote / MANIFEST).write_text(json.dumps({"complete": True, "files": listing}))


def test_a_file_larger_than_its_manifest_size_is_refused_before_transfer(tmp_path):
    remote = tmp_path / "device" / "run"
    fake_run(remote, {"meta.json": b"{}", "outputs/output_0.npy": 3 << 30},
             sizes={"outputs/output_0.npy": 4000})
    local = tmp_path / "host"
    with pytest.raises(TransportError, match=r"output_0.npy refused: larger than its manifest size \(4000 bytes\)"):
        pull_run(LocalTransport("pi"), str(remote), local)
    assert not (local / "outputs" / "output_0.npy").exists() and not (local / MANIFEST).exists()
    assert not list(local.glob(".*incoming*")), "the staged manifest was left behind"


def test_a_manifest_size_beyond_what_the_job_can_produce_is_refused(tmp_path, example_tflite, small_inputs):
    item = prepare(RunSpec(model=example_tflite[1], inputs=small_inputs), tmp_path / "rundir")
    job = job_values(item.spec, "run")
    limits = expected_sizes(item, job, wall_s=5.0)
    bound = limits["outputs/output_0.npy"]
    assert 40 * 10 * 4 < bound < 1 << 20  # 40 samples × 10 float32, plus an .npy header at most
    remote = tmp_path / "device" / "run"
    fake_run(remote, {"meta.json": b"{}", "outputs/output_0.npy": 3 << 30})
    with pytest.raises(TransportError, match=rf"output_0.npy refused: manifest says {3 << 30} bytes, "
                                             rf"the job can produce at most {bound} bytes"):
        pull_run(LocalTransport("pi"), str(remote), item.rundir, limits)
    assert not (item.rundir / "outputs" / "output_0.npy").exists()


def test_a_real_run_fits_its_job_sizes(local, example_tflite, small_inputs, tmp_path):
    from edgeq.devices.run import run_on_device

    spec = RunSpec(model=example_tflite[1], inputs=small_inputs, repeats=3, batch_size=16)
    (run,) = run_on_device(local, [spec], [tmp_path / "run"])
    limits = expected_sizes(prepare(spec, tmp_path / "again"), job_values(spec, "run"), wall_s=0.0)
    for rel, entry in json.loads((run.path / MANIFEST).read_text())["files"].items():
        assert entry["size"] <= limits.get(rel, 16 << 20), rel


PULL_MANY = """
import sys
from pathlib import Path
from edgeq.devices.transport.local import LocalTransport
from edgeq.devices.pull import pull_run
for _ in range(30):
    pull_run(LocalTransport("pi"), sys.argv[1], Path(sys.argv[2]))
"""


def test_two_processes_pulling_into_one_folder_do_not_share_a_staging_name(tmp_path):
    """Two evaluates with the same -o: each stages the manifest under its own name."""
    import subprocess

    remote = tmp_path / "device" / "run"
    fake_run(remote, {"meta.json": b'{"k": 1}', "latency_ns.npy": os.urandom(64_000)})
    local = tmp_path / "host"
    pullers = [subprocess.Popen([sys.executable, "-c", PULL_MANY, str(remote), str(local)],
                                stderr=subprocess.PIPE, cwd=Path(__file__).parent.parent) for _ in range(2)]
    for puller in pullers:
        _, err = puller.communicate(timeout=600)
        assert puller.returncode == 0, err.decode()[-2000:]
    assert json.loads((local / MANIFEST).read_text())["complete"] is True
    assert not list(local.glob(".*incoming*"))


# ----------------------------------------------------------------------------- reading lines


class ChunkedStdout:
    """A Process whose stdout arrives in the given chunks (None: nothing within the timeout)."""

    def __init__(self, chunks):
        self.chunks = list(chunks)
        self.reads = 0

    def read_some(self, limit, timeout):
        self.reads += 1
        if not self.chunks:
            return b""
        chunk = self.chunks.pop(0)
        assert chunk is None or len(chunk) <= limit
        return chunk


def test_lines_are_cut_from_chunks_whatever_their_boundaries():
    from edgeq.devices.agent_client import _Lines

    lines = _Lines(ChunkedStdout([b'{"a": 1}\n{"b"', b': 2}\n\n', None, b'banner\n{"c": 3}']))
    assert lines.next(None) == ("msg", {"a": 1})
    assert lines.next(None) == ("msg", {"b": 2})
    assert lines.next(time.monotonic() - 1) == ("late", None)  # a deadline already passed: no read at all
    assert lines.next(None) == ("msg", {"c": 3})  # a last line without its newline still counts
    assert lines.next(None) == ("eof", None) and lines.next(None) == ("eof", None)


def test_a_long_line_is_refused_before_the_host_holds_much_more_than_the_limit():
    from edgeq.devices.agent_client import READ_CHUNK, _Lines

    stdout = ChunkedStdout([b"x" * READ_CHUNK] * (MAX_LINE // READ_CHUNK + 10))
    assert _Lines(stdout).next(None)[0] == "bad"
    assert stdout.reads <= MAX_LINE // READ_CHUNK + 1
