"""The fix step of ``edgeq evaluate --fix``: a selectively quantized model when the verdict is not robust.

It runs ``edgeq.repair`` over the suite the evaluation ran, with the evaluation's own resolver,
threads and batch size (a ``FixJob``, built by ``edgeq.evaluate``, which this module never
imports), so the fix's drop of the quantized model is the evaluation's drop of it; writes the
fixed model and its JSON under OUTDIR/models/, and returns the report's ``fix`` section. A fix
that fails or finds no quantized variant is reported there (and as a failed ``fix`` gate when
the user asked for gates), never raised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgeq.analysis.rules import FIX_TARGET
from edgeq.devices.inventory import Device
from edgeq.repair.bench import prepare
from edgeq.repair.device import DeviceMeasurer
from edgeq.repair.fix import GATE_STATUSES, fix_model
from edgeq.repair.measure import HostMeasurer
from edgeq.results import write_json_atomic


@dataclass
class FixJob:
    """What the fix step takes from the evaluation it follows.

    ``model``: the source the evaluation converted (the float rebuild starts from it);
    ``quant_path``/``suite_path``: the quantized model and the suite it was judged on;
    ``policy``: how that quantized model was made, None when the user gave it (``--quant-model``);
    ``target``: ``--fix-target`` (None: the report's degraded threshold); ``device``: the one
    device evaluated, or None (fleet: this host). ``notes``: where the step says what it did.
    """

    model: Path
    quant_path: Path
    suite_path: Path
    outdir: Path
    resolver: str  # the evaluation's own (its job options): the fix is measured as the suite ran
    threads: int
    batch_size: int
    policy: str | None = "dynamic-range"
    target: float | None = None
    device: Device | None = None
    seed: int = 0
    wait_s: float = 0.0
    notes: list[str] = field(default_factory=list)


def run_fix(job: FixJob, report: dict, gates=None) -> dict:
    """``edgeq.repair`` on the suite this evaluation ran: OUTDIR/models/<stem>.fixed.tflite and .fix.json.

    A robust verdict needs nothing; a fix that fails (or cannot reach the target) is reported
    here and, only when the user asked for gates, as a failed ``fix`` gate (added to ``report``)."""
    thresholds = report.get("thresholds") or {}
    target = job.target if job.target is not None else float(thresholds.get("degraded", FIX_TARGET))
    why_target = "--fix-target" if job.target is not None else "the degraded threshold"
    verdict = report.get("verdict")
    if verdict not in ("degraded", "catastrophic"):
        return {"status": "nothing-to-fix", "target_drop": target,
                "reason": f"the verdict is {verdict}: no cell reaches the degraded threshold"}
    if job.policy is not None and job.policy != "dynamic-range":
        job.notes.append(f"fix: not run: it keeps ops of a dynamic-range model float, the policy was {job.policy}")
        return {"status": "not-applicable", "target_drop": target, "verdict_before": verdict,
                "reason": f"--fix repairs dynamic-range models; this one was converted with --policy {job.policy}"}
    device = job.device
    remote = device is not None and device.transport != "local"
    where = f"on {device.name}, the device evaluated" if remote else "on this host (ai_edge_litert"
    job.notes.append(f"fix: drop target {target:g} ({why_target}) on the field conditions, searched and verified "
                     f"{where}{'' if remote else ')'} with resolver {job.resolver}, {job.threads} thread(s), over "
                     f"the suite {job.suite_path.name}; variants tried in {job.outdir / 'repair'}")
    section = _fix(job, target, _input_kinds(report), device if remote else None)
    section.update(target_source=why_target, verdict_before=verdict)
    if gates and section["status"] in (*GATE_STATUSES, "failed"):
        report.setdefault("gates", []).append(
            {"gate": "fix", "limit": target, "observed": section["status"], "where": section.get("reason"),
             "failed": True})
    return section


def _input_kinds(report: dict) -> list[str] | None:
    """The input kinds the evaluation built its suite for (``inputs.kinds``: array → kind), so the fix
    gives each condition the role the verdict gave it; None: read them from the sample shapes."""
    kinds = (report.get("inputs") or {}).get("kinds") or {}
    return sorted(set(kinds.values())) if isinstance(kinds, dict) and kinds else None


def _measurer(job: FixJob, device: Device | None, work: Path, announce):
    """Whole models run where the evaluation ran: the device (its agent, its kernels) or this host."""
    if device is None:
        return HostMeasurer(resolver=job.resolver, threads=job.threads, batch=job.batch_size)
    return DeviceMeasurer(device, work / "device", wait_s=job.wait_s, announce=announce, threads=job.threads,
                          resolver=job.resolver)


def _fix(job: FixJob, target: float, kinds: list[str] | None = None, device: Device | None = None) -> dict:
    models = job.outdir / "models"
    models.mkdir(parents=True, exist_ok=True)
    steps: list[str] = []
    work = job.outdir / "repair"  # the float rebuild and the variants tried: kept, the fix's JSON names them
    try:
        with _measurer(job, device, work, steps.append) as measurer:
            bench = prepare(job.model, work, inputs=job.suite_path, quantized=job.quant_path, seed=job.seed,
                            announce=steps.append, device=measurer, kinds=kinds)
            result = fix_model(bench, models, target_drop=target, announce=steps.append)
    except Exception as exc:  # a failed fix is reported, the evaluation stands
        job.notes.append(f"fix failed: {type(exc).__name__}: {exc}")
        return {"status": "failed", "target_drop": target, "reason": f"{type(exc).__name__}: {exc}",
                "steps": steps}
    section = dict(result.report)
    if section["status"] != "nothing-to-fix":
        write_json_atomic(result.json_path, section)
        section["fix_json"] = str(result.json_path)
    section["steps"] = steps
    dropped = _drop_unnamed_variants(work, section)
    if dropped:
        job.notes.append(f"fix: {dropped} tried variant(s) deleted from {work}; the models the fix names stay")
    if section["status"] == "fixed":
        job.notes.append(f"fix: {len(section.get('recipe') or [])} op(s) kept float → {section['fixed']}")
    else:
        job.notes.append(f"fix: {section['status']}: {section.get('reason') or 'the fixed model failed verification'}")
    return section


def _drop_unnamed_variants(work: Path, section: dict) -> int:
    """The selective rebuilds tried on the way (``*.keep-*.tflite``, ``*.candidate.tflite``) that the fix
    section does not name: the fixed model is copied out, so they are only disk space."""
    named: set[str] = set()

    def collect(value):
        if isinstance(value, dict):
            for v in value.values():
                collect(v)
        elif isinstance(value, list):
            for v in value:
                collect(v)
        elif isinstance(value, str):
            named.add(value)

    collect(section)
    dropped = 0
    for path in Path(work).glob("*.tflite"):
        tried = ".keep-" in path.name or path.name.endswith(".candidate.tflite")
        if tried and str(path) not in named:
            path.unlink(missing_ok=True)
            dropped += 1
    return dropped
