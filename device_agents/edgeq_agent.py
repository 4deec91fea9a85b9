#!/usr/bin/env python3
"""edgeq device agent: one file, uploaded to a device under a content-hashed name.

It needs only the standard library, numpy and whichever TFLite runtime the device
has (ai_edge_litert, then tflite_runtime, then tensorflow.lite). It never imports
edgeq, so host and device can run different Python versions.

Protocol: one JSON object per line on stdin (a request), one JSON object per line
on stdout (events and one final answer per request). Logs go to stderr so they can
never corrupt the protocol stream.

    {"id": 1, "op": "hello"}
    {"id": 2, "op": "load", "model": "/path/m.tflite", "threads": 1, "resolver": "AUTO"}
    {"id": 3, "op": "run", "job": {...}}          -> progress events, then the answer
    {"id": 4, "op": "shutdown"}

Answers are {"id": N, "ok": true, "result": {...}} or
{"id": N, "ok": false, "error": {"type": "...", "message": "..."}}.

A run writes its files into job["out"] and writes manifest.json last, with the
sha256 of every file, so a run that was cut short is never mistaken for a whole one.
"""

import errno
import gc
import hashlib
import json
import os
import platform
import sys
import time

AGENT_VERSION = "1"
RESOLVERS = ("AUTO", "BUILTIN", "BUILTIN_REF", "BUILTIN_WITHOUT_DEFAULT_DELEGATES")
RUNTIME_MODULES = (
    ("ai_edge_litert", "ai_edge_litert.interpreter"),
    ("tflite_runtime", "tflite_runtime.interpreter"),
    ("tensorflow", "tensorflow.lite"),
)


class AgentFailure(Exception):
    """A failure reported to the host as {"ok": false}; kind names the class of problem."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind


def log(message):
    sys.stderr.write("edgeq-agent: %s\n" % message)
    sys.stderr.flush()


def sha256_file(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- runtime


def import_runtime(preferred=None):
    """Return (name, version, interpreter_module); EDGEQ_AGENT_RUNTIME forces one."""
    import importlib

    wanted = preferred or os.environ.get("EDGEQ_AGENT_RUNTIME")
    tried = []
    for name, module_name in RUNTIME_MODULES:
        if wanted and name != wanted:
            continue
        try:
            top = importlib.import_module(name)
            module = _submodule(top, module_name)
        except Exception as exc:  # any import failure means "not usable here"
            tried.append("%s (%s)" % (name, exc.__class__.__name__))
            continue
        version = getattr(top, "__version__", None) or _dist_version(name)
        return name, version, module
    raise AgentFailure("NoRuntime", "no TFLite runtime importable: tried " + ", ".join(tried))


def _submodule(top, dotted):
    """tensorflow.lite is an attribute of the lazy tensorflow module, not importable itself."""
    import importlib

    module = top
    for part in dotted.split(".")[1:]:
        module = getattr(module, part, None) or importlib.import_module(module.__name__ + "." + part)
    return module


def _dist_version(name):
    try:
        from importlib import metadata

        return metadata.version(name.replace("_", "-"))
    except Exception:
        return "unknown"


def open_interpreter(runtime, model_path, threads, resolver):
    """Build an interpreter, mapping load failures to IncompatibleRuntime/ModelLoad."""
    if resolver not in RESOLVERS:
        raise AgentFailure("BadJob", "unknown resolver %r (choose from %s)" % (resolver, ", ".join(RESOLVERS)))
    module = runtime[2]
    kwargs = {"model_path": model_path, "num_threads": int(threads)}
    resolver_enum = _resolver_enum(module)
    if resolver_enum is not None:
        kwargs["experimental_op_resolver_type"] = getattr(resolver_enum, resolver)
    elif resolver != "AUTO":
        raise AgentFailure("BadJob", "runtime %s has no op resolver choice" % runtime[0])
    interpreter_class = getattr(module, "Interpreter")
    try:
        interpreter = interpreter_class(**kwargs)
        interpreter.allocate_tensors()
    except Exception as exc:
        text = str(exc).strip().splitlines()
        message = " ".join(line.strip() for line in text if line.strip())[-400:]
        kind = "IncompatibleRuntime" if _looks_incompatible(message) else "ModelLoad"
        raise AgentFailure(kind, "%s %s cannot load %s: %s" % (runtime[0], runtime[1], os.path.basename(model_path), message))
    return interpreter


def _resolver_enum(module):
    found = getattr(module, "OpResolverType", None)
    if found is None and hasattr(module, "experimental"):
        found = getattr(module.experimental, "OpResolverType", None)
    return found


def _looks_incompatible(message):
    lowered = message.lower()
    return "didn't find op" in lowered or "version" in lowered or "unsupported" in lowered


def tensor_summary(details):
    return [
        {"name": d["name"], "shape": [int(s) for s in d["shape"]],
         "shape_signature": [int(s) for s in d.get("shape_signature", d["shape"])],
         "dtype": _dtype_name(d["dtype"])}
        for d in details
    ]


def _dtype_name(dtype):
    import numpy as np

    return np.dtype(dtype).name


# --------------------------------------------------------------------------- device facts


def device_facts(runtime):
    try:
        import numpy as np
    except ImportError:
        raise AgentFailure("NoNumpy", "numpy is not installed for %s" % sys.executable)

    facts = {
        "agent_version": AGENT_VERSION,
        "agent_sha256": sha256_file(os.path.abspath(__file__)),
        "arch": platform.machine(),
        "os": platform.platform(),
        "hostname": platform.node(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "numpy": np.__version__,
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
    }
    if runtime is not None:
        facts["runtime"] = {"name": runtime[0], "version": runtime[1]}
    facts["libc"] = "-".join(platform.libc_ver()) or None
    facts["sensors"] = find_sensors(os.environ.get("EDGEQ_SYSFS_ROOT", "/sys"))
    return facts


def find_sensors(sysfs_root):
    """Thermal zones, hwmon chips and power supplies the device exposes, plus vcgencmd."""
    import glob
    import shutil

    def names(pattern, name_file):
        found = []
        for path in sorted(glob.glob(os.path.join(sysfs_root, pattern))):
            try:
                with open(os.path.join(path, name_file)) as handle:
                    found.append("%s:%s" % (os.path.basename(path), handle.read().strip()))
            except OSError:
                found.append(os.path.basename(path))
        return found

    return {"thermal": names("class/thermal/thermal_zone*", "type"),
            "hwmon": names("class/hwmon/hwmon*", "name"),
            "power_supply": names("class/power_supply/*", "type"),
            "vcgencmd": shutil.which("vcgencmd")}


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or None


# --------------------------------------------------------------------------- run


def load_inputs(path, names):
    """Load the named arrays from an .npz; pickles are refused by np.load itself."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [n for n in names if n not in data.files]
            if missing:
                raise AgentFailure("BadInputs", "%s has no array named %s" % (path, ", ".join(missing)))
            return [data[n] for n in names]
    except AgentFailure:
        raise
    except Exception as exc:
        raise AgentFailure("BadInputs", "cannot read input set %s: %s" % (path, exc))


def check_inputs(arrays, names, details):
    count = len(arrays[0])
    for name, array, detail in zip(names, arrays, details):
        if len(array) != count:
            raise AgentFailure("BadInputs", "array %s has %d samples, expected %d" % (name, len(array), count))
        if _dtype_name(array.dtype) != _dtype_name(detail["dtype"]):
            raise AgentFailure("BadInputs", "array %s is %s but model input %s wants %s"
                               % (name, array.dtype, detail["name"], _dtype_name(detail["dtype"])))
        want = [int(s) for s in detail.get("shape_signature", detail["shape"])][1:]
        got = list(array.shape[1:])
        if len(want) != len(got) or any(w not in (-1, g) for w, g in zip(want, got)):
            raise AgentFailure("BadInputs", "array %s has sample shape %s but model input %s wants %s"
                               % (name, got, detail["name"], want))
    return count


class Progress:
    """Rate-limited progress events so reporting never shows up in the timings."""

    def __init__(self, emit, total, every_s=0.5, on_tick=None):
        self.emit, self.total, self.every_s, self.on_tick = emit, total, every_s, on_tick
        self.next_at = time.monotonic() + every_s

    def update(self, done, force=False):
        now = time.monotonic()
        if force or now >= self.next_at:
            self.next_at = now + self.every_s
            if self.on_tick:
                self.on_tick(done)
            self.emit({"event": "progress", "done": done, "total": self.total})


def run_job(job, runtime, emit):
    try:
        return _run_job(job, runtime, emit)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise AgentFailure("DiskFull", "no space left on the device in %s" % os.path.dirname(job["out"]))
        raise


def _run_job(job, runtime, emit):
    out_dir = job["out"]
    names = job["input_arrays"]
    threads = int(job.get("threads", 1))
    resolver = job.get("resolver", "AUTO")
    batch = max(1, int(job.get("batch_size", 1)))
    warmup = max(0, int(job.get("warmup", 10)))
    repeats = max(1, int(job.get("repeats", 1)))
    _check_expected_sha(job.get("model"), job.get("model_sha256"))
    _check_expected_sha(job.get("inputs"), job.get("inputs_sha256"))
    _prepare_out_dir(out_dir)

    started = time.time()
    load_start = time.perf_counter_ns()
    interpreter = open_interpreter(runtime, job["model"], threads, resolver)
    load_ns = time.perf_counter_ns() - load_start
    in_details = interpreter.get_input_details()
    out_details = interpreter.get_output_details()
    if len(names) != len(in_details):
        raise AgentFailure("BadJob", "model has %d inputs, job names %d arrays" % (len(in_details), len(names)))
    arrays = load_inputs(job["inputs"], names)
    count = check_inputs(arrays, names, in_details)
    if count == 0:
        raise AgentFailure("BadInputs", "input set %s has no samples" % job["inputs"])

    invoker = BatchInvoker(interpreter, in_details, out_details)
    first_ns = invoker.invoke_timed([a[:1] for a in arrays])
    for _ in range(warmup):  # at the timed batch size, so no resize lands in the timed loop
        invoker.invoke_timed([a[:batch] for a in arrays])

    steps = [(s, min(s + batch, count)) for s in range(0, count, batch)]
    writer = RunWriter(out_dir, count, steps, repeats, invoker.read_outputs())
    progress = Progress(emit, repeats * len(steps), on_tick=writer.checkpoint)
    gc.disable()  # a collection inside the timed loop shows up as a latency outlier
    try:
        _timed_passes(invoker, arrays, steps, repeats, writer, progress)
    finally:
        gc.enable()
    progress.update(repeats * len(steps), force=True)
    meta = {
        "job": {k: v for k, v in job.items() if k != "out"},
        "device": device_facts(runtime),
        "resolver": resolver,
        "threads": threads,
        "batch_size": batch,
        "warmup": warmup,
        "repeats": repeats,
        "samples": count,
        "model_sha256": sha256_file(job["model"]),
        "inputs_sha256": sha256_file(job["inputs"]),
        "inputs": tensor_summary(in_details),
        "outputs": tensor_summary(out_details),
        "load_ns": load_ns,
        "first_inference_ns": first_ns,
        "started": started,
        "finished": time.time(),
    }
    return writer.finish(meta)


def _timed_passes(invoker, arrays, steps, repeats, writer, progress):
    for rep in range(repeats):
        for i, (lo, hi) in enumerate(steps):
            writer.latency[rep, i] = invoker.invoke_timed([a[lo:hi] for a in arrays])
            if rep == 0:
                writer.store(invoker.read_outputs(), lo, hi)
            progress.update(rep * len(steps) + i + 1)


class RunWriter:
    """Results go straight into .npy files (memory-mapped) as they are produced.

    progress.json says how far they got, so if the agent is killed the host can still
    pull what exists; manifest.json, written last, is what marks a run complete.
    """

    def __init__(self, out_dir, count, steps, repeats, sample_outputs):
        from numpy.lib.format import open_memmap

        self.out_dir, self.count, self.steps = out_dir, count, steps
        self.outputs = [
            open_memmap(os.path.join(out_dir, "outputs", "output_%d.npy" % k), mode="w+", dtype=value.dtype,
                        shape=(count,) + tuple(value.shape[1:]))
            for k, value in enumerate(sample_outputs)]
        self.latency = open_memmap(os.path.join(out_dir, "latency_ns.npy"), mode="w+", dtype="int64",
                                   shape=(repeats, len(steps)))
        for rel in self.files():  # reserve the space now: a full disk is ENOSPC here, not SIGBUS later
            _reserve(os.path.join(out_dir, rel))
        self.samples_done = 0
        self.invocations_done = 0

    def files(self):
        return ["outputs/output_%d.npy" % k for k in range(len(self.outputs))] + ["latency_ns.npy"]

    def store(self, values, lo, hi):
        for target, value in zip(self.outputs, values):
            target[lo:hi] = value
        self.samples_done = hi

    def checkpoint(self, invocations_done):
        self.invocations_done = invocations_done
        for array in self.outputs + [self.latency]:
            array.flush()
        _write_json(os.path.join(self.out_dir, "progress.json"),
                    {"samples_done": self.samples_done, "samples": self.count,
                     "invocations_done": invocations_done, "files": self.files()}, sync=False)

    def finish(self, meta):
        import numpy as np

        for array in self.outputs + [self.latency]:
            array.flush()
        self.outputs = self.latency = None  # close the maps before hashing
        batch_sizes = np.array([hi - lo for lo, hi in self.steps], dtype=np.int32)
        with open(os.path.join(self.out_dir, "batch_sizes.npy"), "wb") as handle:
            np.save(handle, batch_sizes, allow_pickle=False)
        rels = ["outputs/output_%d.npy" % k for k in range(len(meta["outputs"]))] + ["latency_ns.npy",
                                                                                     "batch_sizes.npy"]
        for rel in rels:
            _fsync_path(os.path.join(self.out_dir, rel))
        return write_manifest(self.out_dir, rels, meta)


class BatchInvoker:
    """Resizes inputs only when the batch size changes, and times invoke() alone."""

    def __init__(self, interpreter, in_details, out_details):
        self.interpreter = interpreter
        self.in_details = in_details
        self.out_details = out_details
        self.current = [tuple(int(s) for s in d["shape"]) for d in in_details]

    def invoke_timed(self, batches):
        interpreter = self.interpreter
        wanted = [tuple(b.shape) for b in batches]
        if wanted != self.current:
            for detail, shape in zip(self.in_details, wanted):
                interpreter.resize_tensor_input(detail["index"], list(shape))
            interpreter.allocate_tensors()
            self.current = wanted
        for detail, array in zip(self.in_details, batches):
            interpreter.set_tensor(detail["index"], array)
        start = time.perf_counter_ns()
        interpreter.invoke()
        return time.perf_counter_ns() - start

    def read_outputs(self):
        return [self.interpreter.get_tensor(d["index"]) for d in self.out_details]


def _check_expected_sha(path, expected):
    if path is None:
        raise AgentFailure("BadJob", "job names no model or inputs")
    if not os.path.isfile(path):
        raise AgentFailure("BadJob", "%s does not exist on the device" % path)
    if expected and sha256_file(path) != expected:
        raise AgentFailure("Corrupt", "%s does not match its sha256 %s" % (path, expected[:12]))


def _prepare_out_dir(out_dir):
    os.makedirs(os.path.join(out_dir, "outputs"), exist_ok=True)
    for stale in ("manifest.json", "progress.json"):
        if os.path.exists(os.path.join(out_dir, stale)):
            os.remove(os.path.join(out_dir, stale))


def write_manifest(out_dir, rels, meta):
    """Write meta.json, then manifest.json (atomically) last: the mark of a whole run."""
    meta_path = os.path.join(out_dir, "meta.json")
    _write_json(meta_path, meta)
    listing = {}
    for rel in rels + ["meta.json"]:
        path = os.path.join(out_dir, rel)
        listing[rel] = {"sha256": sha256_file(path), "size": os.path.getsize(path)}
    _write_json(os.path.join(out_dir, "manifest.json"),
                {"complete": True, "agent_version": AGENT_VERSION, "files": listing})
    return {"out": out_dir, "samples": meta["samples"], "files": len(listing),
            "manifest_sha256": sha256_file(os.path.join(out_dir, "manifest.json"))}


def _reserve(path):
    if hasattr(os, "posix_fallocate"):
        with open(path, "rb+") as handle:
            os.posix_fallocate(handle.fileno(), 0, os.fstat(handle.fileno()).st_size)


def _fsync_path(path):
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _write_json(path, payload, sync=True):
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(payload, handle, indent=1, sort_keys=True)
        if sync:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(tmp, path)


# --------------------------------------------------------------------------- protocol


class Agent:
    def __init__(self, stdout):
        self.stdout = stdout
        self.runtime = None

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
        raise AgentFailure("BadRequest", "unknown op %r" % op)

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


def main(argv):
    # The protocol owns the real stdout; anything a runtime prints goes to stderr.
    protocol_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return Agent(protocol_out).serve(sys.stdin)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
