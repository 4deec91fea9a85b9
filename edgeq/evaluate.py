"""``edgeq evaluate``: the main job, from a model and data to a verdict.

convert (if needed) → risky suite → float and quantized runs on the device →
compare → report.json + report.html. Each phase's wall time goes into the report.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from edgeq.analysis.compare import compare_outputs, compare_runs, run_outputs, worst_value
from edgeq.analysis.field import search_findings
from edgeq.analysis.gates import evaluate_gates, parse_gates
from edgeq.analysis.plan import OutputSpec, check_model_labels
from device_agents.edgeq_agent.jobs import job_options
from edgeq.analysis.rules import MIN_N
from edgeq.devices.fleet import FleetResult, run_fleet, safe_dirname
from edgeq.devices.inventory import load_inventory, select_devices
from edgeq.devices.run import RunSpec, run_on_device
from edgeq.files import ensure_writable_dir, sha256_file
from edgeq.errors import EXIT_GATE, ConfigError
from edgeq.inputs.inputset import InputSet, input_specs, load_inputset, match_model_inputs
from edgeq.inputs.risky import describe_categories
from edgeq.inputs.risky.lazy import LazySuite
from edgeq.inputs.search.settings import DISTANCE
from edgeq.inputs.search.steps import SearchJob, run_search, run_worst
from edgeq.models.convert import convert_model, source_kind
from edgeq.models.modelinfo import read_model
from edgeq.repair.step import FixJob, run_fix
from edgeq.reports.report import build_report, measurements, write_report
from edgeq.results import latency_stats, strict_json, write_json_atomic
from edgeq.rows import run_rows, take_rows
from edgeq.sampling import SampledRuns, Sampling, adaptive_runs, fixed_runs, fixed_section
from edgeq.suites import SUITE_FILE, join_round_inputs, planned_suite, write_whole
from edgeq.store.bisections import BisectionCache
from edgeq.store.run_cache import RunCache, cache_enabled

EXAMPLES = Path(__file__).resolve().parent / "examples"
EXAMPLE_MODEL = EXAMPLES / "digits_mlp.keras"
EXAMPLE_DATA = EXAMPLES / "digits.npz"

JOB_DEFAULTS = {o.name: o.default_for("run") for o in job_options("run")}


@dataclass
class EvaluateOptions:
    model: Path | None = None
    data: Path | None = None
    quant_model: Path | None = None
    device: str = "local"
    inventory: Path | None = None
    outdir: Path = Path("edgeq-out")
    policy: str = "dynamic-range"
    seed: int = 0
    max_per_category: int | None = 500
    range_mode: str = "auto"
    input_kinds: dict | str | None = None  # what the input arrays are, when the shape is not enough
    fail_on: str | None = None
    tag: str | None = None
    # the run job's options as the user gave them (threads, resolver, sensors…: the agent's JOB_OPTIONS);
    # the rest take the table's defaults, so a new option needs no field here
    job: dict = field(default_factory=dict)
    sampling: str = "adaptive"  # rounds until each cell is decided (anytime-valid intervals), or "fixed": every row
    until: str = "cells"  # adaptive: stop when every cell is decided ("cells") or once the verdict is firm ("verdict")
    budget_s: float | None = None  # adaptive: device inference seconds at most
    float_cache: bool = True  # reuse the float model's outputs from the host's cache (EDGEQ_FLOAT_CACHE=off: never)
    output_spec: OutputSpec | None = None  # what the user said about output kinds, labels, verdict outputs
    min_n: int = MIN_N  # cells with fewer trials are flagged
    wait_s: float = 0.0  # how long to queue for a device another job holds
    verbose: bool = False  # show the converter's own output instead of logging it beside the models
    search_budget: int | None = None  # queries for the disagreement search after the suite (None: no search)
    search_distance: float = DISTANCE  # L∞ bound of a found input from its seed, a fraction of the data range
    worst_budget: int | None = None  # queries for the worst-shift search (None: none)
    fix: bool = False  # localize and fix when the verdict is degraded or catastrophic
    fix_target: float | None = None  # the fix's drop target (None: the degraded threshold)
    interrupted: bool = False  # Ctrl-C during a search: the reports are written, then the job ends
    timings: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)  # every automatic choice, in words: printed and stored

    def job_value(self, name: str):
        """A run job option: the user's value, else the table's default for a run."""
        value = self.job.get(name)
        return value if value is not None else JOB_DEFAULTS[name]

    @property
    def threads(self) -> int:
        return self.job_value("threads")

    @property
    def resolver(self) -> str:
        return self.job_value("resolver")

    @property
    def batch_size(self) -> int:
        return self.job_value("batch_size")


@contextlib.contextmanager
def _phase(opts: EvaluateOptions, name: str, announce: Callable[[str], None] | None):
    if announce:
        announce(name)
    start = time.perf_counter()
    yield
    opts.timings[name] = round(time.perf_counter() - start, 3)


def resolve_inputs(opts: EvaluateOptions) -> None:
    """No model means the built-in example; a model needs its data."""
    if opts.model is None:
        if opts.data is not None:
            raise ConfigError("--data was given without a model")
        opts.model, opts.data = EXAMPLE_MODEL, EXAMPLE_DATA
    elif opts.data is None:
        raise ConfigError(f"{opts.model}: --data NPZ is required (the data to build risky inputs from)")
    opts.model, opts.data = Path(opts.model), Path(opts.data)


def prepare_models(opts: EvaluateOptions) -> tuple[Path, Path, dict | None]:
    """Float and quantized .tflite for the run; converts unless both were given."""
    if opts.quant_model is not None:
        if source_kind(opts.model) != "tflite":
            raise ConfigError("--quant-model needs the float model as a .tflite file")
        return opts.model, Path(opts.quant_model), None
    conversion = convert_model(opts.model, opts.outdir / "models", policy=opts.policy,
                               show_tool_output=opts.verbose)
    opts.notes.append(f"converted: {conversion.summary}")
    return conversion.float_path, conversion.quant_path, conversion.card


@dataclass
class Evaluation:
    """What evaluate produced: the top report and, per device, a report or an error."""

    report: dict | None
    fleet: FleetResult
    reports: dict = field(default_factory=dict)  # device name → that device's report

    @property
    def exit_code(self) -> int:
        if self.fleet.failed:
            return self.fleet.exit_code
        return EXIT_GATE if any(g["failed"] for g in (self.report or {}).get("gates", [])) else 0


def evaluate(opts: EvaluateOptions, announce=None, progress=None) -> Evaluation:
    """Run the whole job on one device or a fleet; reports are written under OUTDIR.

    With one device, OUTDIR/report.json is that device's report (and its error is
    raised). With several, each device gets OUTDIR/devices/<name>/ and OUTDIR/report.json
    is the worst device's report plus a ``fleet`` section.
    """
    resolve_inputs(opts)
    gates = parse_gates(opts.fail_on)
    inventory = load_inventory(opts.inventory)
    devices = select_devices(opts.device, inventory, tag=opts.tag)
    ensure_writable_dir(opts.outdir)
    data = load_inputset(opts.data, what="data")
    with _phase(opts, "convert", announce):
        float_path, quant_path, card = prepare_models(opts)
    info = read_model(float_path)
    match_model_inputs(data, input_specs(info))
    check_outputs_before_running(opts, info, data)
    sampling = Sampling(opts.sampling, opts.until, opts.budget_s, opts.seed)
    suite_path = opts.outdir / SUITE_FILE
    with _phase(opts, "risky inputs", announce):
        bisections = BisectionCache(warn=opts.notes.append) if cache_enabled(opts.float_cache) else None
        suite = planned_suite(opts, data, float_path, lazy=sampling.adaptive, bisections=bisections)
        if sampling.adaptive:
            opts.notes.append(f"risky suite built lazily: {suite.n} rows planned, each made only when a round "
                              "runs it")
        else:
            write_whole(suite, suite_path)
    lazy = suite if sampling.adaptive else None
    common = dict(inputs=suite_path, **opts.job)
    specs = [RunSpec(model=float_path, label="float", **common), RunSpec(model=quant_path, label="quant", **common)]
    range_modes = data.extra.get("range_modes") or {}
    for name, (mode, reason) in range_modes.items():
        opts.notes.append(f"value ranges of {name!r}: {'per feature' if mode == 'channel' else mode} ({reason})")
    single = len(devices) == 1
    judge = dict(spec=opts.output_spec, model_info=info, min_n=opts.min_n, roles=data.extra.get("suite_roles"),
                 boundary=data.extra.get("boundary"))
    cache = RunCache() if cache_enabled(opts.float_cache) else None
    with _phase(opts, "device runs", announce):
        fleet = run_fleet(devices, lambda d: _sampled_runs(d, specs, _device_dir(opts, d, single), progress, single,
                                                           opts.wait_s, sampling, judge, cache, suite))
        if lazy is not None:
            join_round_inputs(fleet.succeeded, suite_path)
        host = _host_runs(opts, devices, fleet, inventory, specs, progress)
    extra = _provenance(opts, float_path, quant_path, card, suite_path, range_modes)
    extra["inputs"].update(kinds=data.extra.get("input_kinds"), cell_roles=data.extra.get("suite_roles"))
    extra["inputs"].update(suite_sha256=suite.identity, suite_rows=suite.n)
    if data.extra.get("bisections") is not None:
        extra["inputs"]["boundary_bisections"] = data.extra["bisections"]
    if lazy is not None:
        extra["inputs"]["built"] = "lazily: the rows run only, each tagged with its suite_row"
    with _phase(opts, "compare", announce):
        reports = {name: _device_report(runs, host, extra, gates, judge) for name, runs in fleet.succeeded.items()}
    after = dict(float_path=float_path, quant_path=quant_path, suite_path=suite_path, gates=gates,
                 announce=announce, progress=progress)
    if single and devices[0].name in reports:
        _after_verdict(opts, reports[devices[0].name], device=devices[0], **after)
    for device in devices:
        if device.name in reports:
            _write(reports[device.name], _device_dir(opts, device, single), fleet.succeeded[device.name], opts)
    if single and fleet.failed:
        raise next(iter(fleet.failed.values()))
    top = reports[devices[0].name] if single else _fleet_report(reports, fleet, opts)
    if top is not None and not single and top.get("verdict") is not None:
        _after_verdict(opts, top, device=None, **after)
    if top is not None and not single:
        write_json_atomic(opts.outdir / "report.json", top)
    if opts.interrupted:
        raise KeyboardInterrupt
    return Evaluation(top, fleet, reports)


def _after_verdict(opts: EvaluateOptions, report: dict, *, device, float_path: Path, quant_path: Path,
                   suite_path: Path, gates, announce, progress) -> None:
    """``--search``, ``--worst`` and ``--fix``, after the suite has decided the verdict: their
    sections go into ``report`` (the verdict itself is not changed by them). The steps get what they
    need as a ``SearchJob`` / ``FixJob`` and write their notes into ``opts.notes``."""
    if not (opts.search_budget or opts.worst_budget or opts.fix):
        return
    before = len(opts.notes)
    job = SearchJob(float_path=float_path, quant_path=quant_path, data=opts.data, outdir=opts.outdir, device=device,
                    inventory=opts.inventory, threads=opts.threads, resolver=opts.resolver, wait_s=opts.wait_s,
                    seed=opts.seed, notes=opts.notes)
    steps = (("search", opts.search_budget,
              lambda: run_search(job, report, budget=opts.search_budget, distance=opts.search_distance,
                                 progress=progress)),
             ("worst", opts.worst_budget, lambda: run_worst(job, report, budget=opts.worst_budget, progress=progress)))
    for key, wanted, run in steps:
        if wanted and not opts.interrupted:
            with _phase(opts, key, announce):
                report[key] = _kept_apart(opts, key, run)
    if report.get("stress") is not None:
        report["stress"]["findings"] = list(report["stress"].get("findings") or []) + search_findings(report)
    if opts.fix and not opts.interrupted:
        fix = FixJob(model=opts.model, quant_path=quant_path, suite_path=suite_path, outdir=opts.outdir,
                     policy=None if opts.quant_model is not None else opts.policy, target=opts.fix_target,
                     device=device, seed=opts.seed, resolver=opts.resolver, threads=opts.threads,
                     batch_size=opts.batch_size, wait_s=opts.wait_s, notes=opts.notes)
        with _phase(opts, "fix", announce):
            report["fix"] = run_fix(fix, report, gates)
    report["notes"] = list(report.get("notes") or []) + opts.notes[before:]
    report.update(strict_json(report))


def _kept_apart(opts: EvaluateOptions, key: str, run) -> dict:
    """A search that fails (a device lost, a model it cannot handle) is reported in its section; the suite's
    report is still written. Ctrl-C keeps what was found, marked incomplete, and ends the job after the write."""
    try:
        section = run()
    except Exception as exc:
        opts.notes.append(f"{key} failed: {type(exc).__name__}: {exc}")
        return {"status": "failed", "complete": False, "error": f"{type(exc).__name__}: {exc}"}
    if section.get("stopped") == "interrupted" and section.pop("_keyboard", False):
        opts.interrupted = True
        opts.notes.append(f"{key} interrupted (Ctrl-C): what it found so far is kept, marked incomplete")
    return section


def _device_dir(opts: EvaluateOptions, device, single: bool) -> Path:
    return opts.outdir if single else opts.outdir / "devices" / safe_dirname(device.name)


def _labelled(progress, device, single: bool):
    def labelled(label, done, total):
        if progress:
            progress(label if single else f"{device.name} {label}", done, total)
    return labelled


def _device_runs(device, specs, outdir: Path, progress, single: bool, wait_s: float = 0.0):
    return run_on_device(device, specs, [outdir / "runs" / s.label for s in specs], _labelled(progress, device, single),
                         wait_s=wait_s)


def _sampled_runs(device, specs, outdir: Path, progress, single: bool, wait_s: float, sampling: Sampling,
                  judge: dict, cache: RunCache | None, suite: LazySuite) -> SampledRuns:
    """Every row once (``fixed``: the whole suite is in ``specs``' input set), or rounds until the cells are
    decided (``adaptive``: the suite built lazily); with ``cache``, the float outputs it holds for this device
    are reused (a copy of it per device: each report its own warnings). Runs name the suite by its identity."""
    cache = cache.clone() if cache is not None else None
    if not sampling.adaptive:
        if cache is not None:
            return fixed_runs(device, specs, outdir, sampling, cache, _labelled(progress, device, single), wait_s)
        runs = _device_runs(device, specs, outdir, progress, single, wait_s)
        return SampledRuns(runs, fixed_section(sampling, runs[0].n))
    return adaptive_runs(device, specs, outdir, sampling, judge, _labelled(progress, device, single), wait_s, cache,
                         suite, specs[0].inputs)


def _host_runs(opts, devices, fleet, inventory, specs, progress):
    """The same models on this host, so device-kernel differences show apart from quantization: every row of the
    suite file (with adaptive sampling, the rows any device ran), each run named by its suite rows."""
    if all(d.transport == "local" for d in devices) or not fleet.succeeded:
        return None
    plain = [dataclasses.replace(s, power=None, cooldown_c=None, min_duration_s=0.0) for s in specs]
    return _device_runs(inventory["local"], plain, opts.outdir / "host", progress, single=False, wait_s=opts.wait_s)


def check_outputs_before_running(opts: EvaluateOptions, info, data: InputSet) -> None:
    """Judge the output spec and the labels against the model before any device time is spent."""
    check_model_labels(info, data.y, str(opts.data), opts.output_spec)


def _device_report(runs, host, extra: dict, gates, judge: dict) -> dict:
    ref, cand = runs
    section = getattr(runs, "section", None) or {}
    interval = "anytime" if section.get("sampling") == "adaptive" else "wilson"
    report = build_report(compare_runs(ref, cand, **judge, interval=interval), ref, cand, extra)
    if section:
        report["sampling"] = section
        report["interval_method"] = section.get("interval_method", "wilson")
    if getattr(runs, "measured", None):
        report.update(measurements(*runs.measured))
    _float_reuse(report, runs)
    report["inputs"] = dict(report["inputs"], n=report["overall"]["n"])
    if host is not None:
        report["device_vs_host"] = device_vs_host(host, runs, report["deciding_output"], judge)
    report["gates"] = evaluate_gates(report, gates)
    return report


REUSED_NOTE = ("float outputs: {rows:,} of {of:,} rows reused from the cache (same float model, suite, device, "
               "runtime, resolver)")


def _float_reuse(report: dict, runs) -> None:
    """``float_reused`` (null when no float row came from the cache), its note, the cache's warnings, and the
    float latency from what ran now: the cached rows' latencies were timed by another evaluation (when no
    float row ran, the cached run's latency stays, and the sampling section says ``float_latency: cached``)."""
    reused = getattr(runs, "float_reused", None)
    report["float_reused"] = reused
    warnings = list(getattr(runs, "warnings", None) or [])
    if warnings:
        report["warnings"] = list(report.get("warnings") or []) + warnings
    if not reused:
        return
    report["notes"] = list(report.get("notes") or []) + [REUSED_NOTE.format(**reused)]
    ran = getattr(runs, "float_ran", None)
    if ran:
        stats = latency_stats(np.concatenate([r.latency_ms_per_sample() for r in ran]))
        report["latency_ms"] = dict(report["latency_ms"], float=strict_json(stats))


def device_vs_host(host, runs, deciding: str, judge: dict) -> dict:
    """The same model on this host vs on the device, judged output by output like float vs quant."""
    found = {"host": host[0].meta["device"].get("arch")}
    for which, h, d in (("float", host[0], runs[0]), ("quant", host[1], runs[1])):
        outputs = run_outputs(h, judge.get("model_info"))
        tags = {k: v for k, v in d.samples.items() if k != "y"}
        mine = np.searchsorted(run_rows(h), run_rows(d))  # the host ran every row of any device: this device's
        same = len(mine) == h.n  # every host row (a fixed-n run): the outputs stay on disk
        sections = compare_outputs(h.outputs if same else [take_rows(o, mine) for o in h.outputs], d.outputs, tags,
                                   outputs=outputs,
                                   spec=judge.get("spec"),
                                   min_n=judge.get("min_n", MIN_N))["outputs"]
        pick = lambda m: {k: m.get(k) for k in ("n", "agreement", "flip_rate", "sqnr_db", "max_abs_error")}
        found[which] = dict(pick(sections.get(deciding, next(iter(sections.values())))["overall"]),
                            outputs={name: dict(pick(s["overall"]), kind=s["kind"]) for name, s in sections.items()})
    return found


def _write(report: dict, outdir: Path, runs, opts: EvaluateOptions) -> None:
    report["timings_s"] = dict(opts.timings)
    measured = getattr(runs, "measured", None)
    write_report(outdir, report, {"float": runs[0], "quant": runs[1]},
                 {"float": measured[0], "quant": measured[1]} if measured else None)


def _fleet_report(reports: dict, fleet, opts: EvaluateOptions) -> dict | None:
    """The worst device's report (so contract readers see the worst case) plus every device."""
    summary = {name: {"verdict": r["verdict"], "worst_category": r["worst_category"],
                      "worst_severity": r.get("worst_severity"), "deciding_output": r.get("deciding_output"),
                      "worst_value": worst_value(r),
                      "latency_ms": r["latency_ms"], "device": r["device"],
                      "report": str(opts.outdir / "devices" / safe_dirname(name) / "report.json")}
               for name, r in reports.items()}
    failed = {name: {"error": str(err), "exit_code": err.exit_code} for name, err in fleet.failed.items()}
    if not reports:
        return {"verdict": None, "fleet": {"devices": summary, "failed": failed}}
    worst = max(reports, key=lambda n: (VERDICT_RANK[reports[n]["verdict"]], summary[n]["worst_value"]))
    top = dict(reports[worst])
    top["fleet"] = {"worst_device": worst, "devices": summary, "failed": failed}
    top["gates"] = [dict(g, device=name) for name, r in reports.items() for g in r["gates"]]
    return top


VERDICT_RANK = {"robust": 0, "degraded": 1, "catastrophic": 2}


def _provenance(opts, float_path: Path, quant_path: Path, card: dict | None, suite_path: Path,
                range_modes: dict) -> dict:
    model = {"float": {"path": str(float_path), "sha256": sha256_file(float_path), "size": float_path.stat().st_size},
             "quant": {"path": str(quant_path), "sha256": sha256_file(quant_path), "size": quant_path.stat().st_size},
             "policy": opts.policy if card else "given", "source": str(opts.model)}
    if card:
        model["weights_quantized"] = f"{card['weights']['quantized']} of {card['weights']['total']}"
        source = card.get("source") or {}
        model.update({k: source[k] for k in ("weights", "float_reference", "op_codes") if source.get(k)})
        model["kept_float"] = [{k: w.get(k) for k in ("name", "op", "cause")}
                               for w in (card["weights"].get("kept_float") or [])]
    modes = {name: {"mode": mode, "reason": reason} for name, (mode, reason) in range_modes.items()}
    return {"model": model, "category_descriptions": describe_categories(), "notes": list(opts.notes),
            "inputs": {"path": str(suite_path), "sha256": sha256_file(suite_path), "data": str(opts.data),
                       "seed": opts.seed, "max_per_category": opts.max_per_category, "range_modes": modes}}
