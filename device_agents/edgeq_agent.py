#!/usr/bin/env python3
"""edgeq device agent: one file, uploaded to a device under a content-hashed name.

It needs only the standard library, numpy and whichever TFLite runtime the device
has (ai_edge_litert, then tflite_runtime, then tensorflow.lite). It never imports
edgeq, so host and device can run different Python versions. The host starts it isolated
(``python -I``, as it starts its own soak and sampler processes): nothing planted beside it,
named by PYTHONPATH or put in the user's site-packages runs inside it.

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
    (also: load, df, sha256, store, record, lock_status, unlock)

Answers are {"id": N, "ok": true, "result": {...}} or
{"id": N, "ok": false, "error": {"type": "...", "message": "..."}}.

A run writes its files into job["out"] and writes manifest.json last, with the
sha256 of every file, so a run that was cut short is never mistaken for a whole one.

Run job options beyond model/inputs/threads/resolver/batch_size/warmup/repeats:

    min_duration_s      0      timed passes repeat until `repeats` passes AND this long
    power               None   None: no sampling (the files of older agents only);
                               "none" | a POWER_BACKENDS name (hwmon, ...): a sampler
                               thread records power (NaN for "none"), temperature and
                               throttle bits, and invoke start times are kept
    power_sensor        None   which hwmon chip (name or hwmonN) / power supply to read
    sample_hz           20     sampler rate; the achieved rate is in meta["sampling"]
    idle_s              1.0 with a power backend, else 0: idle baseline before timing
    cooldown_c          None   wait until the temperature is <= this before measuring
    cooldown_timeout_s  300    ... but no longer than this (meta["cooldown"] says which)
    sysfs_root          EDGEQ_SYSFS_ROOT, else /sys
    vcgencmd            the vcgencmd on PATH; "" for none

Files: outputs/output_<k>.npy, latency_ns.npy (passes x invocations), batch_sizes.npy,
meta.json, manifest.json; with sampling also invoke_start_ns.npy (perf_counter_ns,
shaped like latency_ns) and sensors.npz (t_ns, power_w, temp_c, throttled, zone_temp_c).
Inputs are read a block of rows at a time and outputs written the same way, so the
agent's memory does not grow with the input set; meta["peak_rss_kb"] records its peak.
"""

import contextlib
import errno
import gc
import glob
import hashlib
import json
import math
import os
import platform
import re
import shutil
import subprocess
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


_DTYPE_NAMES = {}


def _dtype_name(dtype):
    """numpy's name for a dtype (its .name is slow, and an infer request asks for it four times)."""
    import numpy as np

    dtype = np.dtype(dtype)
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = dtype.name
    return name


# --------------------------------------------------------------------------- device facts


def device_facts(runtime, sysfs_root=None, vcgencmd=None):
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
    facts["sensors"] = find_sensors(sysfs_root or default_sysfs_root(),
                                    vcgencmd if vcgencmd is not None else shutil.which("vcgencmd"))
    return facts


def default_sysfs_root():
    return os.environ.get("EDGEQ_SYSFS_ROOT") or "/sys"


def find_sensors(sysfs_root, vcgencmd=None):
    """Thermal zones, hwmon chips and power supplies the device exposes, plus vcgencmd."""

    def names(pattern, name_file):
        found = []
        for path in sorted(glob.glob(os.path.join(sysfs_root, pattern)), key=_natural):
            try:
                with open(os.path.join(path, name_file)) as handle:
                    found.append("%s:%s" % (os.path.basename(path), handle.read().strip()))
            except OSError:
                found.append(os.path.basename(path))
        return found

    return {"thermal": names("class/thermal/thermal_zone*", "type"),
            "hwmon": names("class/hwmon/hwmon*", "name"),
            "power_supply": names("class/power_supply/*", "type"),
            "vcgencmd": vcgencmd or None}


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


# --------------------------------------------------------------------------- sensors
#
# Everything here reads a sysfs root given as a parameter (job["sysfs_root"], else
# EDGEQ_SYSFS_ROOT, else /sys) and a vcgencmd path (job["vcgencmd"], else the one on
# PATH), so tests run this code against a directory laid out like sysfs and a stand-in
# vcgencmd. A sensor that is absent or unreadable gives NaN (or -1 for throttle bits),
# never an exception; a power backend that was asked for and is not there fails the job.

NAN = float("nan")
POWER_BACKENDS = {"none": None}  # name -> reader class (see power_backend); "none": temperature and throttling only
THROTTLE_BITS = ((0, "under_voltage"), (1, "arm_frequency_capped"), (2, "throttled"), (3, "soft_temperature_limit"))
THROTTLED_NOW_MASK = 0xF  # bits 0-3 hold now; 16-19 only say it happened since boot
PMIC_LINE = re.compile(r"^\s*(\S+)_([AV])\s+(?:current|volt)\(\d+\)\s*=\s*([-+0-9.eE]+)\s*[AV]?\s*$")


def power_backend(name):
    """Register a power reader class as job option ``power=name``: adding a backend is one class.

    The class is built as ``cls(sysfs_root, vcgencmd, sensor)`` (vcgencmd a Vcgencmd or None,
    sensor the job's power_sensor or None) and raises AgentFailure("NoPowerSensor", ...) when
    its sensor is not there; ``read()`` gives watts (NaN when unreadable) and ``describe`` is
    what meta["sampling"]["power_source"] records. Its docstring's first line says what it reads.
    """

    def register(cls):
        cls.backend = name
        POWER_BACKENDS[name] = cls
        return cls

    return register


# --- the job schema: every run/soak option, once ---------------------------------------------
# The host imports JOB_OPTIONS to build its command-line options and RunSpec and to check a
# job before sending it; the agent checks what arrives with the same table. A default may
# differ per job kind (a soak samples power at 2 Hz for hours, a run at 20 Hz).

class JobOption(object):
    """One option of a run or soak job: type, default, limits, choices, unit and help."""

    def __init__(self, name, kind, default=None, flag=None, low=None, above=None, high=None, choices=None,
                 unit="", help="", jobs=("run", "soak"), noun=None):
        self.name, self.kind, self.default, self.flag, self.noun = name, kind, default, flag, noun or name
        self.low, self.above, self.high, self.choices = low, above, high, choices
        self.unit, self.help, self.jobs = unit, help, jobs

    def default_for(self, job_kind):
        return self.default.get(job_kind) if isinstance(self.default, dict) else self.default

    def check(self, value):
        """The value typed, or a sentence saying what is wrong with it."""
        if value is None:
            return None
        if self.kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            if not (isinstance(value, float) and value == int(value)):
                raise ValueError("%s must be a whole number, got %r" % (self.name, value))
        if self.kind is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError("%s must be a number, got %r" % (self.name, value))
        if self.kind is str and not isinstance(value, str):
            raise ValueError("%s must be text, got %r" % (self.name, value))
        value = self.kind(value)
        if self.kind is float and not math.isfinite(value):
            raise ValueError("%s must be finite, got %r" % (self.name, value))
        if self.choices is not None and value not in self.choices:
            raise ValueError("unknown %s %r (choose from %s)" % (self.noun, value, ", ".join(self.choices)))
        if self.low is not None and value < self.low:
            raise ValueError("%s must be at least %s, got %s" % (self.name, self.low, value))
        if self.above is not None and value <= self.above:
            raise ValueError("%s must be above %s, got %s" % (self.name, self.above, value))
        if self.high is not None and value > self.high:
            raise ValueError("%s must be at most %s, got %s" % (self.name, self.high, value))
        return value


JOB_OPTIONS = (
    JobOption("threads", int, 1, "--threads", low=1, high=256, jobs=("run", "soak", "infer"),
              help="Interpreter threads (absurd counts crash the runtime with SIGSEGV)."),
    JobOption("resolver", str, "AUTO", "--resolver", choices=RESOLVERS, jobs=("run", "soak", "infer"),
              help="Op resolver (AUTO uses XNNPACK)."),
    JobOption("warmup", int, 10, "--warmup", low=0, help="Untimed invocations before timing."),
    JobOption("repeats", int, 1, "--repeats", low=1, help="Timed passes over the set.", jobs=("run",)),
    JobOption("batch_size", int, 1, "--batch-size", low=1, help="Samples per invoke().", jobs=("run",)),
    JobOption("min_duration_s", float, 0.0, "--min-duration", low=0, unit="s", jobs=("run",),
              help="Keep timing passes for at least this many seconds (whichever of --repeats and this is longer)."),
    JobOption("power", str, None, "--power", choices=POWER_BACKENDS, noun="power backend",
              help="Sample power and temperature: a backend, or `none` (temperature and throttling only)."),
    JobOption("power_sensor", str, None, "--power-sensor",
              help="hwmon chip or power_supply name, when the device has several."),
    JobOption("sample_hz", float, 20.0, "--sample-hz", above=0, high=1000, unit="Hz",
              help="Sensor samples per second (a soak averages them per window)."),
    JobOption("idle_s", float, None, "--idle-s", low=0, unit="s", jobs=("run",),
              help="Idle baseline before timing (default 1 s with power)."),
    JobOption("cooldown_c", float, None, "--cooldown-c", unit="°C", jobs=("run",),
              help="Wait until the device is at or below this °C first."),
    JobOption("cooldown_timeout_s", float, 300.0, "--cooldown-timeout", low=0, unit="s", jobs=("run",),
              help="Give up waiting for --cooldown-c after this many seconds."),
    JobOption("sysfs_root", str, None, "--sysfs-root", help="Where the agent reads sensors on the device "
              "(default EDGEQ_SYSFS_ROOT there, else /sys)."),
    JobOption("vcgencmd", str, None, "--vcgencmd", help="vcgencmd path on the device ('' for none; default: on PATH)."),
    JobOption("duration_s", float, None, above=0, unit="s", jobs=("soak",), help="How long the soak runs."),
    # a window ends in an fsync'd record: below a second the soak measures its own disk writes
    JobOption("window_s", float, 60.0, low=1.0, unit="s", jobs=("soak",), help="One record per window."),
)


def job_options(job_kind):
    return [o for o in JOB_OPTIONS if job_kind in o.jobs]


def check_job(job, job_kind):
    """Every option of a ``job_kind`` job, typed, checked and defaulted; BadJob names the first problem."""
    checked = {}
    for option in job_options(job_kind):
        value = job.get(option.name)
        try:
            checked[option.name] = option.check(value if value is not None else option.default_for(job_kind))
        except ValueError as exc:
            raise AgentFailure("BadJob", str(exc))
    if job_kind == "soak" and checked["duration_s"] is None:
        raise AgentFailure("BadJob", "a soak needs duration_s")
    return checked


def _natural(path):
    """hwmon2 before hwmon10."""
    match = re.search(r"(\d+)$", path)
    return (re.sub(r"\d+$", "", path), int(match.group(1)) if match else -1)


def _read_number(path):
    try:
        with open(path, "rb") as handle:
            return float(handle.read())
    except (OSError, ValueError):
        return NAN


def _read_text(path):
    try:
        with open(path) as handle:
            return handle.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _finite(value):
    return value if isinstance(value, (int, float)) and value == value and abs(value) != float("inf") else None


def decode_throttled(value):
    """Names of the bits of `vcgencmd get_throttled` (bits 0-3 now, 16-19 has occurred).

    The one decoder: the host imports it (and THROTTLE_BITS, throttled_now) from here.
    """
    if value is None or value < 0:
        return []
    now = [name for bit, name in THROTTLE_BITS if value >> bit & 1]
    occurred = [name + "_occurred" for bit, name in THROTTLE_BITS if value >> (bit + 16) & 1]
    return now + occurred


def throttled_now(value):
    """The bits that hold at the moment of reading (0 when unknown): a board that once
    under-volted keeps bit 16 set until reboot, which says nothing about this window."""
    return value & THROTTLED_NOW_MASK if value is not None and value > 0 else 0


def resolve_vcgencmd(value):
    """None: the vcgencmd on PATH; "" or False: none; anything else: that command."""
    if value is None:
        return shutil.which("vcgencmd")
    if not value:
        return None
    return shutil.which(str(value)) or None


class Vcgencmd:
    """The Raspberry Pi firmware tool; every failure is None, never an exception."""

    def __init__(self, path, timeout_s=2.0):
        self.path, self.timeout_s = path, timeout_s

    def query(self, *args):
        try:
            done = subprocess.run([self.path] + list(args), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  stdin=subprocess.DEVNULL, timeout=self.timeout_s)
        except (OSError, subprocess.SubprocessError):
            return None
        if done.returncode != 0:
            return None
        return done.stdout.decode("ascii", "replace")

    def temp_c(self):
        match = re.search(r"temp=([-+0-9.]+)", self.query("measure_temp") or "")
        return float(match.group(1)) if match else NAN

    def throttled(self):
        match = re.search(r"throttled=(0x[0-9a-fA-F]+|\d+)", self.query("get_throttled") or "")
        return int(match.group(1), 0) if match else -1

    def pmic(self):
        return parse_pmic(self.query("pmic_read_adc") or "")


def parse_pmic(text):
    """`vcgencmd pmic_read_adc` -> (watts, {rail: [amps, volts]}): sum of I x V over rails with both."""
    rails = {}
    for line in text.splitlines():
        match = PMIC_LINE.match(line)
        if match:
            rail, unit, value = match.group(1), match.group(2), float(match.group(3))
            rails.setdefault(rail, [NAN, NAN])[0 if unit == "A" else 1] = value
    paired = {rail: iv for rail, iv in rails.items() if iv[0] == iv[0] and iv[1] == iv[1]}
    if not paired:
        return NAN, {}
    return sum(abs(amps * volts) for amps, volts in paired.values()), paired


class Thermal:
    """Thermal zones (millidegrees C); the reading is the hottest zone, else vcgencmd measure_temp.

    On a Raspberry Pi thermal_zone0 is the same SoC sensor vcgencmd reads, and reading a
    file costs far less than starting a process, so vcgencmd is used per sample only when
    no thermal zone gives a reading (its reading is still recorded at the start and end of
    a run, in meta["thermal"]).
    """

    def __init__(self, sysfs_root, vcgencmd):
        self.zones, self.paths = [], []
        for zone in sorted(glob.glob(os.path.join(sysfs_root, "class", "thermal", "thermal_zone*")), key=_natural):
            if os.path.exists(os.path.join(zone, "temp")):
                self.zones.append({"zone": os.path.basename(zone), "type": _read_text(os.path.join(zone, "type"))})
                self.paths.append(os.path.join(zone, "temp"))
        self.vcgencmd = vcgencmd
        self.last = [NAN] * len(self.paths)
        self.source = "thermal_zone" if self.paths else ("vcgencmd" if vcgencmd else None)

    def read(self):
        best = NAN
        for i, path in enumerate(self.paths):
            value = _read_number(path) / 1000.0
            self.last[i] = value
            if value == value and not value <= best:
                best = value
        if best != best and self.vcgencmd is not None:  # no zone, or none readable
            best = self.vcgencmd.temp_c()
        return best

    def snapshot(self):
        temp = self.read()
        return {"temp_c": _finite(temp),
                "zones": {z["zone"]: _finite(v) for z, v in zip(self.zones, self.last)},
                "vcgencmd_temp_c": _finite(self.vcgencmd.temp_c()) if self.vcgencmd else None,
                "throttled": self.vcgencmd.throttled() if self.vcgencmd else None}


@power_backend("hwmon")
class HwmonPower:
    """INA219/INA226-style hwmon chip: power<N>_input (uW), else in<N>_input (mV) x curr<N>_input (mA)."""

    def __init__(self, sysfs_root, vcgencmd, sensor=None):
        base = os.path.join(sysfs_root, "class", "hwmon")
        seen = []
        for chip in sorted(glob.glob(os.path.join(base, "hwmon*")), key=_natural):
            name = _read_text(os.path.join(chip, "name")) or ""
            seen.append("%s:%s" % (os.path.basename(chip), name))
            if sensor and sensor not in (name, os.path.basename(chip)):
                continue
            try:
                files = set(os.listdir(chip))
            except OSError:
                continue
            power = sorted((f for f in files if re.match(r"power\d+_input$", f)), key=_natural_file)
            pairs = [("in%s_input" % m.group(1), m.group(0)) for m in
                     sorted(filter(None, (re.match(r"curr(\d+)_input$", f) for f in files)), key=lambda m: int(m.group(1)))
                     if "in%s_input" % m.group(1) in files]
            if power or pairs:
                self.chip, self.name = chip, name
                self.power_files = [os.path.join(chip, f) for f in power]
                self.pairs = [(os.path.join(chip, v), os.path.join(chip, c)) for v, c in pairs]
                self.describe = {"backend": self.backend, "chip": os.path.basename(chip), "name": name,
                                 "files": power if power else ["%s*%s" % p for p in pairs]}
                return
        raise AgentFailure("NoPowerSensor", "power 'hwmon'%s: no hwmon chip under %s has power<N>_input (uW) or "
                           "in<N>_input (mV) with curr<N>_input (mA); found %s"
                           % (" (sensor %r)" % sensor if sensor else "", base, ", ".join(seen) or "no hwmon chips"))

    def read(self):
        if self.power_files:
            return sum(abs(_read_number(f)) for f in self.power_files) / 1e6
        return sum(abs(_read_number(v) * _read_number(c)) for v, c in self.pairs) / 1e6


def _natural_file(name):
    match = re.search(r"(\d+)", name)
    return int(match.group(1)) if match else -1


@power_backend("power_supply")
class PowerSupplyPower:
    """/sys/class/power_supply/<name>: power_now (uW), else current_now (uA) x voltage_now (uV).

    Batteries report a signed current (negative while discharging on some drivers); the
    magnitude is what the board draws. Battery-type supplies are preferred.
    """

    def __init__(self, sysfs_root, vcgencmd, sensor=None):
        base = os.path.join(sysfs_root, "class", "power_supply")
        supplies = sorted(glob.glob(os.path.join(base, "*")))
        supplies.sort(key=lambda p: (_read_text(os.path.join(p, "type")) != "Battery", os.path.basename(p)))
        seen = []
        for supply in supplies:
            name = os.path.basename(supply)
            seen.append("%s:%s" % (name, _read_text(os.path.join(supply, "type"))))
            if sensor and sensor != name:
                continue
            has = lambda f: os.path.exists(os.path.join(supply, f))  # noqa: E731
            if has("power_now"):
                self.files = [os.path.join(supply, "power_now")]
                self.scale = 1e-6
            elif has("current_now") and has("voltage_now"):
                self.files = [os.path.join(supply, "current_now"), os.path.join(supply, "voltage_now")]
                self.scale = 1e-12
            else:
                continue
            self.describe = {"backend": self.backend, "supply": name,
                             "files": [os.path.basename(f) for f in self.files]}
            return
        raise AgentFailure("NoPowerSensor", "power 'power_supply'%s: no supply under %s has power_now (uW) or "
                           "current_now (uA) with voltage_now (uV); found %s"
                           % (" (sensor %r)" % sensor if sensor else "", base, ", ".join(seen) or "no supplies"))

    def read(self):
        value = 1.0
        for path in self.files:
            value *= _read_number(path)
        return abs(value) * self.scale


@power_backend("pi5-pmic")
class PmicPower:
    """Raspberry Pi 5: `vcgencmd pmic_read_adc`, sum over rails of current x voltage."""

    def __init__(self, sysfs_root, vcgencmd, sensor=None):
        if vcgencmd is None:
            raise AgentFailure("NoPowerSensor", "power 'pi5-pmic' needs vcgencmd (Raspberry Pi 5 firmware tool): "
                               "none on PATH and no job option 'vcgencmd' naming one")
        watts, rails = vcgencmd.pmic()
        if not rails:
            raise AgentFailure("NoPowerSensor", "power 'pi5-pmic': `%s pmic_read_adc` gave no rail with both a "
                               "current (..._A current(N)=xA) and a voltage (..._V volt(N)=yV)" % vcgencmd.path)
        self.vcgencmd = vcgencmd
        self.describe = {"backend": self.backend, "vcgencmd": vcgencmd.path, "rails": sorted(rails)}

    def read(self):
        return self.vcgencmd.pmic()[0]


def open_power(backend, sysfs_root, vcgencmd, sensor=None):
    """The registered reader for ``backend``; None for no power reading (None or "none")."""
    if backend is None:
        return None
    if backend not in POWER_BACKENDS:
        raise AgentFailure("BadJob", "unknown power backend %r (choose from %s)"
                           % (backend, ", ".join(POWER_BACKENDS)))
    reader = POWER_BACKENDS[backend]
    return reader(sysfs_root, vcgencmd, sensor) if reader is not None else None


def cpu_frequencies(sysfs_root):
    """Governor and current/min/max frequency (kHz) of every CPU that has cpufreq."""
    found = {}
    for cpu in sorted(glob.glob(os.path.join(sysfs_root, "devices", "system", "cpu", "cpu[0-9]*")), key=_natural):
        freq = os.path.join(cpu, "cpufreq")
        if not os.path.isdir(freq):
            continue
        def number(name):
            value = _finite(_read_number(os.path.join(freq, name)))
            return int(value) if value is not None else None

        found[os.path.basename(cpu)] = {
            "governor": _read_text(os.path.join(freq, "scaling_governor")),
            "cur_khz": number("scaling_cur_freq"), "min_khz": number("scaling_min_freq"),
            "max_khz": number("scaling_max_freq")}
    return found


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
    """``agent.py sample CONFIG``: tick until stdin closes.

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


def op_profile_status(runtime):
    """Per-op timings: none of the Python runtimes exposes TFLite's profiler."""
    return {"available": False, "runtime": "%s %s" % (runtime[0], runtime[1]),
            "why": "the Python Interpreter of ai_edge_litert / tflite_runtime / tf.lite has no profiler API "
                   "(no per-op timing call; experimental_force_delegate_node_profiling only affects a profiler "
                   "installed from C++); use the benchmark_model tool with --enable_op_profiling=true"}


def save_npz(path, arrays):
    """An .npz of plain arrays, written with allow_pickle=False on any numpy (1.26 has no savez flag)."""
    import zipfile

    from numpy.lib import format as npy_format

    with open(path, "wb") as raw:
        with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_STORED) as archive:
            for name, array in arrays.items():
                with archive.open(name + ".npy", "w", force_zip64=True) as member:
                    npy_format.write_array(member, array, allow_pickle=False)
        raw.flush()
        os.fsync(raw.fileno())



# --------------------------------------------------------------------------- input sets, a chunk at a time


class NpzMember(object):
    """One array of an .npz, read without loading it: its header is parsed once, its
    rows are read on demand. Runs on the board and on the host (which imports it), so
    a suite of any size costs one chunk of memory, and a member whose header promises
    more data than the archive holds (a truncated file, a zip bomb) is refused before
    anything is read."""

    def __init__(self, path, info, dtype, shape, fortran_order, header_len):
        self.path, self.info, self.name = path, info, info.filename[:-4]
        self.dtype, self.shape, self.fortran_order = dtype, shape, fortran_order
        self.header_len = header_len  # magic + npy header, bytes before the data
        self.stored = info.compress_type == 0
        self.data_offset = None  # absolute file offset of the data (stored members only)

    @property
    def rows(self):
        return int(self.shape[0]) if self.shape else 1

    @property
    def row_items(self):
        items = 1
        for dim in self.shape[1:]:
            items *= int(dim)
        return items

    @property
    def nbytes(self):
        return self.rows * self.row_items * self.dtype.itemsize if self.shape else self.dtype.itemsize

    @property
    def chunkable(self):
        """Rows can be read one block at a time (C order, at least one axis)."""
        return bool(self.shape) and (not self.fortran_order or len(self.shape) == 1)

    def read(self, lo=0, hi=None):
        """Rows lo:hi as a writable array (the whole array when it has no axis)."""
        if not self.shape:
            return self._read_bytes(0, self.dtype.itemsize).view(self.dtype).reshape(())
        if not self.chunkable:
            if lo == 0 and hi in (None, self.rows):
                return self._read_fortran()
            return self._read_fortran()[lo:hi]
        hi = self.rows if hi is None else min(hi, self.rows)
        lo = max(0, min(lo, hi))
        row_bytes = self.row_items * self.dtype.itemsize
        raw = self._read_bytes(lo * row_bytes, (hi - lo) * row_bytes)
        return raw.view(self.dtype).reshape((hi - lo,) + tuple(self.shape[1:]))

    def chunks(self, rows_per_chunk, reuse=False):
        """(lo, hi, rows) blocks in order, read front to back (a compressed member is inflated once).

        With reuse, every block is read into the same buffer, valid until the next block is
        read: a pass over the member then costs one block of memory and no allocation per block.
        """
        step = max(1, int(rows_per_chunk))
        if not self.chunkable:  # no axis, or Fortran order (rows not contiguous): read once, whole
            whole = self.read()
            for lo in range(0, self.rows, step):
                yield lo, min(lo + step, self.rows), whole[lo:lo + step] if self.shape else whole
            return
        import numpy as np

        row_bytes = self.row_items * self.dtype.itemsize
        shared = np.empty(min(step, self.rows) * row_bytes, dtype=np.uint8) if reuse else None
        with self._data_stream() as handle:
            for lo in range(0, self.rows, step):
                hi = min(lo + step, self.rows)
                size = (hi - lo) * row_bytes
                block = shared[:size] if reuse else np.empty(size, dtype=np.uint8)
                _readinto_exact(handle, block, self)
                yield lo, hi, block.view(self.dtype).reshape((hi - lo,) + tuple(self.shape[1:]))

    @contextlib.contextmanager
    def _data_stream(self):
        """A file object at the member's first data byte: the archive file itself when the member
        is stored, else the inflating stream past the .npy header."""
        if self.stored:
            with open(self.path, "rb") as handle:
                handle.seek(self.data_offset)
                yield handle
        else:
            with _zip_of(self.path) as archive, archive.open(self.info) as handle:
                _read_exact(handle, self.header_len, self)
                yield handle

    def memmap(self):
        """A read-only map of a stored C-order member; None when it cannot be mapped."""
        import numpy as np

        if not (self.stored and self.chunkable and self.nbytes):
            return None
        return np.memmap(self.path, dtype=self.dtype, mode="r", offset=self.data_offset, shape=tuple(self.shape))

    def _read_bytes(self, start, count):
        import numpy as np

        block = np.empty(count, dtype=np.uint8)
        if self.stored:
            with open(self.path, "rb") as handle:
                handle.seek(self.data_offset + start)
                _readinto_exact(handle, block, self)
            return block
        with _zip_of(self.path) as archive, archive.open(self.info) as handle:
            _skip(handle, self.header_len + start, self)
            _readinto_exact(handle, block, self)
        return block

    def _read_fortran(self):
        import numpy as np

        flat = self._read_bytes(0, self.nbytes).view(self.dtype)
        return np.asfortranarray(flat.reshape(tuple(self.shape), order="F"))


def _zip_of(path):
    import zipfile

    return zipfile.ZipFile(path)


def _skip(handle, count, member):
    while count > 0:
        got = _guarded(member, handle.read, min(count, 1 << 20))
        if not got:
            raise AgentFailure("BadInputs", "%s: array %s is truncated" % (member.path, member.name))
        count -= len(got)


def _read_exact(handle, count, member):
    data = _guarded(member, handle.read, count)
    if len(data) != count:
        raise AgentFailure("BadInputs", "%s: array %s is truncated" % (member.path, member.name))
    return data


def _readinto_exact(handle, block, member, piece=1 << 20):
    """Fill block from handle, a piece at a time: an inflating zip stream builds each read
    as new bytes objects, so a whole block in one read would cost the block several times over."""
    view, done = memoryview(block), 0
    while done < len(block):
        got = _guarded(member, handle.readinto, view[done:done + piece])
        if not got:
            raise AgentFailure("BadInputs", "%s: array %s is truncated" % (member.path, member.name))
        done += got


def _guarded(member, read, argument):
    """One read; a damaged archive (bad CRC, corrupt deflate data) becomes a BadInputs naming the array."""
    import zipfile
    import zlib

    try:
        return read(argument)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise AgentFailure("BadInputs", "%s: array %s is damaged (%s)" % (member.path, member.name, exc))


def npz_members(path):
    """{name: NpzMember} of an .npz, checked: plain dtypes only (no pickles), and every
    member's declared size must match the bytes the archive holds for it."""
    import zipfile

    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile, NotImplementedError, RuntimeError, ValueError, EOFError) as exc:
        raise AgentFailure("BadInputs", "%s is not a readable .npz archive (%s)" % (path, exc))
    members = {}
    with archive, open(path, "rb") as raw:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                raise AgentFailure("BadInputs", "%s holds %s, which is not an array" % (path, info.filename))
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise AgentFailure("BadInputs", "%s: array %s uses a compression numpy does not write"
                                   % (path, info.filename[:-4]))
            member = _parse_member(path, archive, info)
            if member.stored:
                member.data_offset = _data_offset(raw, info, path) + member.header_len
            members[member.name] = member
    return members


def _parse_member(path, archive, info):
    import numpy as np
    from numpy.lib import format as npy

    name = info.filename[:-4]
    try:
        with archive.open(info) as handle:
            version = npy.read_magic(handle)
            if version == (1, 0):
                shape, fortran, dtype = npy.read_array_header_1_0(handle)
            elif version == (2, 0):
                shape, fortran, dtype = npy.read_array_header_2_0(handle)
            else:
                shape, fortran, dtype = npy._read_array_header(handle, version)
            header_len = handle.tell()
    except AgentFailure:
        raise
    except Exception as exc:
        raise AgentFailure("BadInputs", "%s: array %s has no valid .npy header (%s)" % (path, name, exc))
    dtype = np.dtype(dtype)
    if dtype.hasobject:
        raise AgentFailure("BadInputs", "%s: array %s holds pickled/object data, which edgeq refuses to load"
                           % (path, name))
    member = NpzMember(path, info, dtype, tuple(int(s) for s in shape), bool(fortran), header_len)
    if any(s < 0 for s in member.shape) or info.file_size != header_len + member.nbytes:
        raise AgentFailure("BadInputs", "%s: array %s declares shape %s of %s (%d bytes) but holds %d bytes"
                           % (path, name, list(member.shape), dtype, member.nbytes, info.file_size - header_len))
    return member


def _data_offset(raw, info, path):
    """Where a stored member's bytes start: after its local header, whose extra field may
    differ from the central directory's."""
    import struct

    raw.seek(info.header_offset)
    local = raw.read(30)
    if len(local) != 30 or local[:4] != b"PK\x03\x04":
        raise AgentFailure("BadInputs", "%s: damaged archive (no local header for %s)" % (path, info.filename))
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    return info.header_offset + 30 + name_len + extra_len


# --------------------------------------------------------------------------- run


def rss_kb():
    """The agent's resident memory now (kB); None where /proc is not there."""
    return _proc_status_kb("VmRSS")


def peak_rss_kb():
    """The agent's own high-water resident memory (kB); None where /proc is not there.

    VmHWM, not getrusage: ru_maxrss survives exec, so an agent started by fork+exec
    from a large process would report that process's peak.
    """
    return _proc_status_kb("VmHWM")


def reset_peak_rss():
    """Start VmHWM again from the current RSS (Linux >= 4.0), so peak_rss_kb is this job's peak,
    not that of an earlier job in the same agent; where that is refused the peak is the process's."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


def _proc_status_kb(field):
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


BLOCK_BYTES = 8 << 20  # input rows (all inputs together) held at a time, whatever the size of the set


class InputStream(object):
    """A job's input arrays, read a block of rows at a time through npz_members.

    Only the member headers are read up front, and checked against the model before any
    inference, so the agent's memory holds one block (~BLOCK_BYTES) however large the
    set is. Every pass reads the blocks afresh; the reads happen between invokes,
    never inside a timed one. Blocks are whole batches, so no batch spans two blocks.
    """

    def __init__(self, path, names, details, batch):
        members = npz_members(path)
        missing = [n for n in names if n not in members]
        if missing:
            raise AgentFailure("BadInputs", "%s has no array named %s" % (path, ", ".join(missing)))
        self.path, self.members = path, [members[n] for n in names]
        self.count = check_inputs(self.members, names, details)
        row_bytes = sum(m.row_items * m.dtype.itemsize for m in self.members)
        self.block_rows = max(1, BLOCK_BYTES // max(row_bytes, 1) // batch) * batch

    def head(self, rows):
        """The first ``rows`` samples of every input (first inference, warmup)."""
        with self._reading():
            return [m.read(0, rows) for m in self.members]

    def blocks(self):
        """(lo, hi, [rows lo:hi of each input]) over the whole set, in order; each block's
        arrays are overwritten by the next block (one block of memory, no allocation per block)."""
        with self._reading():
            for parts in zip(*(m.chunks(self.block_rows, reuse=True) for m in self.members)):
                yield parts[0][0], parts[0][1], [block for _, _, block in parts]

    @contextlib.contextmanager
    def _reading(self):
        """A read that fails part-way (bad CRC, corrupt deflate data, I/O error) is BadInputs naming the set."""
        try:
            yield
        except AgentFailure:
            raise
        except Exception as exc:
            raise AgentFailure("BadInputs", "cannot read input set %s: %s: %s"
                               % (self.path, exc.__class__.__name__, exc))


def check_inputs(members, names, details):
    """The sample count, once every array's samples, dtype and sample shape fit the model's inputs."""
    count = members[0].rows
    for name, member, detail in zip(names, members, details):
        if not member.shape:
            raise AgentFailure("BadInputs", "array %s is a single value, not samples" % name)
        if member.rows != count:
            raise AgentFailure("BadInputs", "array %s has %d samples, expected %d" % (name, member.rows, count))
        if _dtype_name(member.dtype) != _dtype_name(detail["dtype"]):
            raise AgentFailure("BadInputs", "array %s is %s but model input %s wants %s"
                               % (name, member.dtype, detail["name"], _dtype_name(detail["dtype"])))
        want = [int(s) for s in detail.get("shape_signature", detail["shape"])][1:]
        got = list(member.shape[1:])
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
    job = dict(job, **check_job(job, "run"))
    out_dir = job["out"]
    names = job["input_arrays"]
    threads, resolver, batch = job["threads"], job["resolver"], job["batch_size"]
    warmup, repeats, min_duration_s = job["warmup"], job["repeats"], job["min_duration_s"]
    sensing = Sensing(job)  # a power backend that was asked for and is absent fails here, before any work
    _check_expected_sha(job.get("model"), job.get("model_sha256"))
    _check_expected_sha(job.get("inputs"), job.get("inputs_sha256"))
    _prepare_out_dir(out_dir)
    reset_peak_rss()

    clock = {"wall_ns": time.time_ns(), "perf_ns": time.perf_counter_ns()}  # aligns perf_counter_ns to UTC
    cpufreq_start = cpu_frequencies(sensing.sysfs_root)
    thermal_start = sensing.thermal.snapshot()
    started = time.time()
    load_start = time.perf_counter_ns()
    interpreter = open_interpreter(runtime, job["model"], threads, resolver)
    load_ns = time.perf_counter_ns() - load_start
    in_details = interpreter.get_input_details()
    out_details = interpreter.get_output_details()
    if len(names) != len(in_details):
        raise AgentFailure("BadJob", "model has %d inputs, job names %d arrays" % (len(in_details), len(names)))
    inputs = InputStream(job["inputs"], names, in_details, batch)
    count = inputs.count
    if count == 0:
        raise AgentFailure("BadInputs", "input set %s has no samples" % job["inputs"])

    invoker = BatchInvoker(interpreter, in_details, out_details)
    if batch > 1 and invoker.fixed_batch:
        raise AgentFailure("BadJob", "%s takes a fixed batch of 1 (its inputs' shape signature): batch_size must be "
                           "1, not %d" % (os.path.basename(job["model"]), batch))
    head = inputs.head(batch)
    first_ns = invoker.invoke_timed([a[:1] for a in head])
    for _ in range(warmup):  # at the timed batch size, so no resize lands in the timed loop
        invoker.invoke_timed(head)
    del head

    steps = Steps(count, batch)
    writer = RunWriter(out_dir, count, steps, repeats, invoker.read_outputs(), record_starts=sensing.enabled)
    progress = Progress(emit, repeats * len(steps), on_tick=writer.checkpoint)
    windows = {}
    cooldown = None
    sampler = sensing.sampler(job, out_dir).start() if sensing.enabled else None
    try:
        if sensing.cooldown_c is not None:
            begin = time.perf_counter_ns()
            cooldown = wait_for_cooldown(sensing.thermal, float(sensing.cooldown_c), sensing.cooldown_timeout_s, emit)
            windows["cooldown"] = [begin, time.perf_counter_ns()]
        if sampler is not None and sensing.idle_s > 0:  # the baseline: sensors on, nothing running
            begin = time.perf_counter_ns()
            time.sleep(sensing.idle_s)
            windows["idle"] = [begin, time.perf_counter_ns()]
        gc.disable()  # a collection inside the timed loop shows up as a latency outlier
        try:
            begin = time.perf_counter_ns()
            passes = _timed_passes(invoker, inputs, steps, repeats, int(min_duration_s * 1e9), writer, progress)
            windows["timed"] = [begin, time.perf_counter_ns()]
        finally:
            gc.enable()
    finally:
        if sampler is not None:
            sampler.stop()
    progress.update(passes * len(steps), force=True)
    meta = {
        "job": {k: v for k, v in job.items() if k != "out"},
        "device": device_facts(runtime, sensing.sysfs_root, sensing.vcgencmd.path if sensing.vcgencmd else ""),
        "resolver": resolver,
        "threads": threads,
        "batch_size": batch,
        "warmup": warmup,
        "repeats": repeats,
        "min_duration_s": min_duration_s,
        "passes": passes,
        "timed_s": (windows["timed"][1] - windows["timed"][0]) / 1e9,
        "samples": count,
        "model_sha256": sha256_file(job["model"]),
        "inputs_sha256": sha256_file(job["inputs"]),
        "inputs": tensor_summary(in_details),
        "outputs": tensor_summary(out_details),
        "load_ns": load_ns,
        "first_inference_ns": first_ns,
        "clock": clock,
        "windows": windows,
        "cpufreq": {"start": cpufreq_start, "end": cpu_frequencies(sensing.sysfs_root),
                    "governors": sorted(set(c["governor"] for c in cpufreq_start.values() if c["governor"]))},
        "thermal": {"start": thermal_start, "end": sensing.thermal.snapshot()},
        "cooldown": cooldown,
        "op_profile": op_profile_status(runtime),
        "peak_rss_kb": peak_rss_kb(),
        "started": started,
        "finished": time.time(),
    }
    if sampler is not None:
        meta["sampling"] = dict(sensing.describe(), **sampler.summary(windows))
    return writer.finish(meta, sampler.arrays() if sampler is not None else None)


def _timed_passes(invoker, inputs, steps, repeats, min_duration_ns, writer, progress):
    """Whole passes over the input set until `repeats` passes AND min_duration_ns are done.

    The latency file starts with room for `repeats` passes. When that is not enough
    time, the pass rate measured so far sizes it for the rest (+10 %), again if needed;
    at the end it is cut to the passes that ran. Resizing happens between passes,
    never inside a timed invoke. Returns the number of passes.
    """
    per_pass = len(steps)
    start = time.perf_counter_ns()
    rep = 0
    while True:
        _timed_pass(invoker, inputs, steps, rep, writer, progress)
        rep += 1
        elapsed = time.perf_counter_ns() - start
        if rep >= repeats and elapsed >= min_duration_ns:
            break
        if rep == writer.passes:
            more = (min_duration_ns - elapsed) * rep / max(elapsed, 1) * 1.1
            writer.resize(rep + max(1, int(more) + 1))
            progress.total = writer.passes * per_pass
    if rep < writer.passes:
        writer.resize(rep)
    return rep


class Steps(object):
    """The invocations of one pass, (lo, hi) rows each, computed when asked: a list of a
    million tuples would cost the agent ~100 MB on a large suite."""

    def __init__(self, count, batch):
        self.count, self.batch = count, batch

    def __len__(self):
        return (self.count + self.batch - 1) // self.batch

    def __getitem__(self, i):
        if not 0 <= i < len(self):
            raise IndexError(i)
        return i * self.batch, min((i + 1) * self.batch, self.count)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def sizes(self):
        import numpy as np

        sizes = np.full(len(self), self.batch, dtype=np.int32)
        if len(self):
            sizes[-1] = self.count - (len(self) - 1) * self.batch
        return sizes


def _timed_pass(invoker, inputs, steps, rep, writer, progress):
    """Pass ``rep`` over the set, a block of inputs at a time; the first pass stores the outputs.

    Steps are whole batches and blocks whole batches, so each step lies in one block.
    """
    latency, starts, i = writer.latency, writer.starts, 0
    for base, end, block in inputs.blocks():
        while i < len(steps) and steps[i][1] <= end:
            lo, hi = steps[i]
            latency[rep, i] = invoker.invoke_timed([a[lo - base:hi - base] for a in block])
            if starts is not None:
                starts[rep, i] = invoker.last_start_ns
            if rep == 0:
                writer.store(invoker.read_outputs(), lo, hi)
            i += 1
            progress.update(rep * len(steps) + i)


class RunWriter:
    """Results go straight into .npy files as they are produced.

    Outputs are written with positioned writes (NpyRows), not memory maps, so they cost
    no resident memory however large they are; the latency timelines (8 bytes per
    invocation) are memory-mapped. progress.json says how far they got, so if the agent
    is killed the host can still pull what exists; manifest.json, written last, is what
    marks a run complete.
    """

    def __init__(self, out_dir, count, steps, repeats, sample_outputs, record_starts=False):
        self.out_dir, self.count, self.steps = out_dir, count, steps
        self.outputs = [NpyRows(os.path.join(out_dir, "outputs", "output_%d.npy" % k), value.dtype,
                                (count,) + tuple(value.shape[1:]))
                        for k, value in enumerate(sample_outputs)]
        self.passes = repeats
        self.latency = self._timeline("latency_ns.npy", repeats)
        self.starts = self._timeline("invoke_start_ns.npy", repeats) if record_starts else None
        for rel in self.files():  # reserve the space now: a full disk is ENOSPC here, not SIGBUS later
            _reserve(os.path.join(out_dir, rel))
        self.samples_done = 0
        self.invocations_done = 0

    def _timeline(self, rel, passes, old=None):
        """A (passes, invocations per pass) int64 .npy; with old, a resized copy replacing it."""
        from numpy.lib.format import open_memmap

        path = os.path.join(self.out_dir, rel)
        target = path + ".resize" if old is not None else path
        array = open_memmap(target, mode="w+", dtype="int64", shape=(passes, len(self.steps)))
        if old is not None:
            _reserve(target)
            keep = min(passes, old.shape[0])
            array[:keep] = old[:keep]
            array.flush()
            os.replace(target, path)
        return array

    def timelines(self):
        return [("latency_ns.npy", self.latency)] + ([("invoke_start_ns.npy", self.starts)] if self.starts is not None
                                                     else [])

    def resize(self, passes):
        self.latency = self._timeline("latency_ns.npy", passes, self.latency)
        if self.starts is not None:
            self.starts = self._timeline("invoke_start_ns.npy", passes, self.starts)
        self.passes = passes

    def files(self):
        return ["outputs/output_%d.npy" % k for k in range(len(self.outputs))] + [rel for rel, _ in self.timelines()]

    def store(self, values, lo, hi):
        for target, value in zip(self.outputs, values):
            target.write(lo, hi, value)
        self.samples_done = hi

    def checkpoint(self, invocations_done):
        self.invocations_done = invocations_done
        for target in self.outputs + [a for _, a in self.timelines()]:
            target.flush()
        _write_json(os.path.join(self.out_dir, "progress.json"),
                    {"samples_done": self.samples_done, "samples": self.count,
                     "invocations_done": invocations_done, "files": self.files()}, sync=False)

    def finish(self, meta, sensors=None):
        import numpy as np

        rels = self.files()
        for target in self.outputs:
            target.close()
        for _, array in self.timelines():
            array.flush()
        self.outputs = self.latency = self.starts = None  # close the maps before hashing
        batch_sizes = self.steps.sizes()
        with open(os.path.join(self.out_dir, "batch_sizes.npy"), "wb") as handle:
            np.save(handle, batch_sizes, allow_pickle=False)
        rels.append("batch_sizes.npy")
        if sensors is not None:
            save_npz(os.path.join(self.out_dir, "sensors.npz"), sensors)
            rels.append("sensors.npz")
        for rel in rels:
            _fsync_path(os.path.join(self.out_dir, rel))
        return write_manifest(self.out_dir, rels, meta)


class NpyRows(object):
    """An .npy file filled a block of rows at a time with positioned writes (os.pwrite).

    The header is written first and the file allocated at its full size at once, so a
    full disk is ENOSPC here, before any inference, never half-way. No memory map:
    written rows go to the page cache, not into the agent's resident memory.
    """

    def __init__(self, path, dtype, shape):
        import numpy as np
        from numpy.lib import format as npy_format

        self.dtype, self.shape = np.dtype(dtype), tuple(int(s) for s in shape)
        self.row_bytes = self.dtype.itemsize * int(np.prod(self.shape[1:], dtype=np.int64))
        self.handle = open(path, "wb+")
        npy_format.write_array_header_1_0(self.handle, {"descr": npy_format.dtype_to_descr(self.dtype),
                                                        "fortran_order": False, "shape": self.shape})
        self.handle.flush()
        self.data_offset = self.handle.tell()
        self.handle.truncate(self.data_offset + self.shape[0] * self.row_bytes)
        _reserve(path)

    def write(self, lo, hi, rows):
        """Rows lo:hi (broadcast and cast like an assignment into the array would be)."""
        import numpy as np

        rows = np.ascontiguousarray(np.broadcast_to(rows, (hi - lo,) + self.shape[1:]), dtype=self.dtype)
        data, offset = memoryview(rows.reshape(-1).view(np.uint8)), self.data_offset + lo * self.row_bytes
        while len(data):
            done = os.pwrite(self.handle.fileno(), data, offset)
            data, offset = data[done:], offset + done

    def flush(self):
        """To disk, like the msync of a memory map's flush: a checkpoint survives a power cut."""
        os.fsync(self.handle.fileno())

    def close(self):
        self.handle.close()


class BatchInvoker:
    """Resizes inputs only when the batch size changes, and times invoke() alone.

    A model whose inputs carry a fixed batch of 1 in their shape signature (MediaPipe's, and
    many exported with a static shape) cannot be resized to a batch: its reshapes hard-code
    the 1, and a resized invoke() returns outputs of the wrong shape without any error. Such
    a model is invoked sample by sample and its outputs stacked (``fixed_batch``).
    """

    def __init__(self, interpreter, in_details, out_details):
        self.interpreter = interpreter
        self.in_details = in_details
        self.out_details = out_details
        self.current = [tuple(int(s) for s in d["shape"]) for d in in_details]
        self.last_start_ns = 0
        self.fixed_batch = any(len(d["shape"]) and int(list(d.get("shape_signature", d["shape"]))[0]) == 1
                               for d in in_details)
        self._stacked = None

    def invoke_timed(self, batches):
        rows = len(batches[0]) if batches else 1
        if self.fixed_batch and rows != 1:
            return self._one_at_a_time(batches, rows)
        self._stacked = None
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
        end = time.perf_counter_ns()
        self.last_start_ns = start
        return end - start

    def _one_at_a_time(self, batches, rows):
        import numpy as np

        total, parts = 0, []
        for i in range(rows):
            total += self.invoke_timed([b[i:i + 1] for b in batches])
            parts.append([np.array(a) for a in self.read_outputs()])
        self._stacked = [np.concatenate([p[k] for p in parts]) for k in range(len(self.out_details))]
        return total

    def read_outputs(self):
        if self._stacked is not None:
            return self._stacked
        return [self.interpreter.get_tensor(d["index"]) for d in self.out_details]


def _check_expected_sha(path, expected):
    if path is None:
        raise AgentFailure("BadJob", "job names no model or inputs")
    if not os.path.isfile(path):
        raise AgentFailure("BadJob", "%s does not exist on the device" % path)
    if expected and sha256_file(path) != expected:
        raise AgentFailure("Corrupt", "%s does not match its sha256 %s" % (path, expected[:12]))


def _prepare_out_dir(out_dir):
    """The run's own folder: made here and recorded as edgeq's (``record_made``), or one this agent made before
    (a run repeated into it). A folder edgeq did not make is refused: a run never writes into, or clears files
    from, a folder of the user's."""
    os.makedirs(os.path.dirname(os.path.abspath(out_dir)), exist_ok=True)
    try:
        os.mkdir(out_dir)
    except OSError as exc:
        if exc.errno != errno.EEXIST:
            raise
        if not made_by_edgeq(out_dir):
            raise AgentFailure("BadJob", "%s already exists and was not made by edgeq: a run writes only into a "
                                         "folder of its own" % out_dir)
    else:
        record_made(out_dir)
    os.makedirs(os.path.join(out_dir, "outputs"), exist_ok=True)
    for stale in ("manifest.json", "progress.json", "sensors.npz", "invoke_start_ns.npy"):
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


# --------------------------------------------------------------------------- the store on the device


STORE_FOLDERS = ("cas", "runs")  # what the store may evict; agents/ and venv/ are never touched
STORE_PROTECT_S = 3600.0  # entries used this recently may belong to another job still running
MADE = ".edgeq-made"  # edgeq's record that it made a store entry (see record_made)
RECORD_MAX = 4096


def record_made(path, source=None):
    """Record that edgeq made ``path``: the only entries the store's tidy ever deletes.

    A folder (a run's) holds its record inside, ``path/.edgeq-made``; a file (a pushed model or input set) has
    it beside, ``folder/.edgeq-made/name``. The record keeps the entry's identity (device and inode) at the
    time it was made, taken from ``source`` when given (an upload's part file, recorded before it is renamed
    to ``path``: a rename keeps the inode), so a file put there later by someone else under the same name is
    never taken for edgeq's.
    """
    made = os.lstat(source or path)
    target = _record_path(path, is_dir=_is_dir(made))
    if not _is_dir(made):
        try:
            os.mkdir(os.path.dirname(target))
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise
    _write_json(target, {"made_by": "edgeq", "dev": made.st_dev, "ino": made.st_ino, "at": time.time()})


def made_by_edgeq(path):
    """True when edgeq's record says it made ``path``, the very entry there now (not a later one by that name)."""
    try:
        found = os.lstat(path)
    except OSError:
        return False
    record = _read_record(_record_path(path, is_dir=_is_dir(found)))
    return record is not None and (record.get("dev"), record.get("ino")) == (found.st_dev, found.st_ino)


def _record_path(path, is_dir):
    if is_dir:
        return os.path.join(path, MADE)
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, MADE, name)


def _is_dir(stat_result):
    import stat

    return stat.S_ISDIR(stat_result.st_mode)  # from lstat: a symlink to a folder is no folder of edgeq's


def _read_record(path):
    """The record as a dict, or None: absent, not a plain file, too large or not edgeq's JSON."""
    import stat

    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
        with open(path, "rb") as handle:
            raw = handle.read(RECORD_MAX + 1)
        record = json.loads(raw.decode("utf-8")) if len(raw) <= RECORD_MAX else None
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("made_by") == "edgeq" else None


def tidy_store(root, budget_bytes, keep, drop, protect_s=STORE_PROTECT_S):
    """Keep what edgeq made in the device's store (pushed files, run folders) within budget_bytes.

    Only entries directly under root/cas and root/runs that edgeq's records say it made (``made_by_edgeq``)
    are counted, touched or removed, whatever the request names: a workdir may be a folder that already had
    a cas/ or runs/ of the user's, and those files are never edgeq's to delete. ``keep`` (files in use now)
    are touched so they count as recently used and are never removed; ``drop`` (run folders the host has
    pulled and verified) go first; then the least recently used entries go until the store fits, except
    those used in the last ``protect_s`` seconds (another job on this board may be reading them).
    ``foreign`` counts the entries left alone because edgeq did not make them.
    """
    root = os.path.realpath(os.path.expanduser(root))
    now = time.time()
    entries, foreign = _store_entries(root)
    ours = set(path for path, _, _ in entries)
    kept = set(os.path.realpath(p) for p in keep) & ours
    dropped = set(os.path.realpath(p) for p in drop) & ours
    for path in kept:
        os.utime(path, (now, now))
    before = sum(size for _, size, _ in entries)
    total, removed = before, 0
    for path, size, used in sorted(entries, key=lambda e: (e[0] not in dropped, e[2])):
        if path in kept or (path not in dropped and (total <= budget_bytes or now - used < protect_s)):
            continue
        _remove_made(path)
        total, removed = total - size, removed + 1
    _forget_stale_records(root)
    return {"before_bytes": before, "after_bytes": total, "removed": removed, "budget_bytes": budget_bytes,
            "foreign": foreign}


def _store_entries(root):
    """(path, bytes, last used) of every pushed file and run folder edgeq made; and how many others there are."""
    entries, foreign = [], 0
    for folder in STORE_FOLDERS:
        base = os.path.join(root, folder)
        for name in (os.listdir(base) if os.path.isdir(base) and not os.path.islink(base) else []):
            path = os.path.join(base, name)
            if name == MADE:
                continue
            if not made_by_edgeq(path):
                foreign += 1
                continue
            entries.append((path, _tree_size(path), os.lstat(path).st_mtime))
    return entries, foreign


def _forget_stale_records(root):
    """Drop records of files that are gone or were replaced by another (the records are edgeq's own)."""
    for folder in STORE_FOLDERS:
        records = os.path.join(root, folder, MADE)
        if not os.path.isdir(records) or os.path.islink(records):
            continue
        for name in os.listdir(records):
            if not made_by_edgeq(os.path.join(root, folder, name)):
                _remove(os.path.join(records, name))
        try:
            os.rmdir(records)  # once it records nothing
        except OSError:
            pass


def _tree_size(path):
    if not os.path.isdir(path) or os.path.islink(path):
        return os.lstat(path).st_size
    total = 0
    for folder, _, files in os.walk(path):
        total += sum(os.lstat(os.path.join(folder, f)).st_size for f in files)
    return total


def _remove_made(path):
    """Remove an entry edgeq made, then its record (a folder's is inside it)."""
    is_dir = os.path.isdir(path) and not os.path.islink(path)
    _remove(path)
    if not is_dir:
        _remove(_record_path(path, is_dir=False))


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.remove(path)
        except OSError:
            pass


# --------------------------------------------------------------------------- device lock

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
        child = subprocess.Popen([sys.executable, "-I", os.path.abspath(__file__), "soak", job_path],
                                 cwd=os.path.dirname(job_path), stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=log, start_new_session=True,
                                 pass_fds=() if lock_fd is None else (lock_fd,))
    finally:
        log.close()
    return child.pid


# --------------------------------------------------------------------------- batch inference (infer)
# A search on a device sends a batch of inputs, gets both models' outputs back, and sends
# the next batch: the float and quantized interpreters stay loaded between requests. Arrays
# travel as base64 of their raw little-endian bytes with their dtype and shape; one request's
# inputs, and its answer's outputs (both models together), hold at most INFER_MAX_BYTES, so
# every answer fits the host's protocol line limit (1 MiB) after base64.

INFER_MAX_BYTES = 512 << 10
INFER_DTYPES = ("bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "float16", "float32",
                "float64")


class InferPair(object):
    """A float and a quantized interpreter with one input signature, and what they were loaded from."""

    def __init__(self, key, runtime, request, options):
        self.key = key
        self.invokers = []
        for role in ("float", "quant"):
            path = request.get(role)
            if not isinstance(path, str) or not path:
                raise AgentFailure("BadJob", "infer needs %s: the path of the %s model on the device"
                                   % (role, "float" if role == "float" else "quantized"))
            _check_expected_sha(path, request.get(role + "_sha256"))
            interpreter = open_interpreter(runtime, path, options["threads"], options["resolver"])
            self.invokers.append(BatchInvoker(interpreter, interpreter.get_input_details(),
                                              interpreter.get_output_details()))
        signatures = [[(d["dtype"], d["shape_signature"]) for d in tensor_summary(i.in_details)]
                      for i in self.invokers]
        if signatures[0] != signatures[1]:
            raise AgentFailure("BadJob", "the float and quantized models have different inputs: %s vs %s"
                               % (signatures[0], signatures[1]))
        self.in_details = self.invokers[0].in_details
        row_bytes = 0
        for invoker in self.invokers:
            for detail in invoker.out_details:
                row_bytes += _row_bytes(detail)
        self.out_row_bytes = row_bytes

    def summary(self):
        return tensor_summary(self.in_details), [tensor_summary(i.out_details) for i in self.invokers]

    def infer(self, batches):
        rows = len(batches[0])
        if rows * self.out_row_bytes > INFER_MAX_BYTES:
            raise AgentFailure("BadInputs", "a batch of %d rows gives %d bytes of outputs; at most %d per infer "
                               "request (%d rows)" % (rows, rows * self.out_row_bytes, INFER_MAX_BYTES,
                                                      INFER_MAX_BYTES // max(self.out_row_bytes, 1)))
        outputs, invoke_ns = {}, {}
        for role, invoker in zip(("float", "quant"), self.invokers):
            invoke_ns[role] = invoker.invoke_timed(batches)
            outputs[role] = invoker.read_outputs()
        size = sum(a.nbytes for role in outputs for a in outputs[role])
        if size > INFER_MAX_BYTES:  # outputs of a dynamic shape can outgrow the estimate above
            raise AgentFailure("BadInputs", "a batch of %d rows gave %d bytes of outputs; at most %d per infer "
                               "request: send fewer rows" % (rows, size, INFER_MAX_BYTES))
        answer = dict((role, [_wire_array(a) for a in arrays]) for role, arrays in outputs.items())
        answer.update(rows=rows, invoke_ns=invoke_ns)
        return answer


def _row_bytes(detail):
    import numpy as np

    items = 1
    for dim in list(detail.get("shape_signature", detail["shape"]))[1:] or [1]:
        items *= max(int(dim), 1)
    return items * np.dtype(detail["dtype"]).itemsize


class _InlineArray(object):
    """An inline array seen the way check_inputs sees an .npz member."""

    def __init__(self, array):
        self.array, self.shape, self.dtype, self.rows = array, array.shape, array.dtype, int(array.shape[0])


def infer_inputs(request, details):
    """The request's input arrays, decoded and checked against the model's inputs (BadInputs names the problem)."""
    if request.get("npz") is not None:
        return _npz_inputs(request, details)
    sent = request.get("inputs")
    if not isinstance(sent, list) or len(sent) != len(details):
        raise AgentFailure("BadInputs", "infer needs inputs: a list of %d array(s) {dtype, shape, data}, one per "
                           "model input" % len(details))
    arrays, total = [], 0
    for k, item in enumerate(sent):
        array = _decode_array(item, k, INFER_MAX_BYTES - total)
        total += array.nbytes
        arrays.append(array)
    return _checked(arrays, ["inputs[%d]" % k for k in range(len(arrays))], details)


def _decode_array(item, k, room):
    import base64
    import binascii

    import numpy as np

    if not isinstance(item, dict):
        raise AgentFailure("BadInputs", "inputs[%d] must be an object {dtype, shape, data}" % k)
    dtype, shape, data = item.get("dtype"), item.get("shape"), item.get("data")
    if dtype not in INFER_DTYPES:
        raise AgentFailure("BadInputs", "inputs[%d]: dtype %r is not one of %s" % (k, dtype, ", ".join(INFER_DTYPES)))
    if (not isinstance(shape, list) or len(shape) < 2 or len(shape) > 8
            or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape)):
        raise AgentFailure("BadInputs", "inputs[%d]: shape must be a list of 2 to 8 positive whole numbers "
                           "(samples first), got %r" % (k, shape))
    itemsize = np.dtype(dtype).itemsize
    size = itemsize
    for dim in shape:
        size *= dim
        if size > room:
            raise AgentFailure("BadInputs", "inputs[%d]: shape %s is more than the %d bytes of inputs one infer "
                               "request may carry; send fewer rows" % (k, shape, INFER_MAX_BYTES))
    if not isinstance(data, str) or len(data) != 4 * ((size + 2) // 3):
        raise AgentFailure("BadInputs", "inputs[%d]: data must be base64 of %d bytes (%s %s)" % (k, size, dtype, shape))
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise AgentFailure("BadInputs", "inputs[%d]: data is not base64 (%s)" % (k, exc))
    return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype).reshape(shape)


def _npz_inputs(request, details):
    path, names, rows = request.get("npz"), request.get("input_arrays"), request.get("rows")
    if not isinstance(names, list) or len(names) != len(details):
        raise AgentFailure("BadInputs", "infer from an .npz needs input_arrays: %d name(s)" % len(details))
    if (not isinstance(rows, list) or len(rows) != 2 or any(isinstance(r, bool) or not isinstance(r, int) for r in rows)
            or not 0 <= rows[0] < rows[1]):
        raise AgentFailure("BadInputs", "infer from an .npz needs rows: [lo, hi] with 0 <= lo < hi")
    _check_expected_sha(path, request.get("npz_sha256"))
    members = npz_members(path)
    missing = [n for n in names if n not in members]
    if missing:
        raise AgentFailure("BadInputs", "%s has no array named %s" % (path, ", ".join(missing)))
    chosen = [members[n] for n in names]
    check_inputs(chosen, names, details)
    if rows[1] > chosen[0].rows:
        raise AgentFailure("BadInputs", "rows %d:%d are past the %d samples of %s" % (rows[0], rows[1],
                                                                                      chosen[0].rows, path))
    need = sum((rows[1] - rows[0]) * m.row_items * m.dtype.itemsize for m in chosen)
    if need > INFER_MAX_BYTES:
        raise AgentFailure("BadInputs", "rows %d:%d are %d bytes of inputs; at most %d per infer request"
                           % (rows[0], rows[1], need, INFER_MAX_BYTES))
    return [m.read(rows[0], rows[1]) for m in chosen]


def _checked(arrays, names, details):
    check_inputs([_InlineArray(a) for a in arrays], names, details)
    return arrays


def _wire_array(array):
    import base64

    import numpy as np

    array = np.ascontiguousarray(array)
    raw = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    return {"dtype": _dtype_name(array.dtype), "shape": [int(s) for s in array.shape],
            "data": base64.b64encode(raw).decode("ascii")}


# --------------------------------------------------------------------------- protocol


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


# --------------------------------------------------------------------------- soak


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
        _write_json(os.path.join(self.folder, "status.json"), self.status, sync=True)


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
        _check_expected_sha(job["model"], job.get("model_sha256"))
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
            _write_json(os.path.join(job["dir"], "first_pass.json"), {"crc32": first_pass}, sync=True)


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


def _start_sampler(config, path):
    """The sampler process (``agent.py sample CONFIG``) with its config at path, started and ready."""
    with open(path, "w") as handle:
        json.dump(config, handle)
    proc = subprocess.Popen([sys.executable, "-I", os.path.abspath(__file__), "sample", path],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    if proc.stdout.readline().strip() != b"ready":
        raise AgentFailure("SamplerFailed", "the sensor sampler process did not start (see the agent log)")
    return proc


def main(argv):
    if argv[:1] == ["soak"] and len(argv) == 2:  # detached: no protocol stream, status files only
        return soak_main(argv[1])
    if argv[:1] == ["sample"] and len(argv) == 2:  # the sensor sampler of a run, as its own process
        return sample_main(argv[1])
    # The protocol owns the real stdout; anything a runtime prints goes to stderr.
    protocol_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return Agent(protocol_out).serve(sys.stdin)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
