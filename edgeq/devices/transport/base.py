"""The small protocol every transport speaks: run, start, put, get, close.

Records (``Result``, ``Transfer``) are plain data; behaviour lives in the transport
classes. Paths on the device are POSIX strings; paths on the host are ``Path``.
"""

from __future__ import annotations

import abc
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Mapping, Sequence

from edgeq.devices.transport.settings import Setting, Settings, read_settings
from edgeq.errors import RemoteCommandFailed
from edgeq.files import sha256_file  # noqa: F401  (transports and tests read it from here)


@dataclass(frozen=True)
class Result:
    """What one command did; ``ok`` is true for exit code 0."""

    device: str
    command: str
    exit_code: int
    stdout: str
    stderr: str
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


@dataclass(frozen=True)
class Transfer:
    """One file moved (or found already there: ``skipped``).

    ``bytes_moved``: bytes of the file sent (less than ``size`` after a resume); ``wire_bytes``: what
    they took on the link, streamed through the agent's receiver (less when compressed; None otherwise)."""

    source: str
    destination: str
    size: int
    sha256: str
    bytes_moved: int
    duration_s: float
    skipped: bool = False
    wire_bytes: int | None = None


class Process(abc.ABC):
    """A command running on the device with binary pipes, for the agent protocol.

    The agent session uses its stdin and stdout through the three methods below, on the
    caller's thread: it waits for an answer with a deadline and no reader thread (a thread's
    hand-off per answer, fighting a busy search for the GIL, cost more than a small request),
    and it writes without waiting when it can, so a full pipe never blocks the thread that
    must read. The built-in transports implement them on the descriptors. A transport that
    only gives ``stdin`` and ``stdout`` file objects (as every one did before) still works:
    the defaults read stdout on a thread of their own and never write without waiting.
    """

    stdin: IO[bytes] | None = None
    stdout: IO[bytes] | None = None
    _chunks: "_ChunkReader | None" = None

    def read_some(self, limit: int, timeout: float | None) -> bytes | None:
        """Up to ``limit`` bytes of stdout as soon as any arrive; b"" once it has ended, None when
        nothing arrived within ``timeout`` seconds (None: wait as long as it takes)."""
        if self._chunks is None:
            self._chunks = _ChunkReader(self.stdout, limit)
        return self._chunks.next(timeout)

    def write_some(self, data: bytes) -> int:
        """How many leading bytes of ``data`` went to stdin at once, without waiting (0 when its pipe or
        window is full); OSError when stdin is closed."""
        return 0

    def write_all(self, data: bytes) -> None:
        """All of ``data`` to stdin, waiting for room as long as it takes; OSError when stdin is closed."""
        self.stdin.write(data)
        self.stdin.flush()

    @abc.abstractmethod
    def stderr_tail(self, limit: int = 4000) -> str: ...

    @abc.abstractmethod
    def wait(self, timeout: float | None = None) -> int | None: ...

    @abc.abstractmethod
    def kill(self) -> None: ...


class _ChunkReader:
    """``Process.read_some`` for a process with only a ``stdout`` file object: a thread reads it ahead,
    a few chunks at most (a flooding agent then waits on its pipe, not in host memory)."""

    def __init__(self, stdout: IO[bytes], limit: int):
        self.chunks: queue.Queue = queue.Queue(maxsize=4)
        self.ended = False
        threading.Thread(target=self._pump, args=(stdout, limit), daemon=True).start()

    def _pump(self, stdout: IO[bytes], limit: int) -> None:
        read = getattr(stdout, "read1", None) or stdout.readline
        chunk = b"-"
        while chunk:
            try:
                chunk = read(limit)
            except (OSError, ValueError, EOFError):
                chunk = b""
            self.chunks.put(chunk)

    def next(self, timeout: float | None) -> bytes | None:
        if self.ended:
            return b""
        try:
            chunk = self.chunks.get(timeout=timeout)
        except queue.Empty:
            return None
        self.ended = not chunk
        return chunk


class Transport(abc.ABC):
    """One way of reaching a device. Subclasses implement the ``*_impl`` hooks.

    ``SETTINGS`` is the table of the inventory keys this transport reads beyond what every
    device has; the inventory checks an entry's other keys with it (``read_settings``).
    """

    SETTINGS: tuple[Setting, ...] = ()
    # True when the device reads this host's files where they are (the local device): a
    # push then sends nothing and stores nothing, so no model or input set is kept twice
    SHARES_HOST_FILES = False

    def __init__(self, device: str):
        self.device = device

    @classmethod
    def for_device(cls, device) -> "Transport":
        """Open this transport for an inventory ``Device``; subclasses read ``settings_of(device)``."""
        return cls(device)

    @classmethod
    def read_settings(cls, device: str, entry: Mapping, where: str | None = None) -> Settings:
        """An inventory entry's transport keys for device ``device``, checked and defaulted."""
        return read_settings(cls.SETTINGS, entry, where or f"device {device}")

    @classmethod
    def settings_of(cls, device) -> Settings:
        """A ``Device``'s settings completed with this table's defaults (also for one built in code)."""
        return cls.read_settings(device.name, device.settings)

    @classmethod
    def summary(cls, settings: Mapping) -> list[str]:
        """Where the device is, then its other settings, as words for ``edgeq devices list``.

        By default every setting that differs from its default, as ``key=value``.
        """
        return [f"{s.name}={settings.get(s.name)}" for s in cls.SETTINGS if settings.get(s.name) != s.default]

    def run(self, argv: Sequence[str], *, stdin: bytes | None = None,
            timeout: float | None = 60.0, check: bool = True) -> Result:
        """Run argv (never a shell string) and raise RemoteCommandFailed on failure."""
        result = self._run_impl(list(argv), stdin, timeout)
        if check and not result.ok:
            raise RemoteCommandFailed(result)
        return result

    def start(self, argv: Sequence[str]) -> Process:
        return self._start_impl(list(argv))

    def put(self, local: Path, remote: str, *, sha256: str | None = None,
            hasher: Callable[[str], str] | None = None) -> Transfer:
        """Upload atomically and verified: a partial or corrupted upload never sits under the final name.

        ``sha256`` is the local file's digest if already known; ``hasher`` computes a device
        file's digest (e.g. through a running agent) instead of a separate command.
        """
        local = Path(local)
        return self._put_impl(local, remote, sha256 or sha256_file(local), hasher)

    def get(self, remote: str, local: Path) -> Transfer:
        return self._get_impl(remote, Path(local))

    def close(self) -> None:
        """Release connections; a no-op for transports that hold none."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @abc.abstractmethod
    def _run_impl(self, argv: list[str], stdin: bytes | None, timeout: float | None) -> Result: ...

    @abc.abstractmethod
    def _start_impl(self, argv: list[str]) -> Process: ...

    @abc.abstractmethod
    def _put_impl(self, local: Path, remote: str, sha256: str, hasher) -> Transfer: ...

    @abc.abstractmethod
    def _get_impl(self, remote: str, local: Path) -> Transfer: ...

    @abc.abstractmethod
    def exists(self, remote: str) -> bool: ...

    @abc.abstractmethod
    def makedirs(self, remote: str) -> None: ...

    @abc.abstractmethod
    def read_from(self, remote: str, offset: int, limit: int = 16 << 20) -> bytes:
        """Bytes of a growing device file from ``offset`` (b"" if it does not exist yet)."""

    def free_bytes(self, remote: str) -> int | None:
        """Free space where ``remote`` lives; None when the device can't say."""
        return None

    # A receiver: the agent's ``receive`` process, which takes pushes hashed as they are written. Transports
    # without one keep these no-ops, and their pushes go through ``put``.

    def use_receiver(self, agent: str) -> None:
        """Start the receiver of the agent at device path ``agent`` (in the background) for later pushes."""

    def bind_receiver(self, process: Process) -> None:
        """End the receiver with ``process`` (an agent session's)."""

    def push_streamed(self, local: Path, remote: str, sha256: str, record: bool = False) -> Transfer | None:
        """Push through the receiver (``record``: recorded as edgeq's before its rename); None: use ``put``."""
        return None

    @abc.abstractmethod
    def expand(self, remote: str) -> str:
        """Resolve ``~`` in a device path the way the device's user would."""


