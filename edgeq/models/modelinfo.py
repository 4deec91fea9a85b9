"""Read a ``.tflite`` file (tensors, ops, op versions, weights) without TensorFlow.

Only the flatbuffer schema bundled with the core runtime
(``ai_edge_litert.schema_py_generated``) is used; TensorFlow is never imported.

What counts as a *weight* (see ``_weights``): a constant tensor -- its buffer holds
data, either inline (``Buffer.data``) or after the flatbuffer (``Buffer.offset/size``,
large models) -- of rank >= 2 that an op consumes as its kernel:

* FULLY_CONNECTED, CONV_2D, DEPTHWISE_CONV_2D, TRANSPOSE_CONV, CONV_3D,
  CONV_3D_TRANSPOSE, EMBEDDING_LOOKUP: input 1 (the filter / weight matrix / table);
* GATHER: input 0, the params (Keras ``Embedding`` converts to GATHER on a constant
  table, which dynamic-range quantization stores as int8 -> DEQUANTIZE -> GATHER);
* BATCH_MATMUL: either input;
* LSTM / RNN / SVDF families (LSTM, UNIDIRECTIONAL_SEQUENCE_LSTM,
  BIDIRECTIONAL_SEQUENCE_LSTM, RNN, UNIDIRECTIONAL_SEQUENCE_RNN,
  BIDIRECTIONAL_SEQUENCE_RNN, SVDF): every constant input of rank >= 2;
* or a constant that reaches such a slot through a DEQUANTIZE op (float16 and
  weight-only models store ``const -> DEQUANTIZE -> FULLY_CONNECTED``): the stored
  constant is reported, with its stored dtype (e.g. float16).

Biases, peepholes and other rank-1 constants, shapes, axes and lookup tables feeding
other ops are not weights. ``dtype`` is the stored type: a dynamic-range model shows
its quantized kernels as ``int8`` and the ones the converter left alone as ``float32``.
"""

from __future__ import annotations

import hashlib
import math
import mmap
import re
import struct
from dataclasses import asdict, dataclass
from pathlib import Path

from edgeq.errors import ModelError

SMALL_WEIGHT_ELEMENTS = 1024  # the converter leaves weights smaller than this in float

_KERNEL_INPUTS = {
    "FULLY_CONNECTED": (1,), "CONV_2D": (1,), "DEPTHWISE_CONV_2D": (1,),
    "TRANSPOSE_CONV": (1,), "CONV_3D": (1,), "CONV_3D_TRANSPOSE": (1,),
    "EMBEDDING_LOOKUP": (1,), "GATHER": (0,), "BATCH_MATMUL": (0, 1),
}
_INT_TYPES = frozenset({"int8", "uint8", "int4", "int16"})
_ALL_INPUTS = frozenset({
    "LSTM", "UNIDIRECTIONAL_SEQUENCE_LSTM", "BIDIRECTIONAL_SEQUENCE_LSTM", "RNN",
    "UNIDIRECTIONAL_SEQUENCE_RNN", "BIDIRECTIONAL_SEQUENCE_RNN", "SVDF",
})


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name, e.g. "float32", "int8"
    shape_signature: tuple[int, ...] | None = None  # -1 marks a dynamic dimension


@dataclass(frozen=True)
class OpInfo:
    name: str  # builtin name, e.g. "FULLY_CONNECTED"; custom ops: "CUSTOM:<code>"
    version: int
    count: int


@dataclass(frozen=True)
class WeightInfo:
    name: str
    shape: tuple[int, ...]
    dtype: str
    elements: int
    nbytes: int  # bytes actually stored in the file
    used_by: tuple[str, ...]  # names of the ops consuming it (through DEQUANTIZE too)


@dataclass(frozen=True)
class ModelInfo:
    path: str
    sha256: str
    size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    ops: tuple[OpInfo, ...]
    weights: tuple[WeightInfo, ...]
    # ops that read an integer weight directly while producing float32: the hybrid
    # (dynamic-range) kernels, e.g. ("CONV_2D", "FULLY_CONNECTED")
    hybrid_ops: tuple[str, ...] = ()
    # per output of subgraph 0, the builtin op producing it ("" for an input or a
    # constant): SOFTMAX means class probabilities, LOGISTIC independent scores, ...
    output_producers: tuple[str, ...] = ()
    # op codes stored only in deprecated_builtin_code (builtin_code 0): the runtime reads
    # them right, tools that read builtin_code alone (ai-edge-quantizer) see ADD
    old_schema_opcodes: bool = False
    # per output of subgraph 0, its name in the model's signature ("" if none): Keras
    # converts dict outputs to tensors named StatefulPartitionedCall:K and keeps the
    # names people know (``boxes``, ``probs``) only in the signature
    output_signature_names: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """A JSON-ready dict (tuples become lists)."""
        return _lists(asdict(self))


class _Bad(Exception):
    """A problem found while parsing; ``read_model`` adds the path."""


def _lists(obj):
    if isinstance(obj, dict):
        return {k: _lists(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_lists(v) for v in obj]
    return obj


def _enum_names(enum_cls) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_")}


def read_model(path) -> ModelInfo:
    """Parse ``path``; raise ``ModelError`` naming the path for anything unreadable."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if p.is_dir():
            raise ModelError(path, "is a directory, not a .tflite file")
        if size == 0:
            raise ModelError(path, "empty file (0 bytes), not a TFLite model")
        with open(p, "rb") as f:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except FileNotFoundError:
        raise ModelError(path, "file not found") from None
    except PermissionError:
        raise ModelError(path, "permission denied") from None
    except OSError as e:
        raise ModelError(path, f"cannot read file: {e.strerror or e}") from None
    try:
        if size < 8 or mm[4:8] != b"TFL3":
            raise ModelError(path, "not a TFLite model (no TFL3 identifier at bytes 4..8)"
                             + (f"; the file has only {size} bytes" if size < 8 else ""))
        digest = hashlib.sha256(mm).hexdigest()
        try:
            parts = _parse(mm, size)
        except _Bad as e:
            raise ModelError(path, str(e)) from None
        except Exception as e:  # the generated reader reads past the end of the data
            past = isinstance(e, struct.error) and re.search(r"at least (\d+) bytes", str(e))
            raise ModelError(path, (
                f"truncated TFLite file: the flatbuffer refers to byte {past.group(1)} "
                f"but the file has only {size} bytes" if past else
                f"corrupt TFLite file ({size} bytes): {type(e).__name__}: {e}")) from None
    finally:
        try:
            mm.close()
        except BufferError:  # a view is still alive somewhere; the GC will close it
            pass
    return ModelInfo(str(path), digest, size, *parts)


def _parse(buf, size: int):
    from ai_edge_litert import schema_py_generated as schema

    type_names = {k: v.lower() for k, v in _enum_names(schema.TensorType).items()}
    op_names = _enum_names(schema.BuiltinOperator)
    root = struct.unpack_from("<I", buf, 0)[0]
    if root + 4 > size:
        raise _Bad(f"truncated TFLite file: root table at byte {root}, the file has {size} bytes")
    model = schema.Model.GetRootAs(buf, 0)
    if model.Version() != 3:
        raise _Bad(f"unsupported TFLite schema version {model.Version()} (expected 3)")
    if model.SubgraphsLength() == 0:
        raise _Bad("TFLite model has no subgraphs")

    codes, old_schema = [], False
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        old_schema |= oc.BuiltinCode() < code
        if code == schema.BuiltinOperator.CUSTOM:
            name = "CUSTOM:" + (oc.CustomCode() or b"").decode("utf-8", "replace")
        else:
            name = op_names.get(code, f"BUILTIN_{code}")
        codes.append((name, oc.Version()))

    stored = {}  # buffer index -> bytes stored (0 = no data)
    for b in range(model.BuffersLength()):
        buffer = model.Buffers(b)
        nbytes, end = 0, 0
        if buffer.DataLength():
            o = buffer._tab.Offset(4)  # the `data` vector field
            nbytes = buffer.DataLength()
            end = buffer._tab.Vector(o) + nbytes
        elif buffer.Offset() > 1:  # data stored after the flatbuffer (large models)
            nbytes, end = buffer.Size(), buffer.Offset() + buffer.Size()
        if end > size:
            raise _Bad(f"truncated TFLite file: buffer {b} ends at byte {end}, "
                       f"the file has only {size} bytes")
        stored[b] = nbytes

    def spec(i) -> TensorSpec:
        t = main.Tensors(i)
        sig = _ints(t.ShapeSignatureAsNumpy, t.ShapeSignatureLength)
        return TensorSpec(_name(t), _shape(t), type_names.get(t.Type(), f"type{t.Type()}"),
                          tuple(sig) if t.ShapeSignatureLength() else None)

    main = model.Subgraphs(0)
    inputs = tuple(spec(i) for i in _ints(main.InputsAsNumpy, main.InputsLength))
    outputs = tuple(spec(i) for i in _ints(main.OutputsAsNumpy, main.OutputsLength))

    counts: dict[tuple[str, int], int] = {}
    weights: dict[tuple[int, int], list] = {}
    hybrid: set[str] = set()
    producers: dict[int, str] = {}  # subgraph 0: tensor index -> op writing it
    for s in range(model.SubgraphsLength()):
        sg = model.Subgraphs(s)
        ops = []
        for i in range(sg.OperatorsLength()):
            op = sg.Operators(i)
            name, version = codes[op.OpcodeIndex()]
            counts[(name, version)] = counts.get((name, version), 0) + 1
            ops.append((name, _ints(op.InputsAsNumpy, op.InputsLength),
                        _ints(op.OutputsAsNumpy, op.OutputsLength)))
            if s == 0:
                producers.update((t, (name, ops[-1][1])) for t in ops[-1][2])
        _weights(sg, ops, stored, type_names, s, weights, hybrid)

    op_infos = tuple(OpInfo(n, v, c) for (n, v), c in counts.items())
    winfos = tuple(WeightInfo(*w[:5], tuple(sorted(w[5]))) for w in weights.values())
    output_indices = _ints(main.OutputsAsNumpy, main.OutputsLength)
    output_producers = tuple(_producer(producers, i) for i in output_indices)
    return (inputs, outputs, op_infos, winfos, tuple(sorted(hybrid)), output_producers, old_schema,
            _signature_names(model, output_indices))


_SHAPE_ONLY = frozenset({"RESHAPE", "SQUEEZE", "EXPAND_DIMS"})


def _producer(producers: dict, tensor: int) -> str:
    """The op that computes a tensor, looking through reshapes (a LOGISTIC behind a
    RESHAPE still makes sigmoid scores)."""
    for _ in range(16):
        name, inputs = producers.get(tensor, ("", []))
        if name not in _SHAPE_ONLY or not inputs or inputs[0] < 0:
            return name
        tensor = inputs[0]
    return name


def _signature_names(model, output_indices: list[int]) -> tuple[str, ...]:
    """Output names from the first signature of subgraph 0, in output order."""
    names = {}
    for k in range(model.SignatureDefsLength()):
        sig = model.SignatureDefs(k)
        if sig.SubgraphIndex() != 0:
            continue
        for j in range(sig.OutputsLength()):
            entry = sig.Outputs(j)
            names.setdefault(entry.TensorIndex(), (entry.Name() or b"").decode("utf-8", "replace"))
        break
    return tuple(names.get(i, "") for i in output_indices)


def _weights(sg, ops, stored, type_names, s, out, hybrid) -> None:
    """Collect the kernels of subgraph ``s`` into ``out`` (rule: module docstring)
    and the names of hybrid ops (integer kernel read directly, float32 output)."""
    def const(i):
        return i >= 0 and stored.get(sg.Tensors(i).Buffer(), 0) > 0

    dequant = {outs[0]: ins[0] for name, ins, outs in ops
               if name == "DEQUANTIZE" and ins and outs and const(ins[0])}
    for name, ins, outs in ops:
        slots = range(len(ins)) if name in _ALL_INPUTS else _KERNEL_INPUTS.get(name, ())
        for slot in slots:
            if slot >= len(ins) or ins[slot] < 0:
                continue
            i = ins[slot] if const(ins[slot]) else dequant.get(ins[slot], -1)
            if i < 0:
                continue
            t = sg.Tensors(i)
            shape = _shape(t)
            if len(shape) < 2:
                continue
            if (s, i) not in out:
                out[(s, i)] = [_name(t), shape, type_names.get(t.Type(), f"type{t.Type()}"),
                               math.prod(shape), stored[t.Buffer()], set()]
            out[(s, i)][5].add(name)
            if (i == ins[slot] and out[(s, i)][2] in _INT_TYPES and outs
                    and sg.Tensors(outs[0]).Type() == 0):  # TensorType.FLOAT32
                hybrid.add(name)


def _ints(as_numpy, length) -> list[int]:
    return [int(x) for x in as_numpy()] if length() else []


def _shape(t) -> tuple[int, ...]:
    return tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()


def _name(t) -> str:
    return (t.Name() or b"").decode("utf-8", "replace")


def weight_summary(info: ModelInfo, target_dtype: str) -> dict:
    """Count weight tensors: how many have ``target_dtype`` and how many stayed float32.

    ``small`` counts weights with fewer than 1024 elements, which the TFLite converter
    never quantizes; ``by_dtype`` maps every stored dtype to its count.
    """
    by_dtype: dict[str, int] = {}
    for w in info.weights:
        by_dtype[w.dtype] = by_dtype.get(w.dtype, 0) + 1
    return {
        "total": len(info.weights),
        "target_dtype": target_dtype,
        "target": by_dtype.get(target_dtype, 0),
        "float32": by_dtype.get("float32", 0),
        "small": sum(1 for w in info.weights if w.elements < SMALL_WEIGHT_ELEMENTS),
        "by_dtype": dict(sorted(by_dtype.items())),
        "total_bytes": sum(w.nbytes for w in info.weights),
        "target_bytes": sum(w.nbytes for w in info.weights if w.dtype == target_dtype),
    }


def float16_weights(info: ModelInfo) -> int:
    """How many weight tensors are stored as float16 (``fp16 const -> DEQUANTIZE``):
    MediaPipe/BirdNET-style files, which edgeq dequantizes into a float32 reference."""
    return sum(1 for w in info.weights if w.dtype == "float16")


def integer_weights(info: ModelInfo) -> tuple[WeightInfo, ...]:
    """Weights already stored as integers (int8/uint8/int4/int16): the model is quantized
    and cannot serve as a float reference."""
    return tuple(w for w in info.weights if w.dtype in _INT_TYPES)
