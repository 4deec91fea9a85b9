"""The layering rules, checked by reading every module's imports (no code is run).

DESIGN.md: the agent runs alone on a board, so ``device_agents/`` never imports
``edgeq``; only conversion imports TensorFlow; analysis (a comparison reruns
offline anywhere) imports neither transports nor runtimes; transports never import
the CLI; and no module-level import circles.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "edgeq"
TENSORFLOW_ALLOWED = {"edgeq.models.converters"}  # conversion (later: localize/fix)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, top_level_only: bool = False) -> set[str]:
    """Modules a file imports; ``top_level_only`` skips imports inside functions and TYPE_CHECKING."""
    tree = ast.parse(path.read_text())
    found = set()
    nodes = _top_level(tree) if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & KNOWN
            found |= submodules or {node.module}  # `from pkg import submodule` needs the submodule
            found |= {f"{node.module}.{alias.name}" for alias in node.names} - submodules
    return found


def _top_level(tree):
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        yield from ([node] if not isinstance(node, (ast.If, ast.Try)) else ast.walk(node))


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


KNOWN = set(modules())


def starts(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_agent_never_imports_edgeq():
    for path in (ROOT / "device_agents").rglob("*.py"):
        assert not [m for m in imports(path) if starts(m, "edgeq")], path


def test_only_conversion_imports_tensorflow():
    for name, path in modules().items():
        heavy = [m for m in imports(path) if starts(m, "tensorflow", "keras")]
        assert not heavy or name in TENSORFLOW_ALLOWED, (name, heavy)


def test_analysis_imports_no_transport_runtime_or_cli():
    for name, path in modules().items():
        if starts(name, "edgeq.analysis"):
            bad = [m for m in imports(path) if starts(m, "edgeq.devices", "edgeq.cli", "paramiko", "ai_edge_litert",
                                                      "tflite_runtime", "tensorflow")]
            assert not bad, (name, bad)


def test_repair_never_imports_the_cli():
    for name, path in modules().items():
        if starts(name, "edgeq.repair"):
            assert not [m for m in imports(path) if starts(m, "edgeq.cli")], name


def test_transports_never_import_the_cli():
    for name, path in modules().items():
        if starts(name, "edgeq.devices"):
            assert not [m for m in imports(path) if starts(m, "edgeq.cli")], name


def test_no_module_level_import_circles():
    known = modules()
    graph = {}
    for name, path in known.items():
        targets = set()
        for m in imports(path, top_level_only=True):
            while m and m not in known:
                m = m.rpartition(".")[0]
            if m and m != name:
                targets.add(m)
        graph[name] = targets
    circles = []

    def visit(node, trail):
        for nxt in graph[node]:
            if nxt in trail:
                circles.append(trail[trail.index(nxt):] + [nxt])
            elif nxt not in done:
                visit(nxt, trail + [nxt])
        done.add(node)

    done: set[str] = set()
    for start in graph:
        if start not in done:
            visit(start, [start])
    assert not circles, circles[:3]


def test_every_stage_has_its_folder():
    """A newcomer finds each step of the pipeline by its folder name."""
    for folder in ("models", "inputs", "devices", "analysis", "repair", "reports", "store", "cli"):
        assert (PACKAGE / folder / "__init__.py").is_file(), folder
    flat = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert flat == ["__init__.py", "__main__.py", "errors.py", "evaluate.py", "results.py"], flat
