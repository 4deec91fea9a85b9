"""The one way a job opens an agent session (``devices.session.open_session``), on the real
local agent and on the loopback sshd: the lock is taken and let go with the session, a
second locked opener is refused naming the holder, an error or Ctrl-C inside releases
everything, and nothing (agent process, SSH connection) is left behind."""

from __future__ import annotations

import os
import threading
import time

import paramiko
import pytest

from edgeq.devices.inventory import connect
from edgeq.devices.probe import probe_lock
from edgeq.devices.session import open_session
from edgeq.errors import AgentError, DeviceBusy
from lab import agent_processes

PATIENCE_S = 180  # bound for "eventually" on a loaded machine; never a timing assertion


@pytest.fixture(params=["local", "ssh_device"])
def board(request):
    if request.param == "local":
        return request.getfixturevalue("local")
    return request.getfixturevalue("ssh_device")[0]


def _agents(workdir: str) -> list[int]:
    """Live agent processes started from this board's store (the workdir is the test's own)."""
    return agent_processes(os.path.join(workdir, "agents"))


def _ssh_links() -> list[paramiko.Transport]:
    return [t for t in threading.enumerate() if isinstance(t, paramiko.Transport) and t.is_alive()]


def _eventually(check) -> bool:
    deadline = time.monotonic() + PATIENCE_S
    while not check() and time.monotonic() < deadline:
        time.sleep(0.1)
    return check()


def _released(board, workdir: str, links_before: int) -> None:
    """The session's agent has ended, the opener's SSH connection is closed, and the board is free."""
    assert _eventually(lambda: not _agents(workdir)), "an agent process was left running"
    assert _eventually(lambda: len(_ssh_links()) <= links_before), "an SSH connection was left open"
    assert probe_lock(board) == {"held": False, "holder": None}


def test_a_locked_session_holds_the_board_until_it_closes(board):
    links = len(_ssh_links())
    with open_session(board, lock=True) as opened:
        workdir = opened.workdir
        assert opened.lock["acquired"] and opened.lock["path"] == os.path.join(workdir, "lock")
        assert opened.facts["agent_sha256"] and opened.deployer.hasher == opened.session.sha256
        seen = probe_lock(board)  # another session, from outside
        assert seen["held"] and seen["holder"]["pid"] == os.getpid()
        assert len(_agents(workdir)) >= 1
    _released(board, workdir, links)


def test_a_second_locked_opener_is_refused_naming_the_holder(board):
    links = len(_ssh_links())
    with open_session(board, lock=True) as first:
        running = set(_agents(first.workdir))
        with pytest.raises(DeviceBusy) as caught:
            with open_session(board, lock=True):
                pytest.fail("a second job got the board")
        message = str(caught.value)
        assert message.startswith(f"{board.name}: device busy: held by ")
        assert f"pid {os.getpid()}" in message and "--wait SECONDS" in message
        # the refused opener's own agent is gone; the holder's is untouched and still holds
        assert _eventually(lambda: set(_agents(first.workdir)) <= running)
        assert first.session.request("lock_status", root=first.workdir, timeout=60)["held"]
    _released(board, first.workdir, links)


def test_a_waiting_opener_reports_each_wait_and_names_the_holder(local):
    lines: list[str] = []
    with open_session(local, lock=True):
        with pytest.raises(DeviceBusy, match=r"device busy after waiting 0\.5 s: held by .*pid "):
            with open_session(local, lock=True, wait_s=0.5, on_wait=lines.append):
                pass
    assert lines and all(line.startswith("local: waiting for the device (held by ") for line in lines)


def test_an_unlocked_session_leaves_the_board_free(board):
    with open_session(board, lock=False, hello=False) as opened:
        assert opened.lock is None and opened.facts == {}
        assert probe_lock(board)["held"] is False
        with open_session(board, lock=True) as locked:  # nothing in the way of a measuring job
            assert locked.lock["acquired"]


@pytest.mark.parametrize("raised", [RuntimeError, KeyboardInterrupt])
def test_an_error_or_ctrl_c_inside_releases_everything(board, raised):
    links = len(_ssh_links())
    with pytest.raises(raised):
        with open_session(board, lock=True) as opened:
            workdir = opened.workdir
            raise raised("inside the job")
    _released(board, workdir, links)


def test_a_failure_while_opening_leaves_nothing_open(board):
    links = len(_ssh_links())
    with pytest.raises(AgentError, match="cannot run python") as caught:
        with open_session(board, lock=True, python="/nonexistent/python3"):
            pytest.fail("opened without an interpreter")
    assert caught.value.kind == "NoPython"
    assert _eventually(lambda: len(_ssh_links()) <= links), "an SSH connection was left open"
    assert probe_lock(board)["held"] is False


def test_a_connection_the_caller_made_stays_open(board):
    with connect(board) as transport:
        with open_session(board, transport=transport, lock=True) as opened:
            assert opened.transport is transport
            workdir = opened.workdir
        assert _eventually(lambda: not _agents(workdir))
        assert transport.exists(workdir)  # still usable: the opener closes only what it opened
