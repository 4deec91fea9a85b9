"""One measuring job per board: the device lock, and the detached soak that keeps it."""

import errno
import json
import os
import subprocess
import time

from .archive import agent_command

LOCK_FILE = "lock"
LOCK_POLL_S = 0.25
LOCK_EVENT_S = 5.0  # while waiting, an event this often keeps the host's deadline alive


class DeviceLock:
    """One measuring job per board: an flock on WORKDIR/lock, holder facts inside it.

    The kernel drops an flock when its last holder exits, however it exits, so a crashed
    job never leaves the board locked: stale facts in the file are never read while the
    lock is free. A detached soak inherits the descriptor and keeps the board for its
    whole duration after the session that started it has gone.
    """

    def __init__(self, root):
        self.path = os.path.join(os.path.expanduser(root), LOCK_FILE)
        self.fd = None

    def try_acquire(self, owner):
        """None when this process now holds the lock, else the holder's facts."""
        import fcntl

        if self.fd is not None:
            return None
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            return self.holder() or {"unknown": True}
        self.fd = fd
        self.describe(dict(owner or {}, agent_pid=os.getpid(), since=time.time()))
        return None

    def describe(self, facts):
        """Write who holds the lock (only the holder calls this)."""
        data = json.dumps(facts, sort_keys=True).encode()[:4096]
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def holder(self):
        """The facts the current holder wrote, or None when nobody holds the lock."""
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                pass  # held: its facts are current
            else:
                return None  # free: whatever the file says is stale
            raw = os.read(fd, 4096)
        finally:
            os.close(fd)
        try:
            facts = json.loads(raw.decode("utf-8", "replace"))
        except ValueError:
            return {"unknown": True}
        return facts if isinstance(facts, dict) else {"unknown": True}

    def wait(self, owner, wait_s, on_wait):
        """Acquire, polling for up to wait_s; the holder's facts if it stayed busy."""
        deadline = time.monotonic() + max(0.0, float(wait_s))
        next_event = time.monotonic()
        while True:
            holder = self.try_acquire(owner)
            now = time.monotonic()
            if holder is None or now >= deadline:
                return holder
            if now >= next_event:
                on_wait({"event": "lock_wait", "holder": holder, "left_s": round(deadline - now, 1)})
                next_event = now + LOCK_EVENT_S
            time.sleep(min(LOCK_POLL_S, max(0.0, deadline - now)))

    def release(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def launch_soak(job_path, lock_fd):
    """Start a detached soak (its own session, output to agent.log) that inherits lock_fd; its pid."""
    log = open(os.path.join(os.path.dirname(job_path), "agent.log"), "ab")
    try:
        child = subprocess.Popen(agent_command(["soak", job_path]),
                                 cwd=os.path.dirname(job_path), stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=log, start_new_session=True,
                                 pass_fds=() if lock_fd is None else (lock_fd,))
    finally:
        log.close()
    return child.pid
