"""An SSH channel as a transport ``Process`` (the agent's session, its receiver, a sampler) and a
command's whole output: what ``ssh.SshTransport`` starts and runs.

``SshProcess`` waits on an event paramiko sets when data arrives (never ``Channel.fileno()``: its
pipe races paramiko's own thread, paramiko issues #692/#2271) and drains stderr on a thread of
its own so a chatty child never blocks.
"""

from __future__ import annotations

import socket
import threading
import time

import paramiko

from edgeq.devices.transport.base import Process

CHUNK = 1 << 20


class SshProcess(Process):
    def __init__(self, channel: paramiko.Channel):
        self.channel = channel
        # Set by paramiko while stdout data waits or the channel has ended. Never Channel.fileno():
        # its OS pipe is written and closed from several threads without a lock, and after the
        # channel closes, a late write or close hits whatever descriptor reused the number --
        # another board's socket (paramiko issues #692, #2271).
        self._readable = threading.Event()
        channel.in_buffer.set_event(self._readable)
        self._stderr = bytearray()
        self._window = channel.out_window_size  # the far end's whole window, as seen idle (in_flight)
        self._on_kill: list = []
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self):
        """Keep stderr's tail. Read from the channel, not through ``makefile_stderr``: a paramiko file object left
        to the garbage collector (an error's traceback keeps the session alive until exit) printed "Exception
        ignored in BufferedFile.__del__" with a traceback after edgeq's one-line error."""
        while True:
            try:
                chunk = self.channel.recv_stderr(CHUNK)  # b"" once the channel has closed
            except (OSError, EOFError, paramiko.SSHException):
                return
            if not chunk:
                return
            self._stderr += chunk
            del self._stderr[:-16000]

    def read_some(self, limit, timeout):
        """Waits on the stdout buffer's event, never setting the channel's timeout: the stderr drain
        and a request being written on another thread (``write_all``) share it."""
        if not self._readable.wait(timeout):
            return None
        return self.channel.recv(limit)  # b"" once the channel has ended and its data is read

    def write_some(self, data):
        if not self.channel.send_ready():  # no window: a send would wait
            return 0
        return self._send(data)

    def write_all(self, data):
        view = memoryview(data)
        while view:
            view = view[self._send(view):]

    def _send(self, data) -> int:
        sent = self.channel.send(data[:1 << 16])  # a packet is at most 32 KiB: paramiko copies what it sends
        if sent == 0 and len(data):
            raise BrokenPipeError("the channel to the agent is closed")
        return sent

    def in_flight(self) -> int:
        """Bytes written to stdin that the far end has not taken yet: what its SSH window has not given back
        (its whole window is the largest seen: OpenSSH opens a session with none and grants it after).
        Call it once while idle, before sending. The push's codec measures the link with it (``stream_push``)."""
        window = self.channel.out_window_size
        self._window = max(self._window, window)
        return self._window - window

    def stderr_tail(self, limit: int = 4000) -> str:
        self._reader.join(timeout=0.5)
        return bytes(self._stderr[-limit:]).decode(errors="replace")

    def wait(self, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.channel.exit_status_ready():
            if self.channel.closed and not self.channel.get_transport().is_active():
                return -1
            if deadline is not None and time.monotonic() > deadline:
                return None
            time.sleep(0.05)
        return self.channel.recv_exit_status()

    def kill(self):
        """Close the channel now (its stderr reader then ends), not at interpreter exit; then what ``on_kill``
        named ends too."""
        self.channel.close()
        callbacks, self._on_kill = self._on_kill, []
        for callback in callbacks:
            callback()

    def on_kill(self, callback) -> None:
        """Call ``callback`` once this process is killed (an agent session's receiver ends with the session)."""
        self._on_kill.append(callback)


def read_all(channel: paramiko.Channel, timeout: float | None) -> tuple[bytes, bytes]:
    out, err = bytearray(), bytearray()
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        if deadline is not None and time.monotonic() > deadline:
            channel.close()
            raise socket.timeout()
        if channel.recv_ready():
            out += channel.recv(CHUNK)
        elif channel.recv_stderr_ready():
            err += channel.recv_stderr(CHUNK)
        elif channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready():
            break
        else:
            time.sleep(0.002)
    return bytes(out), bytes(err)
