"""A directory laid out like /sys, and a stand-in vcgencmd, for the agent's sensor code.

The agent reads sensors from a sysfs root and a vcgencmd path it is given, so tests run
the real sampling code against these. Values are written atomically (temp file +
rename), so a sampler reading while a test changes a value never sees a torn file.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

# `vcgencmd pmic_read_adc` on a Raspberry Pi 5 (a few rails, same layout as the real output)
PMIC_SAMPLE = """\
 3V7_WL_SW_A current(0)=0.00000000A
   3V3_SYS_A current(1)=0.10000000A
   VDD_CORE_A current(7)=2.00000000A
     DDR_VDD2_A current(8)=0.50000000A
 3V7_WL_SW_V volt(12)=3.70000000V
   3V3_SYS_V volt(13)=3.30000000V
   VDD_CORE_V volt(15)=0.80000000V
     DDR_VDD2_V volt(16)=1.10000000V
     EXT5V_V volt(24)=5.10000000V
"""
PMIC_SAMPLE_W = 0.0 * 3.7 + 0.1 * 3.3 + 2.0 * 0.8 + 0.5 * 1.1  # EXT5V has no current: not counted

VCGENCMD_SCRIPT = """#!/bin/sh
# stand-in vcgencmd: prints the answer file for the command, like the real tool; unknown -> error
answers="${0%/*}/vcgencmd.d"  # shell builtins only: a sampler may run this 20 times a second
case "$1" in
  measure_temp|get_throttled|pmic_read_adc)
    [ -f "$answers/$1" ] || { echo "error=2 error_msg=\\"Command not registered\\""; exit 255; }
    while IFS= read -r line || [ -n "$line" ]; do printf '%s\\n' "$line"; done < "$answers/$1" ;;
  *) echo "error=2 error_msg=\\"Command not registered\\""; exit 255 ;;
esac
"""


def write_atomic(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(f"{value}\n" if not isinstance(value, str) or not value.endswith("\n") else value)
    os.replace(tmp, path)


class FakeSysfs:
    """Build and change a sysfs-shaped tree under root."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def set(self, rel: str, value) -> Path:
        path = self.root / rel
        write_atomic(path, value)
        return path

    def thermal_zone(self, n: int, type_: str, temp_c: float) -> Path:
        self.set(f"class/thermal/thermal_zone{n}/type", type_)
        return self.set_temp(n, temp_c)

    def set_temp(self, n: int, temp_c: float) -> Path:
        return self.set(f"class/thermal/thermal_zone{n}/temp", int(round(temp_c * 1000)))

    def hwmon(self, n: int, name: str, **files) -> Path:
        self.set(f"class/hwmon/hwmon{n}/name", name)
        for key, value in files.items():
            self.set(f"class/hwmon/hwmon{n}/{key}", value)
        return self.root / f"class/hwmon/hwmon{n}"

    def power_supply(self, name: str, type_: str, **files) -> Path:
        self.set(f"class/power_supply/{name}/type", type_)
        for key, value in files.items():
            self.set(f"class/power_supply/{name}/{key}", value)
        return self.root / f"class/power_supply/{name}"

    def cpufreq(self, cpu: int, governor: str, cur_khz: int, min_khz: int, max_khz: int) -> None:
        base = f"devices/system/cpu/cpu{cpu}/cpufreq"
        self.set(f"{base}/scaling_governor", governor)
        self.set(f"{base}/scaling_cur_freq", cur_khz)
        self.set(f"{base}/scaling_min_freq", min_khz)
        self.set(f"{base}/scaling_max_freq", max_khz)


class FakeVcgencmd:
    """An executable `vcgencmd` that answers from files the test writes."""

    def __init__(self, directory: Path):
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "vcgencmd"
        self.path.write_text(VCGENCMD_SCRIPT)
        self.path.chmod(self.path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        self.answers = directory / "vcgencmd.d"
        self.answers.mkdir(exist_ok=True)

    def answer(self, command: str, text: str) -> None:
        write_atomic(self.answers / command, text)

    def temp(self, temp_c: float) -> None:
        self.answer("measure_temp", f"temp={temp_c:.1f}'C")

    def throttled(self, value: int) -> None:
        self.answer("get_throttled", f"throttled={value:#x}")
