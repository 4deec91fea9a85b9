"""ARCHITECTURE.md stays true: it names every module of edgeq and of the agent, and every
path it gives in code spans exists, so a newcomer's map never leads to a file that moved."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "ARCHITECTURE.md"


def spans() -> list[str]:
    return re.findall(r"`([^`\n]+)`", PAGE.read_text())


def test_every_module_is_named():
    text = " ".join(spans())
    modules = [p for folder in ("edgeq", "device_agents") for p in (ROOT / folder).rglob("*.py")
               if p.name not in ("__init__.py", "__main__.py")]
    missing = [str(p.relative_to(ROOT)) for p in modules if not re.search(rf"\b{re.escape(p.stem)}\b", text)]
    assert len(modules) > 100
    assert not missing, f"ARCHITECTURE.md does not name: {', '.join(missing)}"


def test_every_path_it_gives_exists():
    paths = [s for s in spans() if re.fullmatch(r"(edgeq|device_agents|tests|scripts)/[\w/.-]*", s)]
    assert len(paths) >= 10, paths
    gone = [p for p in paths if not (ROOT / p).exists()]
    assert not gone, f"ARCHITECTURE.md names paths that do not exist: {', '.join(gone)}"
