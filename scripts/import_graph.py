#!/usr/bin/env python3
"""The import graph of ``edgeq`` and ``device_agents``, read from the source (no module is run).

    python scripts/import_graph.py ROOT

prints, for the packages under ROOT: how many modules, how many imports and import edges
(module-level and deferred), every import cycle (for each import that closes a circle, the
shortest circle through it, marked module-level or deferred), the layer order and every arrow
that runs back up a layer (``LAYERS``; the ones kept on purpose are ``LAYER_EXCEPTIONS``, each with
its reason), who reaches TensorFlow, and who loads TensorFlow, paramiko or a TFLite runtime as
soon as it is imported. It exits 0 when every rule holds and 1 otherwise (a cycle, a back arrow
not listed, a listed one that is gone, a module in no layer, TensorFlow outside conversion, a
heavy import at load time), so the same rules hold wherever it runs; 2 on bad usage.

This is the one copy of the graph code and of the layer table: ``tests/test_layers.py`` loads
this file and checks the same functions. Each takes a root folder (or a ``Graph`` already read),
so a test can point them at a tiny package written for it.

What counts as an import:

* every ``import``/``from … import`` statement, wherever it is: at module level (also in
  ``try``/``if``/class bodies, which run on import), inside a function (``deferred``) or under
  ``if TYPE_CHECKING:`` (``type_checking``, also deferred: it never runs, but it still ties the
  two modules together and is one edit away from a real cycle);
* relative imports, resolved against the importing module's package;
* ``from pkg import name`` imports the submodule ``pkg.name`` when there is one, else ``pkg``;
* importing ``a.b.c`` runs ``a/__init__.py`` and ``a/b/__init__.py`` first, so an edge into a
  submodule is also an edge into every parent package the importer is not itself inside (a
  module inside ``a.b`` runs only once ``a.b`` has started, so its own parents add nothing);
* calls that import by name — ``importlib.import_module("x")``, ``__import__("x")`` and
  ``require_host("x", …)`` (``edgeq.models.converters``) — with a string literal as first
  argument; names built at run time (plugin loaders) cannot be read and are listed apart.
"""

from __future__ import annotations

import ast
import sys
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ("edgeq", "device_agents")

# The layers, bottom first: a module may import its own layer and the layers below it, never one
# above, deferred imports included. "edgeq.models.*" names a package and everything in it, a name
# without ".*" that one module only (a new module outside every layer fails ``unlayered``); the most
# specific name decides. The order is the one the code follows (ARCHITECTURE.md's stages, read
# against the import graph):
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # the version, user errors and exit codes, shared limits, the one atomic write and hash (the
    # agent's own); the agent (it imports no edgeq)
    ("base", ("edgeq", "edgeq.errors", "edgeq.limits", "edgeq.files", "device_agents.*")),
    # the input-set file format (.npz checks, block reads and writes): read by every stage, even
    # conversion (a calibration set) and run directories
    ("files", ("edgeq.inputs", "edgeq.inputs.inputset", "edgeq.inputs.npz")),
    ("results", ("edgeq.results", "edgeq.rows")),  # the run directory record every stage after devices reads
    ("models", ("edgeq.models.*",)),
    ("risky", ("edgeq.inputs.risky.*",)),  # the risky suite: made from the data and the float model
    ("devices", ("edgeq.devices.*",)),
    ("analysis", ("edgeq.analysis.*",)),
    # searching for failing inputs runs candidates on a device and judges them as analysis does
    ("search", ("edgeq.inputs.search.*",)),
    ("repair", ("edgeq.repair.*",)),
    ("store", ("edgeq.store.*",)),
    ("reports", ("edgeq.reports.*",)),  # pages of stored history too (history_page reads the store)
    ("install", ("edgeq.install.*",)),  # `edgeq deploy`: evidence from reports and history, installs on devices
    ("evaluate", ("edgeq.evaluate", "edgeq.sampling", "edgeq.suites")),  # the main job across every stage; its
    # rounds and its suite
    ("cli", ("edgeq.cli.*", "edgeq.__main__")),
)

# Back arrows that exist and are kept for now, (importer, imported) → why, each with the fix that would
# let it go. Any other back arrow fails.
LAYER_EXCEPTIONS: dict[tuple[str, str], str] = {
    ("edgeq.inputs.risky.boundary", "edgeq.analysis.plan"):
        "the boundary category ranks samples on the classification outputs exactly as compare judges them "
        "(plan_outputs); loaded only when a boundary is planned",
    ("edgeq.inputs.risky.boundary", "edgeq.analysis.kinds"):
        "with analysis.plan: in_unit_interval, a single-output head's threshold as compare reads it",
}

# Only conversion (and the repair steps that rebuild models: localize, selective, fix) may
# reach TensorFlow/Keras, and only inside the function that needs it.
TENSORFLOW = ("tensorflow", "keras", "tf_keras")
TENSORFLOW_ALLOWED = frozenset({"edgeq.models.converters", "edgeq.models.convert",
                                "edgeq.repair.localize", "edgeq.repair.selective", "edgeq.repair.fix"})
# What no module may load when it is merely imported (only inside the function that uses it): an
# SSH library and the TFLite runtimes, beside TensorFlow. ``HEAVY_AT_IMPORT`` lists who may.
HEAVY = (*TENSORFLOW, "paramiko", "ai_edge_litert", "tflite_runtime", "ai_edge_quantizer")
HEAVY_AT_IMPORT = frozenset({"edgeq.devices.transport.ssh", "edgeq.devices.transport.ssh_process",
                             "edgeq.devices.transport.labgrid",
                             "edgeq.models.model_rewrite"})

IMPORT_CALLS = frozenset({"import_module", "__import__", "require_host"})


@dataclass(frozen=True)
class Import:
    """One import found in ``source``: ``target`` is absolute (a module of the packages, or an
    outside module as written); ``where`` is ``module``, ``function`` or ``type_checking``."""

    source: str
    target: str
    line: int
    where: str = "module"
    via: str = "import"  # or the call that imports by name (import_module, require_host, …)
    implied: bool = False  # a parent package's __init__, run because a submodule of it was imported

    @property
    def deferred(self) -> bool:
        return self.where != "module"


@dataclass
class Graph:
    root: Path
    modules: dict[str, Path]
    imports: list[Import] = field(default_factory=list)
    unresolved: list[tuple[str, int, str]] = field(default_factory=list)  # (module, line, call) by a built name

    def internal(self, deferred: bool = True) -> list[Import]:
        """Imports between modules of the packages (module-level only unless ``deferred``)."""
        return [i for i in self.imports if i.target in self.modules and i.target != i.source
                and (deferred or not i.deferred)]

    def edges(self, deferred: bool = True) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {name: set() for name in self.modules}
        for i in self.internal(deferred):
            found[i.source].add(i.target)
        return found


def module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def find_modules(root, packages=PACKAGES) -> dict[str, Path]:
    """Every module of ``packages`` under ``root`` (a package's ``__init__`` under the package's name;
    a package's folder or a single file, e.g. ``device_agents/edgeq_agent.py`` or ``edgeq_agent/``)."""
    root = Path(root)
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")) if (root / package).is_dir() else ():
            if "__pycache__" not in path.parts:
                found[module_name(root, path)] = path
        if (root / f"{package}.py").is_file():
            found[package] = root / f"{package}.py"
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return any(isinstance(n, ast.Name) and n.id == "TYPE_CHECKING"
               or isinstance(n, ast.Attribute) and n.attr == "TYPE_CHECKING" for n in ast.walk(test))


def _walk(node: ast.AST, where: str = "module"):
    """(node, where) for every node, where = module / function / type_checking."""
    for child in ast.iter_child_nodes(node):
        here = where
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and where == "module":
            here = "function"
        yield child, here
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for part in child.body:
                yield part, "type_checking"
                yield from _walk(part, "type_checking")
            for part in child.orelse:
                yield part, here
                yield from _walk(part, here)
            continue
        yield from _walk(child, here)


def _base_package(name: str, is_package: bool, level: int) -> str:
    """The package a relative import of ``level`` dots starts from, in module ``name``."""
    parts = name.split(".") if is_package else name.split(".")[:-1]
    if level - 1 > len(parts):
        return ""
    return ".".join(parts[:len(parts) - (level - 1)])


def _call_name(func: ast.expr) -> str:
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def _resolve(target: str, modules) -> str:
    """The module a dotted name lands in: itself when it is a module of the packages, else the longest
    known prefix (``edgeq.x.attr`` → ``edgeq.x``); an outside name is kept as written."""
    probe = target
    while probe and probe not in modules:
        probe = probe.rpartition(".")[0]
    return probe or target


def read_imports(path: Path, name: str, modules) -> tuple[list[Import], list[tuple[str, int, str]]]:
    """The imports of one module (see the module docstring for what counts), parents not yet added."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"), filename=str(path))
    is_package = Path(path).name == "__init__.py"
    found, unresolved = [], []

    def add(target: str, node, where, via="import"):
        found.append(Import(name, _resolve(target, modules), node.lineno, where, via))

    for node, where in _walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node, where)
        elif isinstance(node, ast.ImportFrom):
            base = _base_package(name, is_package, node.level) if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            if node.level and not base:
                continue  # a relative import above the top package: Python refuses it too
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                add(sub if sub in modules else module, node, where)
        elif isinstance(node, ast.Call) and _call_name(node.func) in IMPORT_CALLS and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                add(arg.value, node, where, via=_call_name(node.func))
            else:
                unresolved.append((name, node.lineno, _call_name(node.func)))
    return found, unresolved


def _parents(target: str) -> list[str]:
    parts = target.split(".")
    return [".".join(parts[:k]) for k in range(1, len(parts))]


def graph_of(root, packages=PACKAGES) -> Graph:
    """``root`` itself when it is a ``Graph`` already read, else the graph read from that folder."""
    return root if isinstance(root, Graph) else build_graph(root, packages)


def build_graph(root, packages=PACKAGES) -> Graph:
    """Read every module of ``packages`` under ``root``; add the parent-package edges."""
    root = Path(root)
    graph = Graph(root, find_modules(root, packages))
    for name, path in graph.modules.items():
        found, unresolved = read_imports(path, name, graph.modules)
        graph.unresolved += unresolved
        for imp in found:
            graph.imports.append(imp)
            if imp.target not in graph.modules:
                continue
            for parent in _parents(imp.target):  # a.b.c runs a/__init__ and a/b/__init__ first
                inside = name == parent or name.startswith(parent + ".")
                if parent in graph.modules and not inside:
                    graph.imports.append(Import(name, parent, imp.line, imp.where, imp.via, implied=True))
    return graph


# ---- cycles --------------------------------------------------------------------------------------


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Groups of modules that reach each other (Tarjan, iterative); only groups that hold a cycle."""
    index, low, on_stack, stack, groups = {}, {}, set(), [], []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1 or node in edges.get(node, ()):
                        groups.append(sorted(group))
    return sorted(groups)


def _shortest_path(edges, start: str, goal: str, members: set[str]) -> list[str]:
    """The shortest path start → … → goal inside ``members`` (breadth first; it exists: one group)."""
    before = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node == goal:
            path = [node]
            while before[path[-1]] is not None:
                path.append(before[path[-1]])
            return path[::-1]
        for nxt in sorted(edges.get(node, ())):
            if nxt in members and nxt not in before:
                before[nxt] = node
                queue.append(nxt)
    raise ValueError(f"{goal} is not reachable from {start}")


def cycles(root, packages=PACKAGES, deferred: bool = True) -> list[list[str]]:
    """Import cycles (``[a, b, a]``): for every import inside a group of modules that reach each other,
    the shortest cycle through it, without repeats, so every import that closes a circle is shown.
    ``deferred=False``: module-level imports only."""
    return _cycles(graph_of(root, packages).edges(deferred))


def _cycles(edges) -> list[list[str]]:
    found, seen = [], set()
    for group in strongly_connected(edges):
        members = set(group)
        for a in group:
            for b in sorted(edges[a] & members):
                back = [a] if a == b else _shortest_path(edges, b, a, members)
                ring = [a] + back[:-1] if a != b else [a]
                turn = ring.index(min(ring))
                key = tuple(ring[turn:] + ring[:turn])
                if key not in seen:
                    seen.add(key)
                    found.append(list(key) + [key[0]])
    return sorted(found, key=lambda c: (len(c), c))


def classify_cycles(root, packages=PACKAGES) -> list[tuple[str, list[str]]]:
    """Every cycle of the whole graph as ("module-level" | "deferred", cycle): module-level when each of
    its steps is a module-level import, deferred when one step only happens inside a function or for
    the type checker."""
    graph = graph_of(root, packages)
    top = graph.edges(deferred=False)
    out = []
    for cycle in _cycles(graph.edges(deferred=True)):
        steps = zip(cycle, cycle[1:])
        out.append(("module-level" if all(b in top[a] for a, b in steps) else "deferred", cycle))
    return out


# ---- layers --------------------------------------------------------------------------------------


def layer_of(module: str, layers=LAYERS) -> tuple[int, str] | None:
    """(position, name) of the layer that names ``module`` most specifically; None outside every layer."""
    best = None
    for position, (layer, names) in enumerate(layers):
        for name in names:
            tree = name.endswith(".*")
            base = name[:-2] if tree else name
            if module == base or tree and module.startswith(base + "."):
                if best is None or len(name) > best[0]:
                    best = (len(name), position, layer)
    return None if best is None else (best[1], best[2])


def unlayered(root, packages=PACKAGES, layers=LAYERS) -> list[str]:
    """Modules no layer names (a new top-level module must be placed in the table)."""
    return sorted(m for m in graph_of(root, packages).modules if layer_of(m, layers) is None)


def back_arrows(root, packages=PACKAGES, layers=LAYERS, exceptions=None) -> list[Import]:
    """Imports (deferred ones too) from a module into a module of a later layer, minus ``exceptions``
    ({(importer, imported): reason}); one per (importer, imported), the first line."""
    exceptions = LAYER_EXCEPTIONS if exceptions is None else exceptions
    found = {}
    for imp in graph_of(root, packages).internal():
        if imp.implied:
            continue
        here, there = layer_of(imp.source, layers), layer_of(imp.target, layers)
        if here is not None and there is not None and there[0] > here[0] \
                and (imp.source, imp.target) not in exceptions:
            found.setdefault((imp.source, imp.target), imp)
    return sorted(found.values(), key=lambda i: (i.source, i.target))


# ---- named rules ---------------------------------------------------------------------------------


def starts(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def importers_of(root, prefixes, packages=PACKAGES) -> dict[str, list[Import]]:
    """Module → its imports (any kind, by statement or by name) of a module under ``prefixes``."""
    found: dict[str, list[Import]] = {}
    for imp in graph_of(root, packages).imports:
        if not imp.implied and starts(imp.target, *prefixes):
            found.setdefault(imp.source, []).append(imp)
    return found


def loaded_at_import(graph: Graph, module: str) -> dict[str, list[str]]:
    """Outside modules that importing ``module`` loads, each with the chain of module-level imports that
    leads there (``module``, …, the outside name). Deferred imports are not followed: they load later."""
    top: dict[str, set[str]] = {}
    for imp in graph.imports:
        if not imp.deferred:
            top.setdefault(imp.source, set()).add(imp.target)
    chains, queue, found = {module: [module]}, deque([module]), {}
    while queue:
        here = queue.popleft()
        for target in sorted(top.get(here, ())):
            if target in graph.modules:
                if target not in chains:
                    chains[target] = chains[here] + [target]
                    queue.append(target)
            else:
                found.setdefault(target, chains[here] + [target])
    return found


def heavy_at_import(root, packages=PACKAGES, heavy=HEAVY, allowed=HEAVY_AT_IMPORT) -> dict[str, list[str]]:
    """Modules outside ``allowed`` that load one of ``heavy`` (TensorFlow, paramiko, a TFLite runtime) as
    soon as they are imported: module → the chain of module-level imports that does it."""
    graph = graph_of(root, packages)
    found = {}
    for module in sorted(graph.modules):
        if module in allowed:
            continue
        for target, chain in loaded_at_import(graph, module).items():
            if starts(target, *heavy):
                found[module] = chain
                break
    return found


def tensorflow_importers(root, packages=PACKAGES, allowed=TENSORFLOW_ALLOWED) -> dict[str, list[Import]]:
    """Modules outside ``allowed`` that import TensorFlow/Keras, by statement or through
    ``require_host("tensorflow", …)`` / ``import_module("keras")``."""
    return {m: found for m, found in importers_of(root, TENSORFLOW, packages).items() if m not in allowed}


# ---- the report ----------------------------------------------------------------------------------


def stale_exceptions(root, packages=PACKAGES, exceptions=None) -> list[tuple[str, str]]:
    """Entries of ``LAYER_EXCEPTIONS`` whose import is gone: they should be taken out of the table."""
    exceptions = LAYER_EXCEPTIONS if exceptions is None else exceptions
    pairs = {(i.source, i.target) for i in graph_of(root, packages).internal() if not i.implied}
    return sorted(pair for pair in exceptions if pair not in pairs)


def describe(root) -> tuple[list[str], bool]:
    """The lines the script prints, and whether every rule holds."""
    root = Path(root)
    graph = build_graph(root)
    direct = [i for i in graph.internal() if not i.implied]
    pairs = {(i.source, i.target) for i in graph.internal()}
    top_pairs = {(i.source, i.target) for i in graph.internal(deferred=False)}
    counts = ", ".join(f"{p}: {sum(starts(m, p) for m in graph.modules)}" for p in PACKAGES)
    lines = [f"root: {root}",
             f"modules: {len(graph.modules)} ({counts})",
             f"import statements between them: {len(direct)} "
             f"({sum(not i.deferred for i in direct)} module-level, {sum(i.deferred for i in direct)} deferred: "
             f"{sum(i.where == 'function' for i in direct)} in functions, "
             f"{sum(i.where == 'type_checking' for i in direct)} under TYPE_CHECKING)",
             f"import edges (module -> module, parent packages' __init__ included): {len(pairs)} "
             f"({len(top_pairs)} module-level, {len(pairs - top_pairs)} only deferred)"]
    found = classify_cycles(graph)
    lines.append(f"cycles: {len(found)} ({sum(k == 'module-level' for k, _ in found)} module-level, "
                 f"{sum(k == 'deferred' for k, _ in found)} deferred)")
    lines += [f"  {kind}: {' -> '.join(cycle)}" for kind, cycle in found]
    lines.append("layers, bottom first: " + " < ".join(name for name, _ in LAYERS))
    arrows = back_arrows(graph)
    lines.append(f"arrows back up a layer: {len(arrows)}")
    for imp in arrows:
        lines.append(f"  {imp.source} ({layer_of(imp.source)[1]}) -> {imp.target} ({layer_of(imp.target)[1]})"
                     f"  line {imp.line}, {imp.where}")
    stale = stale_exceptions(graph)
    kept = sorted(pair for pair in LAYER_EXCEPTIONS if pair not in stale)
    lines.append(f"back arrows kept as listed exceptions: {len(kept)}")
    lines += [f"  {a} -> {b}: {LAYER_EXCEPTIONS[(a, b)]}" for a, b in kept]
    lines += [f"  listed but gone (take it out of LAYER_EXCEPTIONS): {a} -> {b}" for a, b in stale]
    loose = unlayered(graph)
    if loose:
        lines.append(f"modules in no layer: {', '.join(loose)}")
    heavy = importers_of(graph, TENSORFLOW)
    lines.append(f"TensorFlow/Keras reached (by import or require_host/import_module) by: "
                 f"{', '.join(sorted(heavy)) or 'none'}")
    wrong = {m: f for m, f in heavy.items() if m not in TENSORFLOW_ALLOWED}
    lines += [f"  not allowed: {m} (line {', '.join(str(i.line) for i in f)})" for m, f in sorted(wrong.items())]
    loaded = heavy_at_import(graph)
    lines.append(f"modules that load TensorFlow, paramiko or a TFLite runtime as soon as they are imported: "
                 f"{', '.join(sorted(HEAVY_AT_IMPORT & set(graph.modules))) or 'none'} (allowed), "
                 f"{len(loaded)} other(s)")
    lines += [f"  {m}: {' -> '.join(chain)}" for m, chain in loaded.items()]
    if graph.unresolved:
        lines.append("imports by a name built at run time (plugin loaders; not followed): "
                     + ", ".join(f"{m}:{line}" for m, line, _ in graph.unresolved))
    return lines, not (found or arrows or stale or wrong or loose or loaded)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: python scripts/import_graph.py ROOT  (the folder that holds edgeq/ and device_agents/)",
              file=sys.stderr)
        return 2
    lines, ok = describe(argv[0])
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
