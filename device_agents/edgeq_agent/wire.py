"""Every rule the host and the agent share on the wire, written once.

Standard library and numpy only, so the host imports it (``device_agents.edgeq_agent.wire``)
instead of restating a rule that would then drift from the agent's.

Protocol lines: one JSON object per line, at most ``MAX_LINE`` bytes each.

Batch inference (infer): a search on a device sends a batch of inputs, gets both models' outputs
back, and sends the next batch: the float and quantized interpreters stay loaded between
requests. Arrays travel as base64 of their raw little-endian bytes with their dtype and shape
(``encode_array`` / ``decode_array``); one request's inputs, and its answer's outputs (both models
together), hold at most ``INFER_MAX_BYTES``, so every answer fits ``MAX_LINE`` after base64
(``base64_size(INFER_MAX_BYTES)`` is 683 KiB, which leaves room for the JSON around it). A row
costs ``row_bytes`` of its tensor's shape signature (a dynamic dimension counted as 1).

Fixed batch: a model input whose shape signature has a batch dimension of 1 cannot be resized to
a batch (``fixed_batch``): the agent invokes such a model one sample at a time, and a run with
batch_size above 1 is refused.
"""

from .errors import AgentFailure

MAX_LINE = 1 << 20  # bytes of one protocol line
INFER_MAX_BYTES = 512 << 10
INFER_DTYPES = ("bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "float16", "float32",
                "float64")

_DTYPE_NAMES = {}


def dtype_name(dtype):
    """numpy's name for a dtype (its .name is slow, and an infer request asks for it four times)."""
    import numpy as np

    dtype = np.dtype(dtype)
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = dtype.name
    return name


def fixed_batch(shape, signature=None):
    """True when a tensor fixes its batch at 1: it has an axis and its shape signature (else its
    shape) starts with 1. Such a model's reshapes hard-code the 1: resized, it answers with outputs
    of the wrong shape and no error."""
    if not len(shape):
        return False
    dims = signature if signature is not None and len(signature) else shape
    return int(list(dims)[0]) == 1


def row_bytes(signature, dtype):
    """Bytes of one row (one sample) of a tensor: its shape signature past the batch axis, a dynamic
    (-1) or zero dimension counted as 1, times the dtype's size."""
    import numpy as np

    items = 1
    for dim in list(signature)[1:] or [1]:
        items *= max(int(dim), 1)
    return items * np.dtype(dtype).itemsize


def base64_size(nbytes):
    """Characters of the base64 of ``nbytes`` bytes (with padding)."""
    return 4 * ((nbytes + 2) // 3)


def encode_array(array):
    """An array as the infer op carries it: {dtype, shape, data: base64 of the raw little-endian bytes}."""
    import base64

    import numpy as np

    array = np.ascontiguousarray(array)
    raw = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    return {"dtype": dtype_name(array.dtype), "shape": [int(s) for s in array.shape],
            "data": base64.b64encode(raw).decode("ascii")}


def decode_array(item, k, room):
    """inputs[k] of an infer request as an array, checked before anything is allocated: an INFER_DTYPES
    dtype, 2 to 8 positive dimensions (samples first), at most ``room`` bytes, data the base64 of
    exactly that many bytes. Anything else is AgentFailure("BadInputs") naming inputs[k]."""
    import base64
    import binascii

    import numpy as np

    if not isinstance(item, dict):
        raise AgentFailure("BadInputs", "inputs[%d] must be an object {dtype, shape, data}" % k)
    dtype, shape, data = item.get("dtype"), item.get("shape"), item.get("data")
    if dtype not in INFER_DTYPES:
        raise AgentFailure("BadInputs", "inputs[%d]: dtype %r is not one of %s" % (k, dtype, ", ".join(INFER_DTYPES)))
    if (not isinstance(shape, list) or len(shape) < 2 or len(shape) > 8
            or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape)):
        raise AgentFailure("BadInputs", "inputs[%d]: shape must be a list of 2 to 8 positive whole numbers "
                           "(samples first), got %r" % (k, shape))
    itemsize = np.dtype(dtype).itemsize
    size = itemsize
    for dim in shape:
        size *= dim
        if size > room:
            raise AgentFailure("BadInputs", "inputs[%d]: shape %s is more than the %d bytes of inputs one infer "
                               "request may carry; send fewer rows" % (k, shape, INFER_MAX_BYTES))
    if not isinstance(data, str) or len(data) != base64_size(size):
        raise AgentFailure("BadInputs", "inputs[%d]: data must be base64 of %d bytes (%s %s)" % (k, size, dtype, shape))
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise AgentFailure("BadInputs", "inputs[%d]: data is not base64 (%s)" % (k, exc))
    return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype).reshape(shape)
