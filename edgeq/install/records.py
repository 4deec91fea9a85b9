"""What a deploy leaves behind on the host: history rows and a JUnit file, one per device.

The device keeps its own record (the agent's ``state.json`` beside the releases): that one says
what runs there. The history database says what edgeq did, across the fleet and over time, so
``edgeq history --kind deploy`` lists every install and rollback with its model and evidence.
"""

from __future__ import annotations

import json
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

from edgeq.store.db import Record

PASSED = ("installed", "unchanged")


def deploy_records(results: dict, model: Path, sha256: str, action: str = "deploy") -> list[Record]:
    """One history row per device that changed (installed, rolled back); skipped devices changed nothing."""
    rows = []
    for name, result in results.items():
        if result.get("status") in ("skipped",):
            continue
        evidence = result.get("evidence") or {}
        installed = result.get("sha256") or (result.get("to") or {}).get("sha256") or sha256
        rows.append(Record(
            id=uuid.uuid4().hex, kind=action, created=time.time(), device=name, arch=result.get("arch"),
            model_name=model.name if model else None, model_sha256=installed, quant_sha256=installed, runtime=result.get("runtime"),
            verdict=evidence.get("verdict"), location=result.get("path"),
            payload=json.dumps({k: result.get(k) for k in ("status", "version", "previous", "detail", "forced",
                                                           "evidence", "to", "from") if k in result})))
    return rows


def junit_xml(results: dict, model: str) -> str:
    """One test case per device: passed when it ends on the new model (or already had it)."""
    root = ET.Element("testsuites")
    failures = [r for r in results.values() if r.get("status") not in PASSED]
    suite = ET.SubElement(root, "testsuite", name=f"edgeq deploy {model}", tests=str(len(results)),
                          failures=str(len(failures)),
                          time=f"{sum(r.get('duration_s') or 0 for r in results.values()):.1f}")
    for name, result in results.items():
        case = ET.SubElement(suite, "testcase", classname=f"edgeq.deploy.{name}", name=f"{model} on {name}",
                             time=f"{result.get('duration_s') or 0:.1f}")
        if result.get("status") not in PASSED:
            ET.SubElement(case, "failure", message=f"{result.get('status')}: {result.get('detail') or ''}")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


__all__ = ["deploy_records", "junit_xml"]
