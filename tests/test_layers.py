"""The layering rules, checked by reading every module's imports (no code is run).

DESIGN.md: the agent runs alone on a board, so ``device_agents/`` never imports ``edgeq``;
only conversion imports TensorFlow; analysis (a comparison reruns offline anywhere) imports
neither transports nor runtimes; transports never import the CLI; and no import circles, not
even through imports deferred into functions or written for the type checker.

The graph code and the one layer table (``LAYERS``, bottom first, with ``LAYER_EXCEPTIONS``:
each kept back arrow and its reason) live in ``scripts/import_graph.py``, which prints the same
findings for any tree (``python scripts/import_graph.py ROOT``); this file loads it and holds the
tree to it. What counts as an import — every ``import`` wherever it is, relative imports,
``a.b.c`` also running ``a/__init__`` and ``a/b/__init__``, ``require_host("tensorflow", …)`` and
``importlib.import_module("keras")`` — is said in the script's docstring; the tests at the end
build small packages to show that each check finds what it is for.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "edgeq"


def _load_script():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("import_graph", module)  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


ig = _load_script()


@pytest.fixture(scope="module")
def graph():
    return ig.build_graph(ROOT)


def _imports_of(graph, prefix: str, *targets: str) -> dict[str, list[str]]:
    """Module under ``prefix`` → what it imports (any way: statement, deferred, by name) under ``targets``."""
    found: dict[str, list[str]] = {}
    for imp in graph.imports:
        if not imp.implied and ig.starts(imp.source, prefix) and ig.starts(imp.target, *targets):
            found.setdefault(imp.source, []).append(f"{imp.target} (line {imp.line}, {imp.where})")
    return found


# ---- the rules, on this tree ---------------------------------------------------------------------


def test_the_agent_never_imports_edgeq(graph):
    assert [m for m in graph.modules if m.startswith("device_agents.")], "no agent module found"
    assert not _imports_of(graph, "device_agents", "edgeq")


def test_only_conversion_imports_tensorflow(graph):
    """By statement or by name (``require_host("tensorflow", …)``, ``import_module("keras")``)."""
    assert not ig.tensorflow_importers(graph)


def test_analysis_imports_no_transport_runtime_or_cli(graph):
    assert not _imports_of(graph, "edgeq.analysis", "edgeq.devices", "edgeq.cli", "paramiko", "ai_edge_litert",
                           "tflite_runtime", "tensorflow")


def test_repair_never_imports_the_cli(graph):
    assert not _imports_of(graph, "edgeq.repair", "edgeq.cli")


def test_transports_never_import_the_cli(graph):
    assert not _imports_of(graph, "edgeq.devices", "edgeq.cli")


def test_no_import_cycles_not_even_deferred(graph):
    """Every import counts: module level, inside functions, under TYPE_CHECKING, and the parent
    packages' ``__init__`` that importing a submodule runs."""
    assert not ig.classify_cycles(graph), ig.classify_cycles(graph)


def test_no_arrow_runs_back_up_a_layer(graph):
    arrows = [f"{i.source} ({ig.layer_of(i.source)[1]}) -> {i.target} ({ig.layer_of(i.target)[1]}), line {i.line}"
              for i in ig.back_arrows(graph)]
    assert not arrows, "\n".join(arrows)


def test_every_listed_exception_is_still_needed_and_says_why(graph):
    assert not ig.stale_exceptions(graph), "fixed: take these out of LAYER_EXCEPTIONS"
    for (importer, imported), why in ig.LAYER_EXCEPTIONS.items():
        assert ig.layer_of(imported)[0] > ig.layer_of(importer)[0] and len(why) > 30, (importer, imported)


def test_every_module_has_its_layer(graph):
    assert not ig.unlayered(graph)
    layers = [name for name, _ in ig.LAYERS]
    assert len(layers) == len(set(layers))
    assert layers.index("models") < layers.index("devices") < layers.index("analysis") < layers.index("reports") \
        < layers.index("evaluate") < layers.index("cli")


def test_nothing_heavy_loads_on_import(graph):
    """TensorFlow, paramiko and the TFLite runtimes load inside the function that needs them: importing
    any other module (analysis, reports, evaluate, a command) never pulls them in, even through others."""
    loaded = ig.heavy_at_import(graph)
    assert not loaded, {m: " -> ".join(chain) for m, chain in loaded.items()}


def test_every_stage_has_its_folder():
    """A newcomer finds each step of the pipeline by its folder name."""
    for folder in ("models", "inputs", "devices", "analysis", "repair", "reports", "store", "cli"):
        assert (PACKAGE / folder / "__init__.py").is_file(), folder
    flat = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert flat == ["__init__.py", "__main__.py", "errors.py", "evaluate.py", "files.py", "limits.py", "results.py", "rows.py", "sampling.py", "suites.py"], flat


def test_the_script_reports_this_tree_clean():
    shown = subprocess.run([sys.executable, str(ROOT / "scripts" / "import_graph.py"), str(ROOT)],
                           capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "cycles: 0 (0 module-level, 0 deferred)" in shown.stdout
    assert "arrows back up a layer: 0" in shown.stdout


# ---- the checks find what they are for -----------------------------------------------------------


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    for package in {p for rel in files for p in Path(rel).parents if p.parts}:  # every folder a package
        init = root / package / "__init__.py"
        if not init.exists():
            init.write_text("")
    return root


# The three cycles this tree had, in miniature: the orchestrator and a stage (the stage reads the
# orchestrator's options under TYPE_CHECKING, the orchestrator imports it in a function); a page and
# its section (both deferred); a package __init__ and its submodule (the submodule takes a helper
# from its own package inside a function).
THREE_CYCLES = {
    "edgeq/evaluate.py": """
        def after():
            from edgeq.inputs.search.steps import run_search
            return run_search
        class EvaluateOptions: ...
        """,
    "edgeq/inputs/search/steps.py": """
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from edgeq.evaluate import EvaluateOptions
        def run_search(opts: "EvaluateOptions"): ...
        """,
    "edgeq/reports/html.py": """
        def _e(x): return x
        def render():
            from edgeq.reports.outputs_html import section
            return section()
        """,
    "edgeq/reports/outputs_html.py": """
        def section():
            from edgeq.reports.html import _e
            return _e("x")
        """,
    "edgeq/inputs/risky/__init__.py": """
        from edgeq.inputs.risky import boundary as _boundary
        def transform_rows(shape): return 1
        """,
    "edgeq/inputs/risky/boundary.py": """
        def plan():
            from edgeq.inputs.risky import transform_rows
            return transform_rows(())
        """,
}


def test_deferred_cycles_are_found_and_told_apart(tmp_path):
    root = _tree(tmp_path, THREE_CYCLES)
    found = {tuple(c) for c in ig.cycles(root)}
    assert found == {("edgeq.evaluate", "edgeq.inputs.search.steps", "edgeq.evaluate"),
                     ("edgeq.reports.html", "edgeq.reports.outputs_html", "edgeq.reports.html"),
                     ("edgeq.inputs.risky", "edgeq.inputs.risky.boundary", "edgeq.inputs.risky")}, found
    assert ig.cycles(root, deferred=False) == []  # what the old module-level test saw: nothing
    assert {kind for kind, _ in ig.classify_cycles(root)} == {"deferred"}
    where = {(i.source, i.target): i.where for i in ig.build_graph(root).imports if not i.implied}
    assert where[("edgeq.inputs.search.steps", "edgeq.evaluate")] == "type_checking"
    assert where[("edgeq.evaluate", "edgeq.inputs.search.steps")] == "function"
    # the stage importing the orchestrator is also an arrow back up the layers
    assert [(i.source, i.target) for i in ig.back_arrows(root)] == [("edgeq.inputs.search.steps", "edgeq.evaluate")]


def test_a_cycle_through_a_package_init_is_found(tmp_path):
    """``from edgeq.pkg.sub import x`` runs ``edgeq/pkg/__init__.py`` first: when that imports the importer,
    it is a cycle although nothing imports ``edgeq.pkg.sub`` back."""
    root = _tree(tmp_path, {
        "edgeq/pkg/__init__.py": "from edgeq.other import helper\n",
        "edgeq/pkg/sub.py": "x = 1\n",
        "edgeq/other.py": """
            def helper():
                from edgeq.pkg.sub import x
                return x
            """,
        # a module importing a sibling adds no edge to its own package: no cycle here
        "edgeq/calm/__init__.py": "from edgeq.calm.a import f\n",
        "edgeq/calm/a.py": "from edgeq.calm.b import g\ndef f(): return g()\n",
        "edgeq/calm/b.py": "def g(): return 1\n",
    })
    assert ig.cycles(root) == [["edgeq.other", "edgeq.pkg", "edgeq.other"]]
    implied = {(i.source, i.target) for i in ig.build_graph(root).imports if i.implied}
    assert ("edgeq.other", "edgeq.pkg") in implied and ("edgeq.calm.a", "edgeq.calm") not in implied


def test_relative_imports_are_resolved(tmp_path):
    root = _tree(tmp_path, {
        "edgeq/errors.py": "class EdgeqError(Exception): ...\n",
        "edgeq/rel/__init__.py": "from . import m\n",
        "edgeq/rel/m.py": "from .n import helper\nfrom ..errors import EdgeqError\n",
        "edgeq/rel/n.py": """
            def helper():
                from .m import EdgeqError
                return EdgeqError
            """,
    })
    edges = ig.build_graph(root).edges()
    assert edges["edgeq.rel"] == {"edgeq.rel.m"}
    assert edges["edgeq.rel.m"] == {"edgeq.rel.n", "edgeq.errors"}
    assert ig.cycles(root) == [["edgeq.rel.m", "edgeq.rel.n", "edgeq.rel.m"]]


def test_tensorflow_reached_by_name_counts(tmp_path):
    root = _tree(tmp_path, {
        "edgeq/models/converters.py": """
            import importlib
            def require_host(module, purpose):
                return importlib.import_module(module)
            def convert():
                return require_host("tensorflow", "converting")
            """,
        "edgeq/analysis/sneaky.py": """
            from edgeq.models.converters import require_host
            def judge():
                return require_host("keras", "a quick look")
            """,
        "edgeq/reports/also.py": """
            import importlib
            def draw():
                return importlib.import_module("tensorflow.lite"), __import__("tf_keras")
            """,
        "edgeq/store/fine.py": "def f(name):\n    import importlib\n    return importlib.import_module(name)\n",
    })
    found = ig.tensorflow_importers(root)
    assert sorted(found) == ["edgeq.analysis.sneaky", "edgeq.reports.also"]
    assert [(i.target, i.via) for i in found["edgeq.analysis.sneaky"]] == [("keras", "require_host")]
    assert {i.target for i in found["edgeq.reports.also"]} == {"tensorflow.lite", "tf_keras"}
    assert ("edgeq.store.fine", 3) in {(m, line) for m, line, _ in ig.build_graph(root).unresolved}


def test_back_arrows_and_heavy_imports_are_found(tmp_path):
    root = _tree(tmp_path, {
        "edgeq/models/convert.py": "def run():\n    from edgeq.cli.main import main\n",
        "edgeq/cli/main.py": "from edgeq.models.convert import run\n",
        "edgeq/devices/transport/ssh.py": "import paramiko\n",
        "edgeq/devices/probe.py": "from edgeq.devices.transport import ssh\n",
        "edgeq/reports/page.py": "from edgeq.devices.probe import ssh\n",
    })
    arrows = [(i.source, i.target, i.where) for i in ig.back_arrows(root)]
    assert arrows == [("edgeq.models.convert", "edgeq.cli.main", "function")]  # reports may import devices
    assert ig.back_arrows(root, exceptions={("edgeq.models.convert", "edgeq.cli.main"): "because"}) == []
    assert ig.stale_exceptions(root, exceptions={("edgeq.cli.main", "edgeq.store.db"): "gone"}) == [
        ("edgeq.cli.main", "edgeq.store.db")]
    loaded = ig.heavy_at_import(root)
    assert loaded["edgeq.reports.page"] == ["edgeq.reports.page", "edgeq.devices.probe",
                                            "edgeq.devices.transport.ssh", "paramiko"]
    assert "edgeq.devices.transport.ssh" not in loaded  # the transport itself may
    assert ig.unlayered(_tree(tmp_path / "more", {"edgeq/helpers.py": ""})) == ["edgeq.helpers"]


@pytest.mark.parametrize("layout", ["module", "package"])
def test_the_agent_as_one_file_or_as_a_package(tmp_path, layout):
    files = ({"device_agents/edgeq_agent.py": "import numpy\n"} if layout == "module" else
             {"device_agents/edgeq_agent/__init__.py": "from .runtime import load\n",
              "device_agents/edgeq_agent/runtime.py": "def load():\n    from edgeq.errors import EdgeqError\n"})
    root = _tree(tmp_path, {**files, "edgeq/errors.py": "class EdgeqError(Exception): ...\n"})
    graph = ig.build_graph(root)
    assert "device_agents.edgeq_agent" in graph.modules
    bad = _imports_of(graph, "device_agents", "edgeq")
    assert bad == ({} if layout == "module" else
                   {"device_agents.edgeq_agent.runtime": ["edgeq.errors (line 2, function)"]})
