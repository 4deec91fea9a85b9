"""The agent's protocol: the request loop and its ops.

Protocol: one JSON object per line on stdin (a request), one JSON object per line
on stdout (events and one final answer per request). Logs go to stderr so they can
never corrupt the protocol stream.

    {"id": 1, "op": "hello"}
    {"id": 2, "op": "load", "model": "/path/m.tflite", "threads": 1, "resolver": "AUTO"}
    {"id": 3, "op": "run", "job": {...}}          -> progress events, then the answer
    {"id": 4, "op": "lock", "root": WORKDIR, "owner": {...}, "wait_s": 0}
                                                   -> {"acquired": bool, "holder": {...}}
    {"id": 5, "op": "launch_soak", "job": ".../job.json"} -> detached soak keeping the lock
    {"id": 6, "op": "infer", "float": PATH, "quant": PATH, "inputs": [{"dtype", "shape", "data"}]}
                                                   -> both models' outputs for a batch (see op_infer)
    {"id": 7, "op": "shutdown"}
    {"id": 8, "op": "install", "source": CAS_FILE, "sha256": HEX, "path": APP_PATH, "meta": {...}}
                                                   -> the model at the application's path (install.py;
                                                      also rollback, install_status)
    (also: load, df, sha256, store, record, lock_status, unlock)

Answers are {"id": N, "ok": true, "result": {...}} or
{"id": N, "ok": false, "error": {"type": "...", "message": "..."}}.
"""

import json
import os
import time

from .errors import AgentFailure, log
from .facts import device_facts
from .files import sha256_file
from .infer import InferPair, infer_inputs
from .install import INSTALL_OPS
from .jobs import check_job
from .lock import DeviceLock, launch_soak
from .run import run_job
from .runtime import import_runtime, open_interpreter, tensor_summary
from .store import STORE_PROTECT_S, record_made, tidy_store


class Agent:
    def __init__(self, stdout):
        self.stdout = stdout
        self.runtime = None
        self.lock = None
        self.pair = None  # the float/quantized InferPair kept loaded between infer requests

    def emit(self, request_id, payload):
        payload = dict(payload, id=request_id)
        self.stdout.write(json.dumps(payload) + "\n")
        self.stdout.flush()

    def ensure_runtime(self, preferred=None):
        if self.runtime is None or (preferred and self.runtime[0] != preferred):
            self.runtime = import_runtime(preferred)
        return self.runtime

    def handle(self, request):
        op = request.get("op")
        if op == "hello":
            try:
                runtime = self.ensure_runtime(request.get("runtime"))
            except AgentFailure as exc:
                facts = device_facts(None)
                facts["runtime_error"] = str(exc)
                return facts
            return device_facts(runtime)
        if op == "load":
            runtime = self.ensure_runtime(request.get("runtime"))
            interpreter = open_interpreter(runtime, request["model"], request.get("threads", 1),
                                           request.get("resolver", "AUTO"))
            return {"inputs": tensor_summary(interpreter.get_input_details()),
                    "outputs": tensor_summary(interpreter.get_output_details()),
                    "runtime": {"name": runtime[0], "version": runtime[1]}}
        if op == "run":
            job = request["job"]
            runtime = self.ensure_runtime(job.get("runtime"))
            return run_job(job, runtime, lambda event: self.emit(request.get("id"), event))
        if op == "df":
            usage = os.statvfs(request["path"])
            return {"free": usage.f_bavail * usage.f_frsize, "total": usage.f_blocks * usage.f_frsize}
        if op == "sha256":
            return {path: (sha256_file(path) if os.path.isfile(path) else None) for path in request["paths"]}
        if op in LOCK_OPS:
            return LOCK_OPS[op](self, request)
        if op in INSTALL_OPS:  # edgeq deploy: install, rollback, install_status (install.py)
            return INSTALL_OPS[op](request)
        if op == "infer":
            return self.op_infer(request)
        if op == "record":
            path, source = request.get("path"), request.get("source")
            if not isinstance(path, str) or not path or not isinstance(source, (str, type(None))):
                raise AgentFailure("BadRequest", "record needs path (and optionally source): device paths")
            record_made(path, source)
            return {}
        if op == "store":
            return tidy_store(request["root"], int(request["budget_bytes"]), request.get("keep") or [],
                              request.get("drop") or [], float(request.get("protect_s", STORE_PROTECT_S)))
        raise AgentFailure("BadRequest", "unknown op %r" % op)

    def op_lock(self, request):
        if self.lock is None:
            self.lock = DeviceLock(request["root"])
        holder = self.lock.wait(request.get("owner"), request.get("wait_s", 0),
                                lambda event: self.emit(request.get("id"), event))
        return {"acquired": holder is None, "holder": holder, "path": self.lock.path}

    def op_lock_status(self, request):
        if self.lock is not None and self.lock.fd is not None:
            return {"held": True, "holder": "this session"}
        holder = DeviceLock(request["root"]).holder()
        return {"held": holder is not None, "holder": holder}

    def op_unlock(self, request):
        if self.lock is not None:
            self.lock.release()
        return {}

    def op_infer(self, request):
        """Both models over a batch sent inline (or rows of a pushed .npz); the pair stays loaded."""
        options = check_job(request, "infer")
        runtime = self.ensure_runtime(request.get("runtime"))
        key = (runtime[0], request.get("float"), request.get("quant"), options["threads"], options["resolver"],
               request.get("float_sha256"), request.get("quant_sha256"))
        loaded = self.pair is None or self.pair.key != key
        if loaded:
            self.pair = None  # the old pair's memory goes before the new one loads
            self.pair = InferPair(key, runtime, request, options)
        batches = infer_inputs(request, self.pair.in_details)
        answer = self.pair.infer(batches)
        answer["loaded"] = loaded
        if loaded:
            answer["inputs"], answer["outputs"] = self.pair.summary()
        return answer

    def op_launch_soak(self, request):
        """The soak keeps this session's lock, now describing the soak."""
        held = self.lock is not None and self.lock.fd is not None
        if held:
            self.lock.describe(dict(request.get("owner") or {}, job="soak", soak_dir=os.path.dirname(request["job"]),
                                    until=time.time() + float(request.get("duration_s", 0)), since=time.time()))
        return {"pid": launch_soak(request["job"], self.lock.fd if held else None)}

    def serve(self, stdin):
        for line in stdin:
            line = line.strip()
            if not line:
                continue
            try:
                request = json.loads(line)
            except ValueError:
                self.emit(None, {"ok": False, "error": {"type": "BadRequest", "message": "not JSON: %r" % line[:80]}})
                continue
            if request.get("op") == "shutdown":
                self.emit(request.get("id"), {"ok": True, "result": {}})
                return 0
            try:
                result = self.handle(request)
            except AgentFailure as exc:
                self.emit(request.get("id"), {"ok": False, "error": {"type": exc.kind, "message": str(exc)}})
            except Exception as exc:  # report, keep serving: the host decides what to do
                log("unexpected %s: %s" % (exc.__class__.__name__, exc))
                self.emit(request.get("id"), {"ok": False, "error": {"type": exc.__class__.__name__, "message": str(exc)}})
            else:
                self.emit(request.get("id"), {"ok": True, "result": result})
        return 0


LOCK_OPS = {"lock": Agent.op_lock, "lock_status": Agent.op_lock_status, "unlock": Agent.op_unlock,
            "launch_soak": Agent.op_launch_soak}
