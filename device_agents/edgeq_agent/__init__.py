"""edgeq device agent: a package shipped to a device as one zipapp under its sha256.

It needs only the standard library, numpy and whichever TFLite runtime the device
has (ai_edge_litert, then tflite_runtime, then tensorflow.lite). It never imports
edgeq, so host and device can run different Python versions (3.8 or later on the device).
The host starts it isolated (``python -I edgeq_agent-<sha12>.pyz``, as it starts its own
soak and sampler processes): nothing planted beside it, named by PYTHONPATH or put in the
user's site-packages runs inside it. Inside the package every import is relative, so the
same files run as ``device_agents.edgeq_agent`` on the host and as ``edgeq_agent`` in the archive.

Modules, one concern each:

    protocol    the request loop and its ops (the protocol itself is described there)
    run         the run job; outputs: what a run writes; inputsets, npz: its input set
    infer       batch inference for a search; wire: every rule host and agent share on the wire
    soak        the detached soak; sampling: the sampler process, cooldown; sensors: readers
                and the power backend registry; facts: the device and the agent's process
    jobs        the job schema (JOB_OPTIONS), one line per option
    runtime     the TFLite runtime, interpreters, BatchInvoker
    store       edgeq's records of what it made on the device, and the tidy
    lock        one job per board; files: the one atomic write; errors: AgentFailure, log
    archive     the agent's version, its archive and sha256, and how it starts itself again
    __main__    the entry point, main(argv)

The names below are what the host and its tests import from ``device_agents.edgeq_agent``.
"""

from .archive import AGENT_VERSION, agent_command, agent_sha256, archive_bytes, running_archive
from .errors import AgentFailure, log
from .facts import default_sysfs_root, device_facts, find_sensors, peak_rss_kb, reset_peak_rss, rss_kb
from .files import atomic_write, sha256_file, write_bytes, write_json, write_text
from .infer import InferPair, infer_inputs
from .inputsets import BLOCK_BYTES, InputStream, check_expected_sha, check_inputs
from .jobs import JOB_OPTIONS, JobOption, check_job, job_options
from .lock import LOCK_EVENT_S, LOCK_FILE, LOCK_POLL_S, DeviceLock, launch_soak
from .npz import NpzMember, npz_members, save_npz
from .outputs import NpyRows, RunWriter, prepare_out_dir, write_manifest
from .protocol import LOCK_OPS, Agent
from .run import Progress, Steps, op_profile_status, run_job
from .runtime import RESOLVERS, RUNTIME_MODULES, BatchInvoker, import_runtime, open_interpreter, tensor_summary
from .sampling import (PowerSums, RecordFile, Sampler, SamplerProcess, Sensing, sample_main, sample_record_format,
                       wait_for_cooldown)
from .sensors import (NAN, PMIC_LINE, POWER_BACKENDS, THROTTLE_BITS, THROTTLED_NOW_MASK, HwmonPower, PmicPower,
                      PowerSupplyPower, Thermal, Vcgencmd, cpu_frequencies, decode_throttled, open_power, parse_pmic,
                      power_backend, resolve_vcgencmd, throttled_now)
from .soak import STOP_POLL_S, LatencyHistogram, SoakLog, SoakSensors, soak_main
from .store import (MADE, RECORD_MAX, STORE_FOLDERS, STORE_PROTECT_S, made_by_edgeq, record_made, tidy_store)
from .wire import INFER_DTYPES, INFER_MAX_BYTES, MAX_LINE, decode_array, dtype_name, encode_array
from .wire import encode_array as _wire_array  # the name of the one-file agent's days

__all__ = ["AGENT_VERSION", "agent_command", "agent_sha256", "archive_bytes", "running_archive", "AgentFailure",
           "log", "default_sysfs_root", "device_facts", "find_sensors", "peak_rss_kb", "reset_peak_rss", "rss_kb",
           "atomic_write", "sha256_file", "write_bytes", "write_json", "write_text", "InferPair", "infer_inputs",
           "BLOCK_BYTES", "InputStream", "check_expected_sha", "check_inputs", "JOB_OPTIONS", "JobOption",
           "check_job", "job_options", "LOCK_EVENT_S", "LOCK_FILE", "LOCK_POLL_S", "DeviceLock", "launch_soak",
           "NpzMember", "npz_members", "save_npz", "NpyRows", "RunWriter", "prepare_out_dir", "write_manifest",
           "LOCK_OPS", "Agent", "Progress", "Steps", "op_profile_status", "run_job", "RESOLVERS",
           "RUNTIME_MODULES", "BatchInvoker", "import_runtime", "open_interpreter", "tensor_summary", "PowerSums",
           "RecordFile", "Sampler", "SamplerProcess", "Sensing", "sample_main", "sample_record_format",
           "wait_for_cooldown", "NAN", "PMIC_LINE", "POWER_BACKENDS", "THROTTLE_BITS", "THROTTLED_NOW_MASK",
           "HwmonPower", "PmicPower", "PowerSupplyPower", "Thermal", "Vcgencmd", "cpu_frequencies",
           "decode_throttled", "open_power", "parse_pmic", "power_backend", "resolve_vcgencmd", "throttled_now",
           "STOP_POLL_S", "LatencyHistogram", "SoakLog", "SoakSensors", "soak_main", "MADE", "RECORD_MAX",
           "STORE_FOLDERS", "STORE_PROTECT_S", "made_by_edgeq", "record_made", "tidy_store", "INFER_DTYPES",
           "INFER_MAX_BYTES", "MAX_LINE", "decode_array", "dtype_name", "encode_array", "_wire_array", "main"]


def main(argv):
    """The agent's entry point (``__main__.main``): imported when called, so ``python -m`` finds
    ``__main__`` not yet loaded."""
    from .__main__ import main as entry

    return entry(argv)
