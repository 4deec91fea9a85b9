"""Acquire or release a labgrid place and read its SSH service: run by the lab's labgrid Python.

labgrid is the lab's installation, not edgeq's: it pins grpcio/protobuf and adds a pytest
plugin, so it often lives in a venv of its own. The labgrid transport runs this file with
that interpreter (``labgrid_python``) and reads one JSON line from its stdout:

    python labgrid_helper.py acquire COORDINATOR PLACE [PID]  → {"ok": true, "service": {address, port, username}}
    python labgrid_helper.py release COORDINATOR PLACE [PID]  → {"ok": true}
    (any failure)                                             → {"ok": false, "kind": ..., "error": "one line"}

It goes through labgrid's own client session, so acquiring means exactly what
``labgrid-client acquire`` means (same user/host identity, LG_USERNAME/LG_HOSTNAME,
same refusal when someone else holds the place). Only imports the standard library at
module level: edgeq's transport registry imports this module to look for TRANSPORT.
Tested with labgrid 26.0.1.

An acquisition edgeq makes carries its owner in the place's tag ``edgeq_owner`` (this host,
as a hash, the edgeq process PID and that process's start time), so it is recognisable as
edgeq's in ``labgrid-client show`` and a stale one can be recovered: a place held as this
user whose tag names an edgeq process of this host that is gone (killed with -9, a crash)
is taken over — used, and released when the new run ends — and the answer says so
(``adopted``). A place held as this user without the tag is the user's own acquisition:
used and left acquired. One whose tag names a live edgeq process is busy (another run is
using it). The tag's value only uses ``[a-z0-9_]``, what labgrid's tag rules allow.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import sys


def _session(coordinator: str, place: str):
    from labgrid.remote.client import start_session

    args = argparse.Namespace(place=place, allow_unmatched=False, kick=False, tags=[])
    return start_session(coordinator, extra={"args": args})


OWNER_TAG = "edgeq_owner"


def _network_service(session, place_name: str) -> dict | None:
    """The place's NetworkService as labgrid has it: values passed on unchecked (the host checks them)."""
    place = session.get_place(place_name)
    for (name, cls), resource in session.get_target_resources(place).items():
        if cls == "NetworkService":
            params = resource.args if isinstance(resource.args, dict) else {}
            return {"name": name, "address": params.get("address"), "port": params.get("port", 22),
                    "username": params.get("username")}
    return None


def _host_id() -> str:
    import hashlib
    import socket

    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:12]


def _start_ticks(pid: int) -> int:
    """When process ``pid`` started (clock ticks since boot, /proc); 0 where that cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
        return int(stat[stat.rfind(b")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return 0


def _owner_mark(pid: int) -> str:
    return f"{_host_id()}_{pid}_{_start_ticks(pid)}"


def _parse_mark(value) -> dict | None:
    parts = value.split("_") if isinstance(value, str) else []
    if len(parts) != 3 or not all(parts) or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    return {"host": parts[0], "pid": int(parts[1]), "start": int(parts[2]), "value": value}


def _alive(mark: dict) -> bool:
    """Whether the edgeq process a mark names (on this host) still runs: same PID, same start time."""
    try:
        os.kill(mark["pid"], 0)
    except ProcessLookupError:
        return False
    except OSError:
        pass  # exists, not ours to signal
    return not mark["start"] or _start_ticks(mark["pid"]) in (0, mark["start"])


def _set_owner(session, place: str, value: str) -> None:
    """Set (or, with "", remove) the edgeq_owner tag through labgrid-client's own set-tags."""
    from labgrid.remote.client import ClientSession

    session.args.tags = [f"{OWNER_TAG}={value}"]
    with contextlib.redirect_stdout(sys.stderr):
        session.loop.run_until_complete(ClientSession.set_tags(session))


def acquire(coordinator: str, place: str, owner_pid: int | None = None) -> dict:
    """Acquire the place (tagged as edgeq's), use the user's own acquisition as it is, or take over
    one a gone edgeq process of this host left acquired."""
    session = _session(coordinator, place)
    me = f"{session.gethostname()}/{session.getuser()}"
    found = session.get_place(place)
    mark = _parse_mark((found.tags or {}).get(OWNER_TAG))
    already_ours, adopted = found.acquired == me, None
    if already_ours and mark is not None:
        if mark["host"] != _host_id():
            return {"ok": False, "kind": "busy", "error": f"place {place} is acquired as {me} by edgeq (pid "
                    f"{mark['pid']}) on another host; if that run has ended, release it: "
                    f"labgrid-client -p {place} release"}
        if mark["pid"] == owner_pid:
            pass  # this very process holds it (a connection inside another): that one releases it
        elif _alive(mark):
            return {"ok": False, "kind": "busy", "error": f"place {place} is in use by another edgeq run "
                    f"(pid {mark['pid']}, still running)"}
        else:
            already_ours, adopted = False, {"pid": mark["pid"]}  # its owner is gone: ours to use and release
    if not already_ours and adopted is None:
        with contextlib.redirect_stdout(sys.stderr):  # labgrid prints "acquired place …"
            session.loop.run_until_complete(session._acquire_place(place))
    try:
        if not already_ours and owner_pid:
            _set_owner(session, place, _owner_mark(owner_pid))
        service = _network_service(session, place)
    except BaseException:
        if not already_ours:
            _give_back(session, place)
        raise
    if service is None:
        if not already_ours:
            _give_back(session, place)
        return {"ok": False, "kind": "config", "error": f"place {place} has no NetworkService resource "
                                                          "(edgeq reaches the board over its SSH service)"}
    return {"ok": True, "service": service, "holder": me, "already_ours": already_ours, "adopted": adopted}


def _give_back(session, place: str) -> None:
    try:
        _set_owner(session, place, "")
        with contextlib.redirect_stdout(sys.stderr):
            session.loop.run_until_complete(session._release_place(place))
    except Exception:  # the first failure is the one to report
        pass


def release(coordinator: str, place: str, owner_pid: int | None = None) -> dict:
    """Release the place this run acquired; one whose tag names another edgeq process is left to it."""
    session = _session(coordinator, place)
    mark = _parse_mark((session.get_place(place).tags or {}).get(OWNER_TAG))
    if owner_pid and mark is not None and (mark["host"], mark["pid"]) != (_host_id(), owner_pid):
        return {"ok": False, "kind": "taken", "error": f"place {place} is now held by edgeq pid {mark['pid']}: "
                                                         "left to it"}
    if mark is not None:
        _set_owner(session, place, "")
    with contextlib.redirect_stdout(sys.stderr):
        session.loop.run_until_complete(session._release_place(place))
    return {"ok": True}


def _failure(exc: BaseException) -> dict:
    text = " ".join(str(exc).split()) or type(exc).__name__
    busy = "already acquired" in text or "acquired by" in text
    unreachable = isinstance(exc, (ConnectionError, OSError)) or "connect" in text.lower()
    kind = "busy" if busy else "unreachable" if unreachable else "labgrid"
    return {"ok": False, "kind": kind, "error": text[:400]}


def main(argv: list[str]) -> int:
    # Run as a file, this folder heads sys.path, and edgeq's labgrid.py there would shadow labgrid.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    if len(argv) not in (3, 4) or argv[0] not in ("acquire", "release") or (len(argv) == 4 and not argv[3].isdigit()):
        print(json.dumps({"ok": False, "kind": "usage", "error": "usage: acquire|release COORDINATOR PLACE [PID]"}))
        return 2
    op, coordinator, place = argv[:3]
    owner_pid = int(argv[3]) if len(argv) == 4 else None
    if importlib.util.find_spec("labgrid") is None:
        print(json.dumps({"ok": False, "kind": "missing", "error": f"{sys.executable} has no labgrid module"}))
        return 2
    try:
        answer = (acquire if op == "acquire" else release)(coordinator, place, owner_pid)
    except BaseException as exc:  # labgrid's UserError/ServerError, gRPC errors, timeouts: all one line
        answer = _failure(exc)
    print(json.dumps(answer, default=str), flush=True)
    return 0 if answer["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
