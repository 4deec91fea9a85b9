"""Host side of the agent protocol: JSON lines over a transport's process pipes."""

from __future__ import annotations

import itertools
import json
import queue
import threading
import time
from typing import Callable

from device_agents.edgeq_agent.wire import MAX_LINE  # bytes of one protocol line: the agent's rule, not restated
from edgeq.errors import AgentError, CommandNotFound, IncompatibleRuntime, InputSetError, ModelError
from edgeq.devices.transport.base import Process, Transport

EventHandler = Callable[[dict], None]


NOISE_BYTES = 64 << 10  # non-JSON stdout tolerated before the agent's first message (a login script's echo)
NOISE_LINES = 200
READ_CHUNK = 64 << 10
LINE_STALL_S = 15.0  # a line the agent began and then left unfinished this long is cut off: the agent writes
# each line whole, so once it has spoken, a line stalled mid-way is an answer that will never complete
ISOLATED = "-I"  # python -I (3.4+; the agent needs 3.8): no script folder or cwd on sys.path, no PYTHON*
# variables, no user site: a module planted beside the agent on the device, or in PYTHONPATH, never runs in it


class AgentSession:
    """One running agent; ``request`` sends an op and waits for its answer.

    The waiting thread reads the agent's stdout itself (``_Lines``), with a deadline: a
    hung, dead or flooding agent is noticed by the deadline, EOF or a protocol error
    instead of blocking the host forever or growing its memory (unread output waits in
    the agent's pipe, not in host RAM). Only a valid event or answer for the pending
    request moves the deadline; garbage never does. There is no reader thread: a search
    sends hundreds of small requests a second, and a thread hand-off per answer, fighting
    the busy search for the GIL, cost more than the agent's own work.
    """

    def __init__(self, transport: Transport, python: str, agent_path: str):
        self.transport = transport
        self.device = transport.device
        self.python = python
        try:
            # isolated: what runs is the verified agent file and the interpreter's own libraries, nothing planted
            # beside it (a script's folder is first on sys.path) or named by the environment
            self.process: Process = transport.start([python, ISOLATED, agent_path])
        except CommandNotFound as exc:
            raise self._no_python(str(exc)) from None
        self._lines = _Lines(self.process)
        self._writer = _Writer(self.process)
        self._ids = itertools.count(1)
        self._broken = False

    def request(self, op: str, *, on_event: EventHandler | None = None,
                timeout: float | None = 600.0, **params) -> dict:
        """Send ``op`` and wait for its answer; ``timeout`` bounds the wait for each valid message."""
        return self.receive(self.send(op, **params), op, on_event=on_event, timeout=timeout)

    def send(self, op: str, **params) -> int:
        """Send ``op`` without waiting; its answer is read by ``receive`` with the id returned.

        The agent answers requests in the order they were sent, so a caller that keeps several in
        flight must receive them in that order too.
        """
        if self._broken:
            raise AgentError(f"{self.device}: agent session already failed; not sending {op!r}", kind="Protocol")
        request_id = next(self._ids)
        self._send({"id": request_id, "op": op, **params})
        return request_id

    def receive(self, request_id: int, op: str, *, on_event: EventHandler | None = None,
                timeout: float | None = 600.0) -> dict:
        """The answer of the request ``request_id`` (events go to ``on_event``); an error answer raises."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            message = self._next_message(op, timeout, deadline)
            if _is_stale(message, request_id):
                continue  # the late answer of a request the host gave up on: not valid, no new deadline
            if not _valid_for(message, request_id):
                raise self._violation(op, f"unexpected message {_short(message)}")
            deadline = None if timeout is None else time.monotonic() + timeout
            if "event" in message:
                if on_event:
                    on_event(message)
                continue
            if message["ok"]:
                return message.get("result", {})
            raise _agent_failure(self.device, message["error"])

    def _send(self, payload: dict) -> None:
        try:
            self._writer.write((json.dumps(payload) + "\n").encode())
        except (OSError, EOFError, ValueError):  # paramiko says a dead connection with EOFError, not OSError
            raise self._died("while sending a request") from None

    def _next_message(self, op: str, timeout: float | None, deadline: float | None):
        kind, value = self._lines.next(deadline)
        if kind == "late":
            raise AgentError(f"{self.device}: agent gave no valid answer to {op!r} within {timeout:.0f} s")
        if kind == "eof":
            raise self._died(f"during {op!r}")
        if kind == "bad":
            raise self._violation(op, value)
        return value

    def _violation(self, op: str, what: str) -> AgentError:
        """A protocol violation ends the session at once: waiting longer cannot make it valid."""
        self._broken = True
        self.process.kill()
        return AgentError(f"{self.device}: agent broke the protocol during {op!r}: {what}", kind="Protocol")

    def _died(self, when: str) -> AgentError:
        code = self.process.wait(timeout=2)
        tail = self.process.stderr_tail().strip().splitlines()[-3:]
        if code in (126, 127):
            return self._no_python(" | ".join(tail) or "not found")
        detail = f": {' | '.join(tail)}" if tail else ""
        return AgentError(f"{self.device}: agent exited (code {code}) {when}{detail}")

    def sha256(self, path: str) -> str:
        """A device file's digest, computed by the agent (no new process on the device)."""
        return self.request("sha256", paths=[path], timeout=600)[path] or ""

    def free_bytes(self, path: str) -> int:
        return int(self.request("df", path=path, timeout=60)["free"])

    def record_made(self, path: str, source: str | None = None) -> None:
        """Record on the device that edgeq made ``path`` (with ``source``'s identity: an upload's part file about
        to be renamed to it). The store's tidy deletes only what such records name (the agent's ``record_made``)."""
        self.request("record", path=path, **({"source": source} if source else {}), timeout=60)

    def tidy_store(self, root: str, budget_bytes: int, keep=(), drop=(), protect_s: float | None = None) -> dict:
        """Bring what edgeq made in the device's store under budget (the agent's ``tidy_store`` says how)."""
        extra = {} if protect_s is None else {"protect_s": protect_s}
        return self.request("store", root=root, budget_bytes=budget_bytes, keep=list(keep), drop=list(drop),
                            timeout=600, **extra)

    def _no_python(self, detail: str) -> AgentError:
        return AgentError(f"{self.device}: cannot run python {self.python!r} on the device ({detail}); "
                          f"set python= in the inventory or run `edgeq devices setup {self.device}`",
                          kind="NoPython")

    def hello(self) -> dict:
        """Device facts; fails clearly when the device has no usable TFLite runtime."""
        facts = self.request("hello", timeout=120)
        if "runtime_error" in facts:
            raise AgentError(f"{self.device}: {facts['runtime_error']}; install one with "
                             f"`edgeq devices setup {self.device}`", kind="NoRuntime")
        return facts

    def close(self, abandon: bool = False) -> None:
        """Ask the agent to exit; ``abandon`` (Ctrl-C): kill it now, as it may be mid-run and unable
        to answer — over SSH its next progress line then meets a closed pipe and it ends."""
        if not abandon and not self._lines.ended and not self._broken:
            try:
                self.request("shutdown", timeout=10)
            except AgentError:
                pass
        if not abandon:
            self.process.wait(timeout=5)
        self.process.kill()  # ends it if it did not exit, and releases the pipes either way

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        self.close(abandon=exc_type is not None and not issubclass(exc_type, Exception))


class _Writer:
    """Requests onto the agent's stdin, in order, without ever keeping the reading thread from reading.

    A request goes out at once when stdin has room (a search's small requests always do: no
    thread, no hand-off). What does not fit goes to a thread of its own, and so does every
    request after it until that thread has caught up: a large request written while answers
    are outstanding could otherwise fill stdin while the agent, blocked on a full stdout
    that nobody reads until the write returns, stops reading it. A failed write is raised
    by the next one; the reading thread sees the agent's end.
    """

    def __init__(self, process: Process):
        self.process = process
        self.pending: queue.Queue | None = None  # the thread's work, once there is any
        self.backlog = 0  # requests handed to the thread and not yet written (only the thread lowers it)
        self.lock = threading.Lock()
        self.error: BaseException | None = None

    def write(self, data: bytes) -> None:
        if self.error is not None:
            raise self.error
        if not self.backlog:
            done = self.process.write_some(data)
            if done == len(data):
                return
            data = data[done:]
        with self.lock:
            self.backlog += 1
        if self.pending is None:
            self.pending = queue.Queue()
            threading.Thread(target=self._drain, daemon=True).start()
        self.pending.put(data)

    def _drain(self) -> None:
        while True:
            data = self.pending.get()
            try:
                self.process.write_all(data)
            except (OSError, EOFError, ValueError) as exc:
                self.error = exc
                return
            with self.lock:
                self.backlog -= 1


class _Lines:
    """The agent's stdout as protocol items, read on demand by the thread waiting for an answer.

    ``next(deadline)`` gives ("msg", value), ("bad", why) for a protocol violation, ("eof",
    None) once stdout has ended (and for every call after), or ("late", None) when the
    monotonic ``deadline`` passed first. A line is held only up to ``MAX_LINE`` bytes.

    Before the agent's first protocol message, a little non-JSON output is tolerated (a login
    script's echo comes before the agent starts). Once it has spoken, its stdout carries protocol lines
    only (the agent moves everything else to stderr), so a line that is not JSON, or a line it
    began and left unfinished for ``LINE_STALL_S``, is a violation at once: a malformed answer
    ends the wait in seconds, not at the request's deadline.
    """

    def __init__(self, process: Process):
        self.process = process
        self.buffer = bytearray()
        self.scanned = 0  # bytes of the buffer already known to hold no newline
        self.ended = False
        self.cut = False  # the buffer's last line got its newline from the end of the stream
        self.started = False  # a protocol message has been read: from now on only protocol lines are allowed
        self.noise = _Noise()

    def next(self, deadline: float | None):
        while True:
            line = self._line()
            if line is not None:
                item = self._item(line)
                if item is not None:
                    return item
                continue
            if len(self.buffer) > MAX_LINE:
                return ("bad", f"a line longer than {MAX_LINE >> 20} MiB")
            if self.ended:
                return ("eof", None)
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return ("late", None)
            stalling = self.started and bool(self.buffer)  # a line begun, its end not here yet
            wait = LINE_STALL_S if stalling and (remaining is None or remaining > LINE_STALL_S) else remaining
            if not self._fill(wait) and stalling and wait == LINE_STALL_S:
                return ("bad", f"a line cut off: {len(self.buffer)} bytes without a newline "
                               f"({bytes(self.buffer[:60])!r}), then nothing for {LINE_STALL_S:.0f} s")

    def _item(self, line: bytes):
        last = self.cut and not self.buffer  # the stream ended inside this line
        item = _classify(line, self.noise, strict=self.started)
        if item is None:
            return None
        if item[0] == "msg" and isinstance(item[1], dict) and "id" in item[1]:
            self.started = True  # a protocol message, not a banner line that happens to parse as JSON
        elif item[0] == "bad" and last and self.started:
            return ("eof", None)  # the agent died mid-line: its exit (code, stderr) is the cause to report
        return item

    def _line(self) -> bytes | None:
        end = self.buffer.find(b"\n", self.scanned)
        if end < 0:
            self.scanned = len(self.buffer)
            return None
        line = bytes(self.buffer[:end + 1])
        del self.buffer[:end + 1]
        self.scanned = 0
        return line

    def _fill(self, timeout: float | None) -> bool:
        """Read what arrives within ``timeout``; False when nothing did."""
        try:
            chunk = self.process.read_some(READ_CHUNK, timeout)
        except (OSError, ValueError, EOFError):
            chunk = b""
        if chunk == b"":
            self.ended = True
            if self.buffer:  # a last line without its newline still counts
                self.buffer += b"\n"
                self.cut = True
        elif chunk is not None:
            self.buffer += chunk
        return chunk is not None


class _Noise:
    """Non-JSON stdout seen so far; a little is tolerated, a flood is a protocol violation."""

    def __init__(self):
        self.bytes = self.lines = 0

    def add(self, raw: bytes) -> str | None:
        self.bytes, self.lines = self.bytes + len(raw), self.lines + 1
        if self.bytes > NOISE_BYTES or self.lines > NOISE_LINES:
            return f"{self.lines} lines ({self.bytes} bytes) of non-JSON output, the last {raw[:60]!r}"
        return None


def _classify(raw: bytes, noise: _Noise, strict: bool = False):
    """("msg", value), ("bad", why), or None for a blank line or tolerated noise (none once ``strict``)."""
    if len(raw) > MAX_LINE:
        return ("bad", f"a line longer than {MAX_LINE >> 20} MiB")
    if not raw.strip():
        return None
    try:
        return ("msg", json.loads(raw))
    except ValueError:
        if strict:
            return ("bad", f"a line that is not JSON after the agent had started: {raw[:60]!r}")
        flood = noise.add(raw)
        return ("bad", flood) if flood else None


def _is_stale(message, request_id: int) -> bool:
    """An answer or event of an earlier request (one that timed out): skipped, never trusted."""
    return (isinstance(message, dict) and isinstance(message.get("id"), int)
            and not isinstance(message.get("id"), bool) and 0 < message["id"] < request_id
            and ("event" in message or isinstance(message.get("ok"), bool)))


def _valid_for(message, request_id: int) -> bool:
    """An event or an answer of the pending request, shaped as the agent writes them."""
    if not isinstance(message, dict) or message.get("id") != request_id or isinstance(message.get("id"), bool):
        return False
    if "event" in message:
        return isinstance(message["event"], str)
    if message.get("ok") is True:
        return isinstance(message.get("result", {}), dict)
    return message.get("ok") is False and isinstance(message.get("error"), dict)


def _short(message) -> str:
    text = json.dumps(message, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _agent_failure(device: str, error: dict) -> Exception:
    kind = error.get("type", "AgentError")
    message = error.get("message", "unknown failure")
    if kind == "IncompatibleRuntime":
        return IncompatibleRuntime(f"{device}: {message}")
    if kind == "ModelLoad":
        return ModelError(device, message)
    if kind == "BadInputs":
        return InputSetError(device, message)
    if kind == "NoNumpy":
        return AgentError(f"{device}: {message}; run `edgeq devices setup {device}` or set python= in the "
                          "inventory to an interpreter with numpy and a TFLite runtime", kind=kind)
    return AgentError(f"{device}: agent {kind}: {message}", kind=kind)
