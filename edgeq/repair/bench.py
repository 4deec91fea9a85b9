"""What localize and fix both start from: the float model, the quantized one, the suite.

The user's model is converted with ``edgeq.models.convert`` (so the quantized baseline
is the one edgeq would ship: TFLite converter for Keras, ai-edge-quantizer for a
``.tflite``), or the ``--quantized`` file they give. Its hybrid ops are the candidates.
The search itself uses a rebuild of that baseline by ai-edge-quantizer with the same
ops quantized, because every partly float variant must come from the same tool to be
comparable; both the shipped and the rebuilt drops are recorded.

Whole-model runs (drops, latencies) go through the bench's measurer, under the target's
resolver: the host by default (``HostMeasurer``, AUTO), or a device
(``prepare(..., device=DeviceMeasurer(...))``, see ``device.py``). Each condition of the
suite carries its role (field or stress, the verdict's rule): only field ones set a fix target.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeq.errors import ConfigError, QuantizedNothing
from edgeq.repair.measure import HostMeasurer, Suite, condition_drops, top1
from edgeq.repair.selective import HybridOp, assign_layers, build_selective, graph_ops, hybrid_ops, \
    keras_layer_names, open_graph

MAX_PER_CATEGORY = 200


@dataclass
class Bench:
    source: Path
    stem: str
    workdir: Path
    float_path: Path
    quant_path: Path
    rebuilt_path: Path | None
    ops: list[HybridOp]
    suite: Suite
    notes: list[str] = field(default_factory=list)
    float_top: np.ndarray | None = None
    rebuilt_top: np.ndarray | None = None
    shipped_drops: dict = field(default_factory=dict)
    rebuilt_drops: dict = field(default_factory=dict)
    nothing: str | None = None  # why there is nothing to localize, when so
    measurer: object = field(default_factory=HostMeasurer)  # HostMeasurer or a device's DeviceMeasurer

    @property
    def measured_on(self) -> str:
        return self.measurer.measured_on

    def device_section(self) -> dict | None:
        return self.measurer.section()

    def variant(self, keep: set[int], name: str) -> Path:
        """The rebuild with the ops whose indices are in ``keep`` left float."""
        return build_selective(self.float_path, [o for o in self.ops if o.index not in keep],
                               self.workdir / f"{self.stem}.{name}.tflite")

    def drops_of(self, path: Path, rows: np.ndarray | None = None) -> dict[str, dict]:
        return self.drops_of_many([path], rows)[0]

    def drops_of_many(self, paths: list[Path], rows: np.ndarray | None = None) -> list[dict[str, dict]]:
        """Per-condition drops of each model against the float reference, measured in one go."""
        rows = np.arange(self.suite.n) if rows is None else rows
        outputs = self.measurer.predict_many(list(paths), self.suite, rows)
        return [condition_drops(self.suite, self.float_top[rows], top1(out), rows) for out in outputs]

    def latency(self, path: Path) -> dict:
        """``latency_us`` of one model where the bench measures (host median or device p50)."""
        return self.measurer.latency(path, self.suite)

    def close(self) -> None:
        """End the measurer's device session (nothing for the host)."""
        self.measurer.close()


def prepare(model: Path, workdir: Path, *, data: Path | None = None, inputs: Path | None = None,
            quantized: Path | None = None, seed: int = 0, max_per_category: int = MAX_PER_CATEGORY,
            announce=lambda text: None, device=None, kinds: list[str] | None = None) -> Bench:
    """Convert, find the hybrid ops, build the suite and measure the baseline drops.

    ``device``: where whole models are measured (drops, latencies): None for this host, or a
    measurer such as ``edgeq.repair.device.DeviceMeasurer`` (the caller opens and closes it;
    a bare inventory ``Device`` is wrapped in one that ``bench.close()`` ends). ``kinds``: the input
    kinds the suite was built for (default: from the sample shapes), which decide the conditions' roles."""
    from edgeq.models.convert import convert_model

    if (data is None) == (inputs is None):
        raise ConfigError("give the condition set as --data NPZ (the risky suite is built from it) "
                          "or --inputs NPZ (a suite already built), not both")
    model, workdir = Path(model), Path(workdir)
    measurer = _measurer(device, workdir, announce)
    announce(f"converting {model}")
    try:
        conversion = convert_model(model, workdir, policy="float" if quantized else "dynamic-range")
    except QuantizedNothing as exc:
        return _nothing(model, workdir, f"the quantizer left every weight float ({exc.problem})", measurer)
    float_path = conversion.float_path
    quant_path = Path(quantized) if quantized else conversion.quant_path
    stem = float_path.name.removesuffix(".float.tflite")
    if quantized:
        check_quantized_pair(model, float_path, quant_path)
    ops = _candidates(float_path, quant_path, keras_layer_names(model), model if quantized else None)
    suite = load_suite(float_path, data=data, inputs=inputs, seed=seed, max_per_category=max_per_category,
                       kinds=kinds)
    bench = Bench(model, stem, workdir, float_path, quant_path, None, ops, suite, measurer=measurer)
    if not ops:
        bench.nothing = f"{quant_path.name} has no quantized (hybrid) ops: nothing to localize"
        return bench
    announce(f"{len(ops)} quantized ops; suite of {suite.n} samples in {len(suite.order)} conditions")
    bench.rebuilt_path = bench.variant(set(), "rebuilt")
    float_out, shipped_out, rebuilt_out = measurer.predict_many(
        [float_path, quant_path, bench.rebuilt_path], suite, labels=["float", "shipped", "rebuilt"])
    bench.float_top, bench.rebuilt_top = top1(float_out), top1(rebuilt_out)
    bench.shipped_drops = condition_drops(suite, bench.float_top, top1(shipped_out))
    bench.rebuilt_drops = condition_drops(suite, bench.float_top, bench.rebuilt_top)
    return bench


def _measurer(device, workdir: Path, announce):
    """None → the host; a measurer as given; an inventory Device → a DeviceMeasurer for it."""
    if device is None:
        return HostMeasurer()
    from edgeq.devices.inventory import Device

    if isinstance(device, Device):
        from edgeq.repair.device import DeviceMeasurer

        return DeviceMeasurer(device, workdir / "device", announce=announce)
    return device


def _nothing(model: Path, workdir: Path, why: str, measurer=None) -> Bench:
    return Bench(model, model.stem, workdir, model, model, None, [], Suite([], np.array([]), []), nothing=why,
                 measurer=measurer or HostMeasurer())


def check_quantized_pair(model: Path, float_path: Path, quant_path: Path) -> None:
    """A ``--quantized`` model must be a quantization of MODEL: the check ``inputs search`` makes
    (``edgeq.inputs.search.evaluators.check_pair``: same inputs, same number of outputs), exit 2
    naming both files; measuring one model's drops against another's outputs means nothing."""
    from edgeq.inputs.search.evaluators import check_pair
    from edgeq.models.modelinfo import read_model

    try:
        check_pair(read_model(float_path), read_model(quant_path))
    except ConfigError as exc:
        raise ConfigError(f"--quantized {quant_path}: not made from MODEL {model}: {exc}") from None


def _candidates(float_path: Path, quant_path: Path, layer_names: list[str],
                given_for: Path | None = None) -> list[HybridOp]:
    """The quantized model's hybrid ops, re-pointed at the same op of the float model (matched by
    output tensor names, which both conversions keep). ``given_for``: MODEL, when the quantized
    model was given (``--quantized``): a model with quantized ops none of which is an op of MODEL
    was made from another model, and is refused (exit 2) instead of "nothing to localize"."""
    float_ops = {op.scope: op for op in graph_ops(open_graph(float_path))}
    found, hybrid = [], hybrid_ops(quant_path)
    for entry in hybrid:
        twin = float_ops.get(entry.op.scope)
        if twin is not None:
            found.append(HybridOp(twin, entry.weight, entry.weight_elements))
    if given_for is not None and hybrid and not found:
        raise ConfigError(f"--quantized {quant_path}: not made from MODEL {given_for}: none of its {len(hybrid)} "
                          "quantized op(s) is an op of MODEL (matched by output tensor names)")
    return assign_layers(found, layer_names)


def load_suite(float_path: Path, *, data: Path | None, inputs: Path | None, seed: int,
               max_per_category: int, kinds: list[str] | None = None) -> Suite:
    """The risky suite built from ``data`` (seeded), or a suite file as given; checked against the model."""
    from edgeq.analysis.plan import check_model_labels
    from edgeq.inputs.inputset import input_specs, load_inputset, match_model_inputs
    from edgeq.models.modelinfo import read_model

    dataset = load_inputset(data or inputs, what="data" if data else "input set")
    info = read_model(float_path)
    names = match_model_inputs(dataset, input_specs(info))
    y = None if dataset.y is None else np.asarray(dataset.y)
    check_model_labels(info, y, str(data or inputs))  # as evaluate does: a label the model cannot produce
    if data is not None:
        from edgeq.inputs.risky import build_risky_suite

        built = build_risky_suite({n: np.asarray(dataset.arrays[n]) for n in names}, y, seed=seed,
                                  max_per_category=max_per_category)
        arrays, category, severity, y = [built[n] for n in names], built["category"], built["severity"], \
            built.tags.get("y")
    else:
        arrays = [np.asarray(dataset.arrays[n]) for n in names]
        category = np.asarray(dataset.category) if dataset.category is not None else np.full(dataset.n, "all")
        severity = np.asarray(dataset.severity) if dataset.severity is not None else None
    severity_or_0 = severity if severity is not None else np.zeros(len(category), int)
    condition = np.array([condition_name(c, s) for c, s in zip(category, severity_or_0)])
    order = list(dict.fromkeys(condition.tolist()))
    return Suite(arrays, condition, order, y, seed if data is not None else None, str(data or inputs),
                 roles=condition_roles(category, severity, arrays, kinds))


def condition_name(category, severity) -> str:
    """'brightness+/2' for a severity, the bare category for severity 0: how drops are keyed."""
    return str(category) if int(severity) == 0 else f"{category}/{int(severity)}"


def condition_roles(category: np.ndarray, severity: np.ndarray | None, arrays: list[np.ndarray],
                    kinds: list[str] | None = None) -> dict[str, dict]:
    """Per condition, {"role": "field"|"stress", "reason"}: the rule the verdict uses
    (``edgeq.inputs.risky.roles.category_role``), so a fix is held to the same cells as the verdict.
    ``severity`` None: the input set carries none; ``kinds`` None: from the sample shapes."""
    from edgeq.inputs.risky.families import input_kind
    from edgeq.inputs.risky.roles import category_role

    kinds = sorted(set(kinds) if kinds else {input_kind(tuple(a.shape[1:])) for a in arrays})
    pairs = dict.fromkeys(zip(np.asarray(category).tolist(),
                              [None] * len(category) if severity is None else np.asarray(severity).tolist()))
    roles = {}
    for cat, sev in pairs:
        role, reason = category_role(str(cat), None if sev is None else int(sev), kinds)
        roles[condition_name(cat, sev or 0)] = {"role": role, "reason": reason}
    return roles
