"""Sensors: thermal zones, power readers (one registry of backends), vcgencmd, throttle bits, cpufreq.

Everything here reads a sysfs root given as a parameter (job["sysfs_root"], else
EDGEQ_SYSFS_ROOT, else /sys) and a vcgencmd path (job["vcgencmd"], else the one on
PATH), so tests run this code against a directory laid out like sysfs and a stand-in
vcgencmd. A sensor that is absent or unreadable gives NaN (or -1 for throttle bits),
never an exception; a power backend that was asked for and is not there fails the job.

Adding a power backend is one class here with ``@power_backend("name")``: its name becomes a
``power`` choice of the job schema (jobs.py) and of the host's ``--power``.
"""

import glob
import os
import re
import shutil
import subprocess

from .errors import AgentFailure

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

