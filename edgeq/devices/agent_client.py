"""Host side of the agent protocol: JSON lines over a transport's process pipes."""

from __future__ import annotations

import itertools
import json
import queue
import threading
from typing import Callable

from edgeq.errors import AgentError, CommandNotFound, IncompatibleRuntime, InputSetError, ModelError
from edgeq.devices.transport.base import Process, Transport

EventHandler = Callable[[dict], None]


class AgentSession:
    """One running agent; ``request`` sends an op and waits for its answer.

    A reader thread turns stdout lines into a queue, so a hung or dead agent is
    noticed by a timeout or EOF instead of blocking the host forever.
    """

    def __init__(self, transport: Transport, python: str, agent_path: str):
        self.transport = transport
        self.device = transport.device
        self.python = python
        try:
            self.process: Process = transport.start([python, agent_path])
        except CommandNotFound as exc:
            raise self._no_python(str(exc)) from None
        self._lines: queue.Queue = queue.Queue()
        self._ids = itertools.count(1)
        self._eof = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        try:
            for raw in self.process.stdout:
                self._lines.put(raw)
        except (OSError, ValueError):
            pass
        self._eof.set()
        self._lines.put(None)

    def request(self, op: str, *, on_event: EventHandler | None = None,
                timeout: float | None = 600.0, **params) -> dict:
        request_id = next(self._ids)
        self._send({"id": request_id, "op": op, **params})
        while True:
            message = self._next_message(op, timeout)
            if message.get("id") != request_id:
                continue
            if "event" in message:
                if on_event:
                    on_event(message)
                continue
            if message.get("ok"):
                return message.get("result", {})
            raise _agent_failure(self.device, message.get("error", {}))

    def _send(self, payload: dict) -> None:
        try:
            self.process.stdin.write((json.dumps(payload) + "\n").encode())
            self.process.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            raise self._died("while sending a request") from None

    def _next_message(self, op: str, timeout: float | None) -> dict:
        try:
            raw = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AgentError(f"{self.device}: agent gave no answer to {op!r} within {timeout:.0f} s") from None
        if raw is None:
            self._lines.put(None)  # every later request sees the end too
            raise self._died(f"during {op!r}")
        try:
            return json.loads(raw)
        except ValueError:
            return {}

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

    def close(self) -> None:
        if not self._eof.is_set():
            try:
                self.request("shutdown", timeout=10)
            except AgentError:
                pass
        self.process.wait(timeout=5)
        self.process.kill()  # ends it if it did not exit, and releases the pipes either way

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


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
