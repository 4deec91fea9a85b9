"""The run job: time every invocation of a model over an input set and write what it gave.

A run writes its files into job["out"] and writes manifest.json last, with the
sha256 of every file, so a run that was cut short is never mistaken for a whole one.

Run job options beyond model/inputs/threads/resolver/batch_size/warmup/repeats
(the schema, with limits and defaults, is jobs.JOB_OPTIONS):

    min_duration_s      0      timed passes repeat until `repeats` passes AND this long
    power               None   None: no sampling (the files of older agents only);
                               "none" | a POWER_BACKENDS name (hwmon, ...): a sampler
                               process records power (NaN for "none"), temperature and
                               throttle bits, and invoke start times are kept
    power_sensor        None   which hwmon chip (name or hwmonN) / power supply to read
    sample_hz           20     sampler rate; the achieved rate is in meta["sampling"]
    idle_s              1.0 with a power backend, else 0: idle baseline before timing
    cooldown_c          None   wait until the temperature is <= this before measuring
    cooldown_timeout_s  300    ... but no longer than this (meta["cooldown"] says which)
    sysfs_root          EDGEQ_SYSFS_ROOT, else /sys
    vcgencmd            the vcgencmd on PATH; "" for none
    rows_file           None   a pushed int64 .npy of row indices (sorted, unique, in range;
                               job["rows_sha256"] checks it): run only those rows of the set

Files: outputs/output_<k>.npy, latency_ns.npy (passes x invocations), batch_sizes.npy,
meta.json, manifest.json; with sampling also invoke_start_ns.npy (perf_counter_ns,
shaped like latency_ns) and sensors.npz (t_ns, power_w, temp_c, throttled, zone_temp_c);
with rows_file also rows.npy (the set's row of each sample) and meta["rows_file"]
(count, sha256, the set's row count). Samples are then the named rows, in their order.
Inputs are read a block of rows at a time and outputs written the same way, so the
agent's memory does not grow with the input set; meta["peak_rss_kb"] records its peak.
"""

import errno
import gc
import os
import time

from .errors import AgentFailure
from .facts import device_facts, peak_rss_kb, reset_peak_rss
from .inputsets import InputStream, check_expected_sha, file_sha256, load_rows
from .jobs import check_job
from .outputs import RunWriter, prepare_out_dir
from .runtime import BatchInvoker, open_interpreter, tensor_summary
from .sampling import Sensing, wait_for_cooldown
from .sensors import cpu_frequencies


def op_profile_status(runtime):
    """Per-op timings: none of the Python runtimes exposes TFLite's profiler."""
    return {"available": False, "runtime": "%s %s" % (runtime[0], runtime[1]),
            "why": "the Python Interpreter of ai_edge_litert / tflite_runtime / tf.lite has no profiler API "
                   "(no per-op timing call; experimental_force_delegate_node_profiling only affects a profiler "
                   "installed from C++); use the benchmark_model tool with --enable_op_profiling=true"}


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
    check_expected_sha(job.get("model"), job.get("model_sha256"))
    check_expected_sha(job.get("inputs"), job.get("inputs_sha256"))
    rows = _job_rows(job)  # a bad rows file is refused before any folder is made or model loaded
    prepare_out_dir(out_dir)
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
    inputs = InputStream(job["inputs"], names, in_details, batch, rows, "rows file %s" % job.get("rows_file"))
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
        "model_sha256": file_sha256(job["model"]),
        "inputs_sha256": file_sha256(job["inputs"]),
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
    if rows is not None:
        meta["rows_file"] = {"sha256": file_sha256(job["rows_file"]), "count": count, "of": inputs.set_count}
    return writer.finish(meta, sampler.arrays() if sampler is not None else None, rows)


def _job_rows(job):
    """The rows a job names (rows_file, checked against rows_sha256 like the model and inputs), or None."""
    if job.get("rows_file") is None:
        return None
    check_expected_sha(job["rows_file"], job.get("rows_sha256"))
    return load_rows(job["rows_file"])


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
