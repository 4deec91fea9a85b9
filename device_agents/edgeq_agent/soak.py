"""The soak job: run detached for hours, cycling the input set, one record per window.

Started by the launch_soak op as a process of its own that inherits the device lock; it
speaks no protocol, it writes records.jsonl and status.json in its folder, which the host reads.
"""

import json
import math
import os
import time

from .errors import AgentFailure
from .facts import device_facts, peak_rss_kb, rss_kb
from .files import write_json
from .inputsets import InputStream, check_expected_sha
from .jobs import check_job
from .runtime import BatchInvoker, import_runtime, open_interpreter
from .sampling import Sensing, _start_sampler
from .sensors import _finite, decode_throttled, throttled_now


class SoakLog:
    """records.jsonl (append + fsync per record) and status.json (atomic), in the soak folder."""

    def __init__(self, folder):
        self.folder = folder
        self.records = open(os.path.join(folder, "records.jsonl"), "a")
        self.status = {"state": "starting", "pid": os.getpid(), "windows": 0}

    def append(self, record):
        self.records.write(json.dumps(record, sort_keys=True) + "\n")
        self.records.flush()
        os.fsync(self.records.fileno())

    def set(self, **changes):
        self.status.update(changes, updated=time.time())
        write_json(os.path.join(self.folder, "status.json"), self.status, sync=True)


class LatencyHistogram:
    """Window latency stats in constant memory: log buckets 1% wide, exact mean and max.

    A 60 s window can hold millions of invocations; keeping them all would make the
    soak's own RSS grow with the model's speed, which is what the soak is watching.
    """

    STEP = math.log(1.01)

    def __init__(self):
        self.counts, self.n, self.total, self.max = {}, 0, 0, 0

    def add(self, ns):
        bucket = int(math.log(ns) / self.STEP) if ns > 0 else 0
        self.counts[bucket] = self.counts.get(bucket, 0) + 1
        self.n += 1
        self.total += ns
        if ns > self.max:
            self.max = ns

    def percentile(self, p):
        rank, seen = p / 100.0 * self.n, 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            if seen >= rank:
                return math.exp((bucket + 0.5) * self.STEP) if bucket else 0.0
        return float(self.max)

    def stats(self):
        return {"n": self.n, "p50": self.percentile(50) / 1e6, "p90": self.percentile(90) / 1e6,
                "p99": self.percentile(99) / 1e6, "mean": self.total / self.n / 1e6, "max": self.max / 1e6}


STOP_POLL_S = 0.5  # a soak looks for a stop request this often (a stat() call), not only at a window's end
_TERMINATED = [False]  # set by SIGTERM: the soak ends like a stop, writing its state


def soak_main(job_path):
    """Run detached: cycle the input set until the duration ends or a stop file appears."""
    import signal
    import zlib

    signal.signal(signal.SIGTERM, lambda *_: _TERMINATED.__setitem__(0, True))

    with open(job_path) as handle:
        job = json.load(handle)
    folder = job["dir"]
    log = SoakLog(folder)
    try:
        job = dict(job, **check_job(job, "soak"))
        runtime = import_runtime()
        check_expected_sha(job["model"], job.get("model_sha256"))
        interpreter = open_interpreter(runtime, job["model"], job["threads"], job["resolver"])
        in_details, out_details = interpreter.get_input_details(), interpreter.get_output_details()
        inputs = InputStream(job["inputs"], job["input_arrays"], in_details, 1)
        if inputs.count == 0:
            raise AgentFailure("BadInputs", "input set %s has no samples" % job["inputs"])
        invoker = BatchInvoker(interpreter, in_details, out_details)
        first = inputs.head(1)
        for _ in range(job["warmup"]):
            invoker.invoke_timed(first)
        sensors = SoakSensors(job)
        facts = device_facts(runtime)
        log.set(state="running", started=time.time(), arch=facts["arch"], runtime="%s %s" % runtime[:2],
                resolver=job["resolver"], threads=job["threads"],
                model_sha256=job.get("model_sha256"), model_name=os.path.basename(job["model"]))
        try:
            state = _soak_loop(job, log, invoker, inputs, sensors, zlib.crc32)
        finally:
            sensors.close()
        log.set(state=state)
    except AgentFailure as exc:
        log.set(state="failed", error=str(exc))
        return 1
    except Exception as exc:  # the host reads this from status.json; there is no one to raise to
        log.set(state="failed", error="%s: %s" % (exc.__class__.__name__, exc))
        return 1
    return 0


def _soak_loop(job, log, invoker, inputs, sensors, checksum):
    """Windows of invokes until the deadline; a stop request (the stop file, or SIGTERM) is seen
    within STOP_POLL_S, not at the window's end, and the window in progress is kept as partial."""
    started = time.monotonic()
    deadline = started + float(job["duration_s"])
    window_s = job["window_s"]
    stop_file = os.path.join(job["dir"], "stop")
    first_pass, mismatched, checked, passes, index = [None] * inputs.count, 0, 0, 0, 0
    window, window_end = LatencyHistogram(), started + window_s
    next_stop_check = started + STOP_POLL_S
    while True:
        for i, sample in _one_at_a_time(inputs):
            window.add(invoker.invoke_timed(sample))
            digest = checksum(b"".join(o.tobytes() for o in invoker.read_outputs()))
            if passes == 0:
                first_pass[i] = digest
            else:
                checked += 1
                mismatched += digest != first_pass[i]
            now = time.monotonic()
            stopping = False
            if now >= next_stop_check:
                stopping, next_stop_check = _TERMINATED[0] or os.path.exists(stop_file), now + STOP_POLL_S
            if now >= window_end or stopping:
                if window.n:
                    record = {"type": "window", "index": index, "elapsed_s": now - started, "t": time.time(),
                              "latency_ms": window.stats(), "rss_kb": rss_kb(), "peak_rss_kb": peak_rss_kb(),
                              "pass": passes, "drift": {"checked": checked, "mismatched": mismatched},
                              "partial": now < window_end}
                    record.update(sensors.read())
                    log.append(record)
                    index += 1
                    log.set(windows=index, elapsed_s=now - started)
                window, window_end = LatencyHistogram(), now + window_s
                if now >= deadline:
                    return "finished"
                if stopping or os.path.exists(stop_file):
                    return "stopped"
        passes += 1
        if passes == 1:
            write_json(os.path.join(job["dir"], "first_pass.json"), {"crc32": first_pass}, sync=True)


def _one_at_a_time(inputs):
    """(index, [that sample of each input]) over the whole set, with one block of it in memory:
    a soak runs for hours, and its RSS is what it watches."""
    for base, end, block in inputs.blocks():
        for i in range(base, end):
            yield i, [a[i - base:i - base + 1] for a in block]


class SoakSensors:
    """Per-window temperature, throttle bits and mean power, in constant memory.

    Power is read at ``sample_hz`` by the sampler process of a run (``sample_main``)
    in its summing mode: it keeps a running sum instead of records, and answers each
    window's request with the mean since the last one. A process, not a thread, for the
    run sampler's reason: ticks that take the GIL would delay invoke() returning, and a
    soak watches p99. Temperature and throttle bits are read once per window here.
    """

    def __init__(self, job):
        sensing = Sensing(dict(job, power=job.get("power") or "none"))
        self.thermal, self.vcgencmd = sensing.thermal, sensing.vcgencmd
        self.proc = None
        if sensing.power is not None:
            self.proc = _start_sampler(dict(job, power=job.get("power"), summing=True,
                                            sample_hz=sensing.sample_hz),
                                       os.path.join(job["dir"], ".sampler.json"))

    def _power_sums(self):
        if self.proc is None:
            return {}
        try:
            self.proc.stdin.write(b"r")
            self.proc.stdin.flush()
            return json.loads(self.proc.stdout.readline() or b"{}")
        except (OSError, ValueError):  # a sensor must never take the soak down
            return {}

    def read(self):
        sums = self._power_sums()
        count = sums.get("count", 0)
        throttled = self.vcgencmd.throttled() if self.vcgencmd is not None else -1
        return {"temp_c": _finite(self.thermal.read()), "power_w": sums["sum"] / count if count else None,
                "power_samples": count, "throttled": throttled_now(throttled),
                "throttled_raw": max(throttled, 0), "throttled_flags": decode_throttled(throttled)}

    def close(self):
        if self.proc is not None:
            self.proc.stdin.close()
            self.proc.wait()
