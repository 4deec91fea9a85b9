"""The job schema: every run, soak and infer option, once, one line each.

The host imports JOB_OPTIONS to build its command-line options and RunSpec and to check a
job before sending it; the agent checks what arrives with the same table (``check_job``). A
default may differ per job kind (a soak samples power at 2 Hz for hours, a run at 20 Hz).
Adding an option is one ``JobOption(...)`` line: name, type, default, limits, choices, flag, help
and its group (``timing``: how inferences are timed; ``measure``: sensors, idle and cooldown), from
which every host command that takes that group offers it; the job then carries it to where it is used.
"""

import math

from .errors import AgentFailure
from .runtime import RESOLVERS
from .sensors import POWER_BACKENDS


class JobOption(object):
    """One option of a run or soak job: type, default, limits, choices, unit and help."""

    def __init__(self, name, kind, default=None, flag=None, low=None, above=None, high=None, choices=None,
                 unit="", help="", jobs=("run", "soak"), noun=None, group="measure"):
        self.name, self.kind, self.default, self.flag, self.noun = name, kind, default, flag, noun or name
        self.low, self.above, self.high, self.choices = low, above, high, choices
        self.unit, self.help, self.jobs, self.group = unit, help, jobs, group

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
    JobOption("threads", int, 1, "--threads", low=1, high=256, jobs=("run", "soak", "infer"), group="timing",
              help="Interpreter threads (absurd counts crash the runtime with SIGSEGV)."),
    JobOption("resolver", str, "AUTO", "--resolver", choices=RESOLVERS, jobs=("run", "soak", "infer"),
              group="timing", help="Op resolver (AUTO uses XNNPACK)."),
    JobOption("warmup", int, 10, "--warmup", low=0, help="Untimed invocations before timing.", group="timing"),
    JobOption("repeats", int, 1, "--repeats", low=1, help="Timed passes over the set.", jobs=("run",), group="timing"),
    JobOption("batch_size", int, 1, "--batch-size", low=1, help="Samples per invoke().", jobs=("run",), group="timing"),
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
    JobOption("rows_file", str, None, jobs=("run",), group="rows", help="A .npy of sorted, unique row indices: run "
              "only those rows of the input set (on the device: the pushed copy; on the host: a file to push)."),
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
