"""Which ops a dynamic-range model quantized, and partly quantized models built on request.

Selective quantization goes through ai-edge-quantizer: it reads the float ``.tflite``
and takes one recipe entry per op, matched against the op's *scope* (its output tensor
names joined by ``;``, with a trailing ``;``). Every variant of one search is built by
the same tool from the same float file, so two variants differ only in the ops kept
float. The TFLite converter cannot do this (it has no per-op switch for dynamic range),
and its hybrid models differ numerically from ai-edge-quantizer's (different input
quantization options), so the search never mixes the two.

DESIGN.md: ai-edge-quantizer sometimes quantizes nothing without saying so, so every
build counts the hybrid ops it really made and refuses a model that missed one.
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeq.errors import ModelError

# ops whose kernels take int8 weights with float activations (the hybrid kernels)
HYBRID_TYPES = frozenset({"FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "BATCH_MATMUL", "TRANSPOSE_CONV",
                          "CONV_3D", "EMBEDDING_LOOKUP", "GATHER", "UNIDIRECTIONAL_SEQUENCE_LSTM", "SVDF",
                          "BIDIRECTIONAL_SEQUENCE_LSTM", "LSTM", "RNN", "UNIDIRECTIONAL_SEQUENCE_RNN"})
INT_WEIGHTS = (np.int8, np.uint8, np.int16)


@dataclass(frozen=True)
class GraphOp:
    """One op of subgraph 0 as the interpreter lists it; ``activations`` are its non-constant inputs."""

    index: int
    op_type: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    activations: tuple[int, ...]
    scope: str
    output_name: str


@dataclass(frozen=True)
class HybridOp:
    """An op the quantized model runs with int8 weights on float activations."""

    op: GraphOp
    weight: str
    weight_elements: int
    layer: str = ""

    @property
    def index(self) -> int:
        return self.op.index

    def to_dict(self) -> dict:
        return {"op_index": self.op.index, "op_type": self.op.op_type, "tensor": self.op.output_name,
                "weight": self.weight, "weight_elements": self.weight_elements, "layer": self.layer or None}


def open_graph(path: Path):
    """An interpreter that only describes the model (nothing allocated, built-in kernels)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    try:
        return Interpreter(model_path=str(path),
                           experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    except (ValueError, RuntimeError) as exc:
        raise ModelError(path, f"cannot load with the host interpreter: {str(exc).splitlines()[0][:200]}") from None


def graph_ops(interpreter) -> list[GraphOp]:
    """Every op with its activation inputs: a tensor is an activation when a graph input or
    another op's output feeds it; anything else (weights, biases, shapes) is a constant."""
    details = interpreter.get_tensor_details()
    names = {d["index"]: d["name"] for d in details}
    ops = interpreter._get_ops_details()
    produced = {int(i) for d in interpreter.get_input_details() for i in [d["index"]]}
    produced |= {int(t) for op in ops for t in op["outputs"] if t >= 0}
    found = []
    for op in ops:
        inputs = tuple(int(t) for t in op["inputs"])
        outputs = tuple(int(t) for t in op["outputs"])
        out_names = [names[t] for t in outputs if t >= 0 and names.get(t)]
        scope = ";".join(out_names) + (";" if out_names else "")
        found.append(GraphOp(int(op["index"]), op["op_name"], inputs, outputs,
                             tuple(t for t in inputs if t in produced), scope, out_names[0] if out_names else ""))
    return found


def hybrid_ops(quant_path: Path) -> list[HybridOp]:
    """The ops of ``quant_path`` that read an integer weight and write float (dynamic range)."""
    interpreter = open_graph(quant_path)
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    found = []
    for op in graph_ops(interpreter):
        if op.op_type not in HYBRID_TYPES or not op.outputs or details[op.outputs[0]]["dtype"] != np.float32:
            continue
        weights = [details[t] for t in op.inputs if t >= 0 and t not in op.activations
                   and details[t]["dtype"] in INT_WEIGHTS and len(details[t]["shape"]) >= 2]
        if weights:
            w = weights[0]
            found.append(HybridOp(op, w["name"], int(np.prod(w["shape"]))))
    return found


def build_selective(float_path: Path, quantize: list[HybridOp], dest: Path, per_channel: bool = True) -> Path:
    """Write ``dest``: ``float_path`` with exactly the ops ``quantize`` in dynamic range, the rest float.

    Each op is named by an anchored regex on its scope, so a layer whose name is a prefix
    of another's (``dense`` / ``dense_1``) never catches its neighbour.
    """
    from edgeq.models.converters import _captured_output, require_host, tool_output_to

    require_host("ai_edge_quantizer", "selective quantization")
    from ai_edge_quantizer import qtyping, quantizer

    granularity = qtyping.QuantGranularity.CHANNELWISE if per_channel else qtyping.QuantGranularity.TENSORWISE
    qt = quantizer.Quantizer(str(float_path))
    for entry in quantize:
        qt.add_dynamic_config("^" + re.escape(entry.op.scope) + "$", qtyping.TFLOperationName.ALL_SUPPORTED, 8,
                              granularity)
    if not quantize:
        dest.write_bytes(Path(float_path).read_bytes())
        return dest
    try:
        with tool_output_to(dest.with_suffix(".log")), _captured_output():
            model = bytes(qt.quantize().quantized_model)
    except Exception as exc:
        raise ModelError(float_path, f"ai-edge-quantizer (selective) failed: {str(exc).splitlines()[0][:200]}") \
            from None
    dest.write_bytes(model)
    made = {h.op.scope for h in hybrid_ops(dest)}
    missed = [e.op.scope for e in quantize if e.op.scope not in made]
    if missed:
        raise ModelError(dest, f"ai-edge-quantizer left {len(missed)} of {len(quantize)} requested ops float "
                               f"(first: {missed[0][:80]})")
    return dest


def keras_layer_names(model: Path) -> list[str]:
    """Layer names of a ``.keras`` file in the order its config lists them, read from the zip's
    ``config.json`` (no TensorFlow needed). Other sources give no names."""
    if Path(model).suffix.lower() != ".keras" or not zipfile.is_zipfile(model):
        return []
    try:
        with zipfile.ZipFile(model) as archive:
            config = json.loads(archive.read("config.json"))
    except (KeyError, ValueError, OSError):
        return []
    names: list[str] = []

    def walk(node):
        for layer in (node.get("config") or {}).get("layers") or []:
            name = (layer.get("config") or {}).get("name")
            if name and layer.get("class_name") != "InputLayer":
                names.append(name)
            walk(layer)

    walk(config)
    return names


def scope_layer(tensor_name: str) -> str:
    """``sequential_1/dense_1_2/MatMul;...`` → ``dense_1_2``: the layer scope TensorFlow traced
    (the model scope first, the op last)."""
    parts = tensor_name.split(";")[0].split("/")
    return parts[1] if len(parts) >= 3 else parts[0]


def assign_layers(ops: list[HybridOp], layer_names: list[str]) -> list[HybridOp]:
    """Name each op's Keras layer. TensorFlow makes scopes unique by appending ``_N``
    (layer ``dense`` traces as ``dense_1``, ``dense_1`` as ``dense_1_2``), so a scope
    matches every layer it extends; ops run in layer order, so each takes the earliest
    matching layer after the previous op's. Without names the scope itself is shown."""
    from dataclasses import replace

    named, last = [], -1
    for entry in ops:
        scope = scope_layer(entry.op.output_name)
        fits = [i for i, name in enumerate(layer_names)
                if i > last and (scope == name or re.fullmatch(re.escape(name) + r"(_\d+)+", scope))]
        if fits:
            last = fits[0]
            named.append(replace(entry, layer=layer_names[fits[0]]))
        else:
            named.append(replace(entry, layer=scope if not layer_names else ""))
    return named
