"""The ``local`` device: this host, the same agent, run as a subprocess.

It goes through the same protocol as SSH devices (push to a workdir, start the
agent, pull results), so what works here exercises the real path.
"""

from __future__ import annotations

import math
import os
import secrets
import select
import shutil
import subprocess
import threading
import time
from pathlib import Path

from edgeq.errors import CommandNotFound, TransportError
from edgeq.devices.transport.base import Process, Result, Transfer, Transport, sha256_file


class LocalProcess(Process):
    """The agent as a subprocess: its pipes used through their descriptors (stdin non-blocking), never
    through the buffered file objects, so no byte waits in a buffer that poll cannot see."""

    def __init__(self, popen: subprocess.Popen):
        self.popen = popen
        os.set_blocking(popen.stdin.fileno(), False)
        self._stdout = select.poll()  # poll, not select: a big fleet's descriptors pass FD_SETSIZE
        self._stdout.register(popen.stdout.fileno(), select.POLLIN)
        self._stdin = select.poll()
        self._stdin.register(popen.stdin.fileno(), select.POLLOUT)
        self._stderr: list[bytes] = []
        self._reader = threading.Thread(target=self._drain_stderr, daemon=True)
        self._reader.start()

    def _drain_stderr(self):
        for line in self.popen.stderr:
            self._stderr.append(line)
            del self._stderr[:-200]

    def read_some(self, limit, timeout):
        if not self._stdout.poll(None if timeout is None else max(0, math.ceil(timeout * 1000))):
            return None
        return os.read(self.popen.stdout.fileno(), limit)

    def write_some(self, data):
        try:
            return os.write(self.popen.stdin.fileno(), data)
        except BlockingIOError:
            return 0

    def write_all(self, data):
        view = memoryview(data)
        while view:
            view = view[self.write_some(view):]
            if view:
                self._stdin.poll(1000)  # a closed pipe wakes it too, and the next write raises

    def stderr_tail(self, limit: int = 4000) -> str:
        self._reader.join(timeout=0.2)
        return b"".join(self._stderr).decode(errors="replace")[-limit:]

    def wait(self, timeout=None):
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self):
        """End the process. Its pipes close with this object: a request being written on another thread
        (``write_all``) then meets a broken pipe, never a descriptor number reused for another file."""
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


class LocalTransport(Transport):
    """This host, as a device: the same agent and protocol, run as a subprocess.

    It has no settings of its own: there is nothing to reach, so ``host`` and the other SSH
    keys are refused on a local device rather than silently ignored. It reads the host's
    files where they are (``SHARES_HOST_FILES``): pushing a model or an input set copies
    nothing.
    """

    SHARES_HOST_FILES = True

    @classmethod
    def for_device(cls, device) -> "LocalTransport":
        return cls(device.name)

    @classmethod
    def summary(cls, settings) -> list[str]:
        return ["this host"]

    def _run_impl(self, argv, stdin, timeout):
        start = time.perf_counter()
        try:
            done = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout)
        except FileNotFoundError as exc:
            raise TransportError(f"{self.device}: cannot run {argv[0]}: {exc.strerror}") from None
        except subprocess.TimeoutExpired:
            raise TransportError(f"{self.device}: {argv[0]} did not finish in {timeout} s") from None
        return Result(self.device, " ".join(argv), done.returncode,
                      done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace"),
                      time.perf_counter() - start)

    def _start_impl(self, argv):
        try:
            popen = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        except FileNotFoundError:
            raise CommandNotFound(f"{self.device}: {argv[0]}: not found") from None
        except OSError as exc:
            raise TransportError(f"{self.device}: cannot start {argv[0]}: {exc.strerror}") from None
        return LocalProcess(popen)

    def _put_impl(self, local, remote, sha256, hasher):
        transfer = _copy_atomic(local, Path(remote))
        if transfer.sha256 != sha256:
            Path(remote).unlink(missing_ok=True)
            raise TransportError(f"{self.device}: {local.name} changed while it was copied (sha256 mismatch)")
        return transfer

    def _get_impl(self, remote, local):
        return _copy_atomic(Path(remote), local)

    def exists(self, remote):
        return Path(remote).exists()

    def makedirs(self, remote):
        try:
            Path(remote).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TransportError(f"{self.device}: cannot create {remote}: {exc.strerror}") from None

    def expand(self, remote):
        return os.path.expanduser(remote)

    def read_from(self, remote, offset, limit=16 << 20):
        try:
            with open(remote, "rb") as handle:
                handle.seek(offset)
                return handle.read(limit)
        except FileNotFoundError:
            return b""
        except OSError as exc:
            raise TransportError(f"{self.device}: cannot read {remote}: {exc.strerror or exc}") from None

    def free_bytes(self, remote):
        path = Path(remote)
        while not path.exists() and path != path.parent:
            path = path.parent
        return shutil.disk_usage(path).free


def _copy_atomic(source: Path, destination: Path) -> Transfer:
    start = time.perf_counter()
    # unique per copy, not just per process: two threads copying to one place must not share it
    tmp = destination.with_name(f".{destination.name}.part-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, tmp)
        os.replace(tmp, destination)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise TransportError(f"local: copying {source} to {destination} failed: {exc.strerror or exc}") from None
    size = destination.stat().st_size
    return Transfer(str(source), str(destination), size, sha256_file(destination), size,
                    time.perf_counter() - start)
