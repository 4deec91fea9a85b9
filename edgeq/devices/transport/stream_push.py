"""Pushes through the agent's receiver: one pass over the bytes on each side, compressed when it pays.

``Receiver`` is the agent's ``receive`` entry (``device_agents/edgeq_agent/receive.py``, wire rules
there) running on the device on a channel of its own, started beside the agent session as soon as
the agent is on the device. ``Receiver.push`` streams one file through it: a thread reads the file
a block at a time, hashes it and compresses the block when that pays, while the caller's thread
sends the frames, several blocks in flight; the device writes, inflates and hashes them as they
arrive, fsyncs, and renames the part into place only when the sha256 of what it wrote is the one
the host named. No second read on either side: the answer carries the device's digest.

Which codec carries each block (raw, zlib, xz): ``push_codec``. ``StreamPusher`` keeps one
receiver per SSH connection: started in the background, started again after a reconnect, ended
with the agent session, given up for SFTP when it cannot run.
"""

from __future__ import annotations

import hashlib
import json
import queue
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from device_agents.edgeq_agent.receive import ABORT, END, FRAME
from edgeq.devices.transport.base import Transfer
from edgeq.devices.transport.push_codec import BLOCK, WORKERS, Codec
from edgeq.errors import TransportError

IN_FLIGHT = 2  # frames ready ahead of the sender (more would be encoded before the link is measured)
NOISE_BYTES = 64 << 10  # a login script's output tolerated before the ready line
READY_TIMEOUT_S = 15.0  # started in the background while the session starts: a slow board's Python and numpy
ANSWER_TIMEOUT_S = 600.0  # after the last frame: fsync and rename of a large file on a slow card


class ReceiverGone(TransportError):
    """The receiver's channel ended (the link was cut, the process died): retry or fall back."""


class ReceiverFailed(TransportError):
    """The receiver answered that it could not store the file (``kind``: Mismatch, NoSpace, Offset, OSError...)."""

    def __init__(self, message: str, answer: dict):
        super().__init__(message)
        self.answer, self.kind = answer, answer.get("kind")


class Receiver:
    """One running ``receive`` process; ``process`` is a transport ``Process`` (its stdin and stdout)."""

    def __init__(self, process, codec: Codec | None = None):
        self.process, self.codec = process, codec or Codec()
        self._pending = bytearray()
        self.ready = self.broken = False

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> dict:
        """The ready line; lines before it that are not JSON (a login script's echo) are skipped."""
        deadline, skipped = time.monotonic() + timeout, 0
        while True:
            line = self._line(deadline)
            try:
                message = json.loads(line)
            except ValueError:
                message = None
            if isinstance(message, dict) and message.get("ready"):
                self.ready = True
                return message
            if isinstance(message, dict):  # JSON, but not a receiver's (something else runs as the device's python)
                self.close()
                raise ReceiverGone(f"the receiver answered {line[:80]!r}, not its ready line")
            skipped += len(line)
            if skipped > NOISE_BYTES:
                raise ReceiverGone(f"the receiver printed {skipped} bytes that are not its ready line")

    def push(self, local: Path, part: str, final: str, sha256: str, offset: int = 0,
             record: bool = False) -> dict:
        """Stream ``local`` from ``offset`` into ``part``, renamed to ``final`` once verified; the answer.

        ReceiverFailed when the device refused the file (its part is gone), ReceiverGone when the
        channel ended (the part stays, for a resume). Any other error (Ctrl-C among them) leaves the
        stream in the middle of a frame: the receiver is closed, never used again.
        """
        try:
            return self._push(local, part, final, sha256, offset, record)
        except ReceiverFailed:
            raise
        except BaseException:
            self.close()
            raise

    def _push(self, local: Path, part: str, final: str, sha256: str, offset: int, record: bool) -> dict:
        if self.broken:
            raise ReceiverGone("the receiver was closed")
        size = local.stat().st_size
        header = {"part": part, "final": final, "sha256": sha256, "size": size, "offset": offset, "record": record}
        frames: queue.Queue = queue.Queue(maxsize=IN_FLIGHT)
        stop = threading.Event()
        sent = _Sent()
        producer = threading.Thread(target=self._produce, args=(local, offset, size, frames, stop, sent),
                                    daemon=True, name="edgeq-push-reader")
        in_flight = getattr(self.process, "in_flight", None)  # bytes the far end has not taken yet, if countable
        self.codec.counting = in_flight is not None
        if in_flight is not None:
            in_flight()  # the idle window, before this file's first byte
        first, total = time.perf_counter(), 0
        self.codec.begin_file(first)
        total += self._send((json.dumps(header) + "\n").encode())
        producer.start()
        try:
            while True:
                try:
                    item = frames.get(timeout=0.05)
                except queue.Empty:  # the encoders wait for a link figure, or work: keep counting meanwhile
                    if in_flight is not None:
                        waiting = in_flight()
                        self.codec.note_delivery(total - waiting, waiting, time.perf_counter())
                    continue
                if isinstance(item, BaseException):
                    self._send(FRAME.pack(ABORT, 0))
                    self.answer()
                    raise TransportError(f"cannot read {local}: {item}") from item
                started = time.perf_counter()
                total += self._send(item)
                self.codec.note_link(len(item), time.perf_counter() - started)
                if in_flight is not None:
                    waiting = in_flight()
                    self.codec.note_delivery(total - waiting, waiting, time.perf_counter())
                sent.wire += len(item) - FRAME.size
                if item[0] == END:
                    break
        finally:
            stop.set()
            producer.join()
        answer = self.answer()
        answer.setdefault("wire", sent.wire)
        self.codec.note_device(answer.get("decode"))
        if answer.get("ok"):
            if offset == 0 and sent.digest not in (None, sha256):
                raise TransportError(f"{local} changed while it was pushed (sha256 {sent.digest[:12]}, "
                                     f"named {sha256[:12]})")
            return answer
        raise ReceiverFailed(str(answer.get("error") or answer), answer)

    def _produce(self, local: Path, offset: int, size: int, frames: queue.Queue, stop: threading.Event,
                 sent: "_Sent") -> None:
        """Read, hash and encode the blocks ahead of the sender, in order, WORKERS of them at once."""
        digest = hashlib.sha256() if offset == 0 else None
        pending: deque = deque()
        try:
            codec = self.codec.start(local, size)
            with open(local, "rb") as handle, ThreadPoolExecutor(WORKERS, "edgeq-push-codec") as pool:
                handle.seek(offset)
                for index, block in enumerate(iter(lambda: handle.read(BLOCK), b"")):
                    if digest is not None:
                        digest.update(block)
                    pending.append(pool.submit(codec.frame, block, index))
                    if len(pending) >= WORKERS and not _put(frames, pending.popleft().result(), stop):
                        return
                while pending:
                    if not _put(frames, pending.popleft().result(), stop):
                        return
            sent.digest = digest.hexdigest() if digest is not None else None
            _put(frames, FRAME.pack(END, 0), stop)
        except Exception as exc:  # the sender aborts this file and says why
            _put(frames, exc, stop)

    def answer(self, timeout: float = ANSWER_TIMEOUT_S) -> dict:
        line = self._line(time.monotonic() + timeout)
        try:
            message = json.loads(line)
        except ValueError:
            message = None
        if not isinstance(message, dict) or "ok" not in message:
            self.close()
            raise ReceiverGone(f"the receiver answered {line[:80]!r}, not a result")
        return message

    def _send(self, data: bytes) -> int:
        try:
            self.process.write_all(data)
            return len(data)
        except (OSError, EOFError, ValueError) as exc:  # paramiko's SSHException is no OSError: see below
            raise ReceiverGone(f"the link to the receiver broke while sending: {exc or exc.__class__.__name__}") \
                from None
        except Exception as exc:
            if exc.__class__.__module__.startswith("paramiko"):
                raise ReceiverGone(f"the link to the receiver broke while sending: {exc}") from None
            raise

    def _line(self, deadline: float) -> bytes:
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0:
                self.close()
                raise ReceiverGone("the receiver did not answer in time")
            try:
                chunk = self.process.read_some(64 << 10, left)
            except Exception as exc:  # noqa: BLE001 - any transport's read error means the channel is gone
                raise ReceiverGone(f"the link to the receiver broke: {exc}") from None
            if chunk == b"":
                tail = self.process.stderr_tail().strip().splitlines()[-2:]
                raise ReceiverGone("the receiver exited" + (f": {' | '.join(tail)}" if tail else ""))
            if chunk:
                self._pending += chunk
        line, _, rest = bytes(self._pending).partition(b"\n")
        self._pending = bytearray(rest)
        return line

    def close(self) -> None:
        self.broken = True
        try:
            self.process.kill()
        except Exception:  # noqa: BLE001 - closing a channel that is gone already
            pass


class _Sent:
    def __init__(self):
        self.wire, self.digest = 0, None


def _put(frames: queue.Queue, item, stop: threading.Event) -> bool:
    """Hand ``item`` to the sender; False once the sender has stopped listening."""
    while not stop.is_set():
        try:
            frames.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


class StreamPusher:
    """The receiver of one SSH transport: started in the background when asked for, started again
    after a reconnect, and given up (pushes then go over SFTP) when it cannot run at all.

    ``transport`` is an ``SshTransport``; this class uses its connection, retry settings and part
    names only through what is named here (``start``, ``close``, ``_remote_size``, its ``_client``).
    """

    def __init__(self, transport, argv: list[str]):
        self.transport, self.argv = transport, list(argv)
        self.codec = Codec()  # link and compressor figures outlive a reconnect
        self.receiver: Receiver | None = None
        self.failed: str | None = None  # why pushes went back to SFTP
        self.ended = False  # the session it served has ended
        self._starting: tuple[threading.Thread, dict] | None = None
        self.start()

    def start(self) -> None:
        """Open the receiver's channel on a thread: the device starts it while the caller goes on."""
        box: dict = {}

        def run():
            try:
                box["process"] = self.transport.start(self.argv)
            except BaseException as exc:  # noqa: BLE001 - handed to the thread that waits for it
                box["error"] = exc

        thread = threading.Thread(target=run, daemon=True, name="edgeq-receiver-start")
        thread.start()
        self._starting = (thread, box)

    def end_with(self, process) -> None:
        """Drop the receiver for good once ``process`` (the agent session's) is killed: it must not outlive
        the session on a connection the caller keeps open. Pushes after that go over SFTP."""
        def end():
            self.ended = True
            self.drop()

        if hasattr(process, "on_kill"):
            process.on_kill(end)

    def link_alive(self, wait_s: float = 1.0) -> bool:
        """After a channel broke: is the connection still up (the far process failed) or did the link go?
        paramiko notices a reset on its own thread: give it ``wait_s`` to do so."""
        client = self.transport._client
        link = client.get_transport() if client is not None else None
        deadline = time.monotonic() + wait_s
        while link is not None and link.is_active():
            if time.monotonic() > deadline:
                return True
            time.sleep(0.02)
        return False

    def drop(self) -> None:
        """Forget the running receiver (the connection is closing); the next push starts another."""
        if self._starting is not None:
            self._starting[0].join()
            process = self._starting[1].get("process")
            if process is not None:
                Receiver(process).close()
            self._starting = None
        if self.receiver is not None:
            self.receiver.close()
            self.receiver = None

    def ready(self) -> Receiver:
        if self.receiver is not None and self.receiver.broken:
            self.receiver = None
        if self.receiver is None:
            if self._starting is None:
                self.start()
            thread, box = self._starting
            thread.join()
            self._starting = None
            if "error" in box:
                error = box["error"]
                raise error if isinstance(error, TransportError) else ReceiverGone(f"cannot start the receiver: {error}")
            self.receiver = Receiver(box["process"], self.codec)
        if not self.receiver.ready:
            self.receiver.wait_ready()
        return self.receiver

    def put(self, local: Path, remote: str, part: str, adopted: bool, sha256: str, record: bool,
            started: float) -> Transfer | None:
        """Push ``local`` to ``remote`` through ``part`` with the transport's retries; None when the
        receiver cannot be used (the caller then pushes over SFTP, adopting what this left)."""
        transport, size = self.transport, local.stat().st_size
        offset = transport._remote_size(part) if adopted else 0
        resumed, restarted = offset > 0, False
        for attempt in range(transport.retries + 1):
            try:
                answer = self.ready().push(local, part, remote, sha256, offset, record)
                return Transfer(str(local), remote, size, answer["sha256"], size - offset,
                                time.perf_counter() - started, wire_bytes=answer.get("wire"))
            except ReceiverFailed as exc:
                if exc.kind in ("Mismatch", "Offset") and (resumed or exc.kind == "Offset") and not restarted:
                    offset, resumed, restarted = 0, False, True  # the part held other bytes: start over, once
                    continue
                if exc.kind == "Mismatch":
                    raise TransportError(f"{transport.device}: {local.name} arrived corrupted (sha256 mismatch: "
                                         f"{exc}); removed") from None
                if exc.kind == "NoSpace":
                    raise TransportError(f"{transport.device}: no space left on the device for {local.name} "
                                         f"({exc}); the part was removed") from None
                raise TransportError(f"{transport.device}: cannot store {local.name} at {remote}: {exc}") from None
            except ReceiverGone as exc:
                if self.link_alive():  # the link is fine: the receiver itself failed (or never started)
                    self.failed = str(exc)
                    self.drop()
                    print(f"{transport.device}: pushing over SFTP from now on ({exc})", file=sys.stderr)
                    return None
                if attempt == transport.retries:
                    raise TransportError(f"{transport.device}: upload of {local.name} failed after "
                                         f"{attempt + 1} attempts: {exc}") from None
                transport.close()
                time.sleep(transport.backoff_s * 2 ** attempt)
                try:
                    offset = transport._remote_size(part)
                except Exception as probe:  # noqa: BLE001 - the reconnect failed: the next attempt says so
                    offset = 0 if isinstance(probe, FileNotFoundError) else offset
                resumed = resumed or offset > 0
        raise AssertionError("unreachable")
