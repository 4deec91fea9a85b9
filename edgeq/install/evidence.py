"""The evidence a deploy needs: an evaluation of exactly this model whose verdict passes, per device class.

A model is deployable to a device when some ``edgeq evaluate`` report names it as its quantized
model (sha256, not a file name: the file shipped must be the file evaluated), its verdict passes
``--require`` and it ran on the same device class — the CPU architecture and the TFLite runtime
with its version — as the device about to receive it: quantized kernels differ between runtimes
and architectures, so a verdict measured on an x86 host says little about an aarch64 board.

Reports come from ``--report DIR|FILE`` (an evaluate OUTDIR, its ``report.json``, or a fleet's,
whose per-device reports sit in ``OUTDIR/devices/<name>/``), else from the history database,
whose evaluate rows name the model, the class and the folder they were written to.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from edgeq.errors import ConfigError, EdgeqError

# --require: which verdicts each level accepts (catastrophic never passes; --force skips the gate)
PASSING = {"robust": ("robust",), "degraded": ("robust", "degraded")}
REPORT_FILE = "report.json"


class NoEvidence(EdgeqError):
    """The model has no passing evaluation for a device class (exit 2: fix the input, not the lab)."""


@dataclass(frozen=True)
class Evidence:
    """One evaluation of the model: where it is, what it said, on which device class."""

    report: Path | None  # the report.json (None: known only from the history database)
    model_sha256: str
    verdict: str
    confidence: str | None
    device: str | None
    arch: str | None
    runtime: str | None  # "ai_edge_litert 2.3.0", as reports write it
    created: str | None = None

    @property
    def device_class(self) -> tuple[str | None, str | None]:
        return self.arch, self.runtime

    @property
    def folder(self) -> Path | None:
        """The evaluation's folder (its runs/ and inputs/ hold what the smoke check compares with)."""
        return self.report.parent if self.report is not None else None

    def as_dict(self) -> dict:
        return {"report": str(self.report) if self.report else None, "verdict": self.verdict,
                "confidence": self.confidence, "device": self.device, "arch": self.arch, "runtime": self.runtime,
                "created": self.created}


def device_class_of(facts: dict) -> tuple[str | None, str | None]:
    """The class of a device from its agent's hello, spelled as reports spell it."""
    runtime = facts.get("runtime") or {}
    return facts.get("arch"), (f"{runtime.get('name')} {runtime.get('version')}" if runtime else None)


def from_reports(path: Path, model_sha256: str) -> list[Evidence]:
    """Every evaluation of the model in ``--report PATH`` (a fleet's top level and its devices)."""
    path = Path(path)
    report_file = path / REPORT_FILE if path.is_dir() else path
    if not report_file.is_file():
        raise ConfigError(f"--report {path}: no {REPORT_FILE} there (give an evaluate OUTDIR or its report.json)")
    files = [report_file] + sorted(report_file.parent.glob(f"devices/*/{REPORT_FILE}"))
    found = [e for e in (_evidence(f, _read(f)) for f in files) if e.model_sha256 == model_sha256]
    return found


def from_history(db, model_sha256: str) -> list[Evidence]:
    """Evaluations of the model recorded in the history database (``Store``), newest last."""
    found = []
    for record in db.query(kind="evaluate"):
        if record.quant_sha256 != model_sha256:
            continue
        report = _report_in(Path(record.location), record.device) if record.location else None
        found.append(Evidence(report, model_sha256, str(record.verdict), None, record.device, record.arch,
                              record.runtime, created=str(record.created)))
    return found


def choose(evidence: list[Evidence], device_class: tuple, require: str) -> tuple[Evidence | None, str]:
    """The newest passing evaluation for the class, or None and one sentence saying what is missing."""
    same_class = [e for e in evidence if e.device_class == device_class]
    passing = [e for e in same_class if e.verdict in PASSING[require]]
    if passing:
        return passing[-1], ""
    arch, runtime = device_class
    if not evidence:
        return None, "no evaluate report names it as its quantized model"
    if not same_class:
        seen = ", ".join(sorted({f"{e.arch} / {e.runtime}" for e in evidence}))
        return None, f"no evaluation on {arch} / {runtime} (evaluated on: {seen})"
    verdicts = ", ".join(sorted({e.verdict for e in same_class}))
    return None, f"its evaluation on {arch} / {runtime} says {verdicts}; --require {require} needs " \
                 f"{' or '.join(PASSING[require])}"


def _report_in(folder: Path, device: str | None) -> Path | None:
    """The report of ``device`` under an evaluate OUTDIR (a fleet keeps one per device)."""
    candidates = [folder / REPORT_FILE] + sorted(folder.glob(f"devices/*/{REPORT_FILE}"))
    for candidate in candidates:
        if candidate.is_file():
            try:
                if (_read(candidate).get("device") or {}).get("name") == device:
                    return candidate
            except ConfigError:
                continue
    return None


def _read(path: Path) -> dict:
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable report ({exc})") from None
    if not isinstance(report, dict):
        raise ConfigError(f"{path}: not an edgeq report (a JSON object was expected)")
    return report


def _evidence(path: Path, report: dict) -> Evidence:
    model, device = report.get("model") or {}, report.get("device") or {}
    return Evidence(path, str((model.get("quant") or {}).get("sha256")), str(report.get("verdict")),
                    report.get("verdict_confidence"), device.get("name"), device.get("arch"), device.get("runtime"),
                    created=report.get("created"))


__all__ = ["Evidence", "NoEvidence", "PASSING", "choose", "device_class_of", "from_history", "from_reports"]
