"""Facts about the device and the agent's own process: what hello answers and a run's meta records."""

import glob
import os
import platform
import shutil
import sys

from .archive import AGENT_VERSION, agent_sha256
from .errors import AgentFailure
from .sensors import _natural


def device_facts(runtime, sysfs_root=None, vcgencmd=None):
    try:
        import numpy as np
    except ImportError:
        raise AgentFailure("NoNumpy", "numpy is not installed for %s" % sys.executable)

    facts = {
        "agent_version": AGENT_VERSION,
        "agent_sha256": agent_sha256(),
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
