"""Sampling during a run or a soak: the sampler process, what a job asked to sample, cooldown.

The sampler runs as a process of its own (the agent started again, ``sample CONFIG``), never
as a thread beside the timed invoke() loop: a thread's ticks take the GIL and distort latency.
"""

import json
import os
import subprocess
import sys
import time

from .archive import agent_command
from .errors import AgentFailure
from .facts import default_sysfs_root
from .sensors import NAN, Thermal, Vcgencmd, _finite, decode_throttled, open_power, resolve_vcgencmd


class Sampler:
    """Samples power, temperature and throttle bits, one ``tick`` at a time.

    A tick reads a few small files (and runs vcgencmd where needed) and appends plain
    Python numbers to lists. Ticks run in their own process (``SamplerProcess`` /
    ``sample_main``), never in the timed one. Timestamps are perf_counter_ns
    (CLOCK_MONOTONIC), the clock of invoke_start_ns.
    """

    def __init__(self, thermal, power, vcgencmd, hz):
        self.thermal, self.power, self.vcgencmd = thermal, power, vcgencmd
        self.period_ns = int(1e9 / hz)
        self.t_ns, self.power_w, self.temp_c, self.throttled = [], [], [], []
        self.zone_temp_c = [[] for _ in thermal.paths]
        self.busy_ns = 0
        self.errors = []

    def tick(self):
        begin = time.perf_counter_ns()
        power = self.power.read() if self.power is not None else NAN
        temp = self.thermal.read()
        throttled = self.vcgencmd.throttled() if self.vcgencmd is not None else -1
        end = time.perf_counter_ns()
        self.t_ns.append((begin + end) // 2)
        self.power_w.append(power)
        self.temp_c.append(temp)
        self.throttled.append(throttled)
        for column, value in zip(self.zone_temp_c, self.thermal.last):
            column.append(value)
        self.busy_ns += end - begin

    def arrays(self):
        import numpy as np

        count = len(self.t_ns)
        zones = np.array(self.zone_temp_c, dtype=np.float64).reshape(len(self.zone_temp_c), count).T
        return {"t_ns": np.array(self.t_ns, dtype=np.int64), "power_w": np.array(self.power_w, dtype=np.float64),
                "temp_c": np.array(self.temp_c, dtype=np.float64),
                "throttled": np.array(self.throttled, dtype=np.int64), "zone_temp_c": zones}

    def summary(self, windows):
        count = len(self.t_ns)
        span_s = (self.t_ns[-1] - self.t_ns[0]) / 1e9 if count > 1 else 0.0
        seen = 0
        for value in self.throttled:
            if value > 0:
                seen |= value
        timed = windows.get("timed")
        in_timed = sum(1 for t in self.t_ns if timed and timed[0] <= t <= timed[1])
        return {"samples": count, "samples_timed": in_timed,
                "achieved_hz": (count - 1) / span_s if span_s > 0 else None,
                "busy_s": self.busy_ns / 1e9, "tick_ms_mean": self.busy_ns / 1e6 / count if count else None,
                "throttled_any": seen, "throttled_seen": decode_throttled(seen), "errors": self.errors}


class SamplerProcess(Sampler):
    """The sampler in a process of its own, so it shares no GIL with the timed loop.

    As a thread, each tick had to take the GIL: invoke() calls returning during a tick
    waited for it (their latency rose), and runs completed fewer inferences. A process
    reads the same sensors with the same clock (perf_counter_ns is CLOCK_MONOTONIC,
    one clock for every process) and appends fixed-size records to a file the agent
    reads when the run ends. Closing its stdin stops it.
    """

    def __init__(self, sensing, job, out_dir):
        Sampler.__init__(self, sensing.thermal, sensing.power, sensing.vcgencmd, sensing.sample_hz)
        self.file = os.path.join(out_dir, ".sensors.bin")
        self.config = dict(job, sample_file=self.file, sample_hz=sensing.sample_hz)
        self.config.pop("out", None)
        self.cpu_s = None
        self.proc = None

    def start(self):
        self.proc = _start_sampler(self.config, self.file + ".json")
        return self

    def stop(self):
        self.proc.stdin.close()
        final = self.proc.stdout.read().decode().strip().splitlines()
        self.proc.wait()
        done = json.loads(final[-1]) if final else {}
        self.busy_ns, self.errors, self.cpu_s = done.get("busy_ns", 0), done.get("errors", []), done.get("cpu_s")
        self._load_records()

    def _load_records(self):
        import struct

        record = struct.Struct(sample_record_format(len(self.zone_temp_c)))
        with open(self.file, "rb") as handle:
            data = handle.read()
        for values in record.iter_unpack(data[: len(data) - len(data) % record.size]):
            self.t_ns.append(values[0])
            self.power_w.append(values[1])
            self.temp_c.append(values[2])
            self.throttled.append(values[3])
            for column, value in zip(self.zone_temp_c, values[4:]):
                column.append(value)
        for leftover in (self.file, self.file + ".json"):
            os.remove(leftover)

    def summary(self, windows):
        found = Sampler.summary(self, windows)
        found["sampler_cpu_s"] = self.cpu_s
        found["process"] = True
        return found


def sample_record_format(zones):
    return "<qddq" + "d" * zones


def sample_main(config_path):
    """``<agent> sample CONFIG``: tick until stdin closes.

    Run mode writes one binary record per tick to ``sample_file``. Summing mode (a
    soak's) reads power only and keeps its running sum: each byte on stdin asks for
    ``{"sum", "count"}`` since the last ask, so hours of sampling hold no records.
    """
    import select

    with open(config_path) as handle:
        config = json.load(handle)
    sensing = Sensing(config)
    sink = PowerSums(sensing.power) if config.get("summing") else RecordFile(sensing, config["sample_file"])
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    period_ns = int(1e9 / sensing.sample_hz)
    next_at = time.perf_counter_ns()
    while True:
        sink.tick()
        next_at += period_ns
        now = time.perf_counter_ns()
        if next_at < now:  # fell behind (slow vcgencmd): skip ticks rather than burst
            next_at = now
        readable, _, _ = select.select([sys.stdin], [], [], (next_at - now) / 1e9)
        if readable:
            if not os.read(sys.stdin.fileno(), 1):
                break
            sys.stdout.write(json.dumps(sink.take()) + "\n")
            sys.stdout.flush()
    sys.stdout.write(json.dumps(sink.close()) + "\n")
    return 0


class RecordFile:
    """A run's sampler sink: every tick as a fixed-size record in a file."""

    def __init__(self, sensing, path):
        import struct

        self.sampler = Sampler(sensing.thermal, sensing.power, sensing.vcgencmd, sensing.sample_hz)
        self.record = struct.Struct(sample_record_format(len(self.sampler.zone_temp_c)))
        self.out = open(path, "wb")

    def tick(self):
        sampler = self.sampler
        try:
            sampler.tick()
            self.out.write(self.record.pack(sampler.t_ns.pop(), sampler.power_w.pop(), sampler.temp_c.pop(),
                                            sampler.throttled.pop(), *(c.pop() for c in sampler.zone_temp_c)))
            self.out.flush()
        except Exception as exc:  # a sensor must never take the run down
            if len(sampler.errors) < 5:
                sampler.errors.append("%s: %s" % (exc.__class__.__name__, exc))

    def take(self):
        return {}

    def close(self):
        self.out.close()
        return {"busy_ns": self.sampler.busy_ns, "errors": self.sampler.errors, "cpu_s": time.process_time()}


class PowerSums:
    """A soak's sampler sink: the sum and count of power readings since the last take."""

    def __init__(self, power):
        self.power, self.sum, self.count = power, 0.0, 0

    def tick(self):
        try:
            value = self.power.read()
        except Exception:  # a sensor must never take the soak down
            return
        if value == value:
            self.sum += value
            self.count += 1

    def take(self):
        found = {"sum": self.sum, "count": self.count}
        self.sum, self.count = 0.0, 0
        return found

    def close(self):
        return {"cpu_s": time.process_time()}


def wait_for_cooldown(thermal, target_c, timeout_s, emit, poll_s=0.5):
    """Block until the temperature is at or below target_c, or timeout_s passes."""
    start = time.monotonic()
    first = temp = thermal.read()
    timed_out = False
    while not temp <= target_c:  # NaN (no reading) keeps waiting, until the timeout
        waited = time.monotonic() - start
        if waited >= timeout_s:
            timed_out = True
            break
        emit({"event": "cooldown", "temp_c": _finite(temp), "target_c": target_c, "waited_s": waited})
        time.sleep(min(poll_s, max(0.0, timeout_s - waited)))
        temp = thermal.read()
    return {"target_c": target_c, "timeout_s": timeout_s, "waited_s": time.monotonic() - start,
            "timed_out": timed_out, "start_temp_c": _finite(first), "end_temp_c": _finite(temp),
            "source": thermal.source}


class Sensing:
    """What the job asked to sample, checked before anything runs.

    ``job`` has been through ``check_job``: every option is there, typed and in range.
    """

    def __init__(self, job):
        self.sysfs_root = job.get("sysfs_root") or default_sysfs_root()
        path = resolve_vcgencmd(job.get("vcgencmd"))
        self.vcgencmd = Vcgencmd(path) if path else None
        self.thermal = Thermal(self.sysfs_root, self.vcgencmd)
        self.backend = job.get("power")
        self.enabled = self.backend is not None
        self.sample_hz = float(job["sample_hz"])
        idle = job.get("idle_s")
        self.idle_s = float(idle) if idle is not None else (1.0 if self.backend not in (None, "none") else 0.0)
        self.cooldown_c = job.get("cooldown_c")
        self.cooldown_timeout_s = job.get("cooldown_timeout_s")
        if self.cooldown_c is not None and self.thermal.source is None:
            raise AgentFailure("NoTemperatureSensor", "cooldown_c is set but there is no thermal zone under %s "
                               "and no vcgencmd to read a temperature from"
                               % os.path.join(self.sysfs_root, "class", "thermal"))
        self.power = open_power(self.backend, self.sysfs_root, self.vcgencmd, job.get("power_sensor"))

    def sampler(self, job, out_dir):
        return SamplerProcess(self, job, out_dir)

    def describe(self):
        return {"power": self.backend, "power_source": self.power.describe if self.power else None,
                "sample_hz": self.sample_hz, "idle_s": self.idle_s, "sysfs_root": self.sysfs_root,
                "vcgencmd": self.vcgencmd.path if self.vcgencmd else None,
                "temperature_source": self.thermal.source, "thermal_zones": self.thermal.zones}


def _start_sampler(config, path):
    """The sampler process (the agent started again: ``sample CONFIG``) with its config at path, started and ready."""
    with open(path, "w") as handle:
        json.dump(config, handle)
    proc = subprocess.Popen(agent_command(["sample", path]), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    if proc.stdout.readline().strip() != b"ready":
        raise AgentFailure("SamplerFailed", "the sensor sampler process did not start (see the agent log)")
    return proc
