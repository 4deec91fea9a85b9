"""Rewrite a ``.tflite`` flatbuffer into the float32 reference edgeq quantizes from.

Why: real public models are not the plain float32 files converters expect.

* MediaPipe and BirdNET ship **float16 weights** (``fp16 const -> DEQUANTIZE -> CONV_2D``).
  ``dequantize_float16`` folds each such DEQUANTIZE away: its output tensor becomes a
  float32 constant holding the dequantized values. fp16 -> fp32 is exact, so the
  rewritten model computes the same numbers, and ai-edge-quantizer then quantizes
  from real float32 kernels instead of skipping already-"quantized" fp16 tensors.
* Old-schema files keep the op code in ``deprecated_builtin_code`` with
  ``builtin_code`` 0 (= ADD). The TFLite runtime reads ``max(builtin_code,
  deprecated_builtin_code)``; ai-edge-quantizer reads ``builtin_code`` only, sees
  every op as ADD and quantizes nothing. ``normalise_opcodes`` does what the runtime
  does, so both agree.

Uses the flatbuffer object API of the schema bundled with ai-edge-litert (no
TensorFlow). Fields newer than that schema would be dropped by a round trip, which
is why ``rewrite_float_reference`` only re-packs a model when it has to change it.
Weights stored after the flatbuffer (``Buffer.offset/size``, large-model layout) and
large custom options are read back inline; a result above the 2 GiB flatbuffer limit
and external weight files are refused with a message that says so.
"""

from __future__ import annotations

from pathlib import Path

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from edgeq.errors import ModelError
from edgeq.files import write_bytes

FLATBUFFER_LIMIT = 2**31 - 2**20  # flatbuffers address with signed 32-bit offsets; keep 1 MiB for tables
_ALIGN = 16  # the schema's `force_align: 16` on Buffer.data, which the Python packer ignores


def load(path) -> "object":
    """A mutable ``ModelT`` with every buffer's data inline (offset layout resolved)."""
    path = Path(path)
    data = path.read_bytes()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelError(path, "not a TFLite model (no TFL3 identifier at bytes 4..8)")
    try:
        model = schema.ModelT.InitFromPackedBuf(data, 0)
    except Exception as exc:
        raise ModelError(path, f"corrupt TFLite file: {type(exc).__name__}: {exc}") from None
    if model.externalBuffers or model.externalBufferGroups:
        raise ModelError(path, "keeps its weights in external files (external buffers); "
                               "edgeq cannot rewrite such a model")
    for i, buffer in enumerate(model.buffers or []):
        if buffer.offset > 1:  # offset 1 is the converter's "no data" placeholder
            end = buffer.offset + buffer.size
            if end > len(data):
                raise ModelError(path, f"truncated TFLite file: buffer {i} ends at byte {end}, "
                                       f"the file has only {len(data)} bytes")
            buffer.data = np.frombuffer(data, np.uint8, buffer.size, buffer.offset)
        buffer.offset = buffer.size = 0
    for sg in model.subgraphs or []:
        for op in sg.operators or []:
            if op.largeCustomOptionsSize:
                start = op.largeCustomOptionsOffset
                op.customOptions = np.frombuffer(data, np.uint8, op.largeCustomOptionsSize, start)
                op.largeCustomOptionsOffset = op.largeCustomOptionsSize = 0
    return model


def dequantize_float16(model) -> int:
    """Fold every ``float16 constant -> DEQUANTIZE -> float32`` into a float32 constant.

    The DEQUANTIZE op is removed; its output tensor keeps its name and index and gets
    a new buffer with the exact float32 values. A DEQUANTIZE whose output is a
    subgraph output stays (a constant graph output would change the signature).
    Returns the number of ops folded; call ``prune`` afterwards.
    """
    T, DEQUANTIZE = schema.TensorType, schema.BuiltinOperator.DEQUANTIZE
    codes = [max(oc.builtinCode, oc.deprecatedBuiltinCode) for oc in model.operatorCodes or []]
    folded = 0
    for sg in model.subgraphs or []:
        outputs = {int(i) for i in (sg.outputs if sg.outputs is not None else [])}
        keep = []
        for op in sg.operators or []:
            ins = list(op.inputs) if op.inputs is not None else []
            outs = list(op.outputs) if op.outputs is not None else []
            if (codes[op.opcodeIndex] == DEQUANTIZE and len(ins) == 1 and len(outs) == 1
                    and ins[0] >= 0 and outs[0] not in outputs):
                src, dst = sg.tensors[ins[0]], sg.tensors[outs[0]]
                raw = _data(model, src)
                count = int(np.prod(src.shape)) if src.shape is not None else 1
                if (src.type == T.FLOAT16 and dst.type == T.FLOAT32 and src.sparsity is None
                        and raw is not None and raw.size == 2 * count):
                    values = np.frombuffer(raw.tobytes(), "<f2").astype("<f4")
                    buffer = schema.BufferT()
                    buffer.data = values.view(np.uint8)
                    model.buffers.append(buffer)
                    dst.buffer = len(model.buffers) - 1
                    folded += 1
                    continue
            keep.append(op)
        sg.operators = keep
    return folded


def normalise_opcodes(model) -> int:
    """Set ``builtin_code = max(builtin_code, deprecated_builtin_code)`` (what the
    runtime reads) for every builtin op code; return how many changed."""
    changed = 0
    for oc in model.operatorCodes or []:
        code = max(oc.builtinCode, oc.deprecatedBuiltinCode)
        if oc.builtinCode != code:
            oc.builtinCode = code
            changed += 1
    return changed


def to_old_schema(model) -> int:
    """Store every op code the old way (``deprecated_builtin_code`` only, ``builtin_code``
    0), as files written before the extended op codes were. Used to build old-schema
    test models; only valid for codes below 127 (PLACEHOLDER_FOR_GREATER_OP_CODES)."""
    limit = schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES
    for oc in model.operatorCodes or []:
        code = max(oc.builtinCode, oc.deprecatedBuiltinCode)
        if code >= limit:
            raise ValueError(f"op code {code} does not fit the old schema (< {limit})")
        oc.deprecatedBuiltinCode, oc.builtinCode = code, 0
    return len(model.operatorCodes or [])


def prune(model) -> dict:
    """Drop tensors no op, subgraph or signature refers to, then buffers and op codes
    nothing refers to, so folded float16 constants don't stay in the file."""
    removed = {"tensors": 0, "buffers": 0, "op_codes": 0}
    signatures = {}
    for sig in model.signatureDefs or []:
        signatures.setdefault(sig.subgraphIndex, []).extend((sig.inputs or []) + (sig.outputs or []))
    for s, sg in enumerate(model.subgraphs or []):
        ops = sg.operators or []
        used = {int(i) for op in ops
                for field in (op.inputs, op.outputs, op.intermediates) if field is not None for i in field}
        used |= {int(i) for field in (sg.inputs, sg.outputs) if field is not None for i in field}
        used |= {m.tensorIndex for m in signatures.get(s, [])}
        used.discard(-1)
        kept = sorted(i for i in used if i < len(sg.tensors or []))
        remap = {old: new for new, old in enumerate(kept)}
        removed["tensors"] += len(sg.tensors or []) - len(kept)
        sg.tensors = [sg.tensors[i] for i in kept]

        def new(indices):
            return None if indices is None else [remap[int(i)] if i >= 0 else -1 for i in indices]
        for op in ops:
            op.inputs, op.outputs, op.intermediates = new(op.inputs), new(op.outputs), new(op.intermediates)
        sg.inputs, sg.outputs = new(sg.inputs), new(sg.outputs)
        for m in signatures.get(s, []):
            m.tensorIndex = remap[m.tensorIndex]

    used_buffers = {0} | {t.buffer for sg in model.subgraphs or [] for t in sg.tensors or []}
    used_buffers |= {m.buffer for m in model.metadata or []}
    if model.metadataBuffer is not None:  # a numpy array in the object API: no truth value
        used_buffers |= {int(b) for b in model.metadataBuffer}
    kept = sorted(b for b in used_buffers if b < len(model.buffers or []))
    bmap = {old: new for new, old in enumerate(kept)}
    removed["buffers"] = len(model.buffers or []) - len(kept)
    model.buffers = [model.buffers[b] for b in kept]
    for sg in model.subgraphs or []:
        for t in sg.tensors or []:
            t.buffer = bmap[t.buffer]
    for m in model.metadata or []:
        m.buffer = bmap[m.buffer]
    if model.metadataBuffer is not None:
        model.metadataBuffer = [bmap[int(b)] for b in model.metadataBuffer]

    used_codes = sorted({op.opcodeIndex for sg in model.subgraphs or [] for op in sg.operators or []})
    cmap = {old: new for new, old in enumerate(used_codes)}
    removed["op_codes"] = len(model.operatorCodes or []) - len(used_codes)
    model.operatorCodes = [model.operatorCodes[c] for c in used_codes]
    for sg in model.subgraphs or []:
        for op in sg.operators or []:
            op.opcodeIndex = cmap[op.opcodeIndex]
    return removed


def to_bytes(model, path_for_errors="model") -> bytes:
    """Pack ``model`` into a TFL3 flatbuffer, weights inline and 16-byte aligned."""
    total = sum(_nbytes(b) for b in model.buffers or [])
    if total > FLATBUFFER_LIMIT:
        raise ModelError(path_for_errors, f"{total / 2**30:.2f} GiB of weights do not fit one flatbuffer "
                                          "(2 GiB limit); edgeq cannot rewrite a model this large")
    for buffer in model.buffers or []:
        buffer.__class__ = _AlignedBuffer if buffer.data is not None else schema.BufferT
    builder = flatbuffers.Builder(max(1024, total + 65536))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def save(model, path) -> int:
    """Write ``model`` to ``path`` through a temporary name; return its size."""
    path = Path(path)
    data = to_bytes(model, path)
    write_bytes(path, data)
    return len(data)


def rewrite_float_reference(source, destination) -> dict:
    """Write ``destination``: ``source`` with float16 constants dequantized and op codes
    normalised. Returns what changed: ``{"dequantized": n, "normalised": n,
    "removed": {...}}``; when nothing needs changing the file is not written."""
    model = load(source)
    normalised = normalise_opcodes(model)
    dequantized = dequantize_float16(model)
    done = {"dequantized": dequantized, "normalised": normalised, "removed": {}}
    if dequantized or normalised:
        done["removed"] = prune(model)
        save(model, destination)
    return done


def _data(model, tensor):
    if tensor.buffer <= 0 or tensor.buffer >= len(model.buffers or []):
        return None
    data = model.buffers[tensor.buffer].data
    if data is None or len(data) == 0:
        return None
    return np.asarray(data, dtype=np.uint8)


def _nbytes(buffer) -> int:
    return 0 if buffer.data is None else len(buffer.data)


class _AlignedBuffer(schema.BufferT):
    """``BufferT`` packed with ``data`` aligned to 16 bytes, as the TFLite converter writes
    it (kernels may read weights in place; the generated packer aligns to 1 only)."""

    def Pack(self, builder):  # noqa: N802 (flatbuffers' name)
        payload = np.ascontiguousarray(self.data, dtype=np.uint8).tobytes()
        builder.StartVector(1, len(payload), _ALIGN)
        builder.head -= len(payload)
        builder.Bytes[builder.head:builder.head + len(payload)] = payload
        data = builder.EndVector()
        schema.BufferStart(builder)
        schema.BufferAddData(builder, data)
        return schema.BufferEnd(builder)
