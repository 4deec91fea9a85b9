"""Acquire or release a labgrid place and read its SSH service: run by the lab's labgrid Python.

labgrid is the lab's installation, not edgeq's: it pins grpcio/protobuf and adds a pytest
plugin, so it often lives in a venv of its own. The labgrid transport runs this file with
that interpreter (``labgrid_python``) and reads one JSON line from its stdout:

    python labgrid_helper.py acquire COORDINATOR PLACE  → {"ok": true, "service": {address, port, username}}
    python labgrid_helper.py release COORDINATOR PLACE  → {"ok": true}
    (any failure)                                       → {"ok": false, "kind": ..., "error": "one line"}

It goes through labgrid's own client session, so acquiring means exactly what
``labgrid-client acquire`` means (same user/host identity, LG_USERNAME/LG_HOSTNAME,
same refusal when someone else holds the place). Only imports the standard library at
module level: edgeq's transport registry imports this module to look for TRANSPORT.
Tested with labgrid 26.0.1.
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

    args = argparse.Namespace(place=place, allow_unmatched=False, kick=False)
    return start_session(coordinator, extra={"args": args})


def _network_service(session, place_name: str) -> dict | None:
    place = session.get_place(place_name)
    for (name, cls), resource in session.get_target_resources(place).items():
        if cls == "NetworkService":
            params = resource.args
            return {"name": name, "address": params["address"], "port": int(params.get("port") or 22),
                    "username": params.get("username")}
    return None


def acquire(coordinator: str, place: str) -> dict:
    """Acquire the place, or use it as it is when this user on this host holds it already."""
    session = _session(coordinator, place)
    me = f"{session.gethostname()}/{session.getuser()}"
    already_ours = session.get_place(place).acquired == me
    if not already_ours:
        with contextlib.redirect_stdout(sys.stderr):  # labgrid prints "acquired place …"
            session.loop.run_until_complete(session._acquire_place(place))
    service = _network_service(session, place)
    if service is None:
        if not already_ours:
            with contextlib.redirect_stdout(sys.stderr):
                session.loop.run_until_complete(session._release_place(place))
        return {"ok": False, "kind": "config", "error": f"place {place} has no NetworkService resource "
                                                          "(edgeq reaches the board over its SSH service)"}
    return {"ok": True, "service": service, "holder": me, "already_ours": already_ours}


def release(coordinator: str, place: str) -> dict:
    session = _session(coordinator, place)
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
    if len(argv) != 3 or argv[0] not in ("acquire", "release"):
        print(json.dumps({"ok": False, "kind": "usage", "error": "usage: acquire|release COORDINATOR PLACE"}))
        return 2
    op, coordinator, place = argv
    if importlib.util.find_spec("labgrid") is None:
        print(json.dumps({"ok": False, "kind": "missing", "error": f"{sys.executable} has no labgrid module"}))
        return 2
    try:
        answer = (acquire if op == "acquire" else release)(coordinator, place)
    except BaseException as exc:  # labgrid's UserError/ServerError, gRPC errors, timeouts: all one line
        answer = _failure(exc)
    print(json.dumps(answer), flush=True)
    return 0 if answer["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
