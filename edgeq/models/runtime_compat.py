"""Can an older TFLite runtime load this model?

A TFLite model names every builtin op with a version; a runtime refuses a model whose
op versions it does not register ("Didn't find op for builtin opcode
'FULLY_CONNECTED' version '12'"). New converters raise versions when they emit new
kernels: TF 2.21's default dynamic-range conversion writes FULLY_CONNECTED v12
(per-channel hybrid), which tflite-runtime 2.14.0 -- the last tflite-runtime release --
cannot load. With ``converter._experimental_disable_per_channel = True`` the same
layer is written as FULLY_CONNECTED v9 and loads.

``MAX_OP_VERSIONS`` was measured, not guessed: one single-operator probe model per
(builtin op, version 1..16) of the current schema, loaded with tflite-runtime 2.14.0
(x86_64 wheel, ``Interpreter(model_path=...)``). An op missing from the table is not
registered at all in that runtime. The numbers agree with the "minimum runtime
version" map of the TensorFlow source
(tensorflow/compiler/mlir/lite/tools/versioning/runtime_version.cc: e.g.
FULLY_CONNECTED v10 -> 2.11.0, v11 -> 2.15.0; STRIDED_SLICE v8 and CONCATENATION v4
-> 2.14.0). Custom ops are not checked: the device may register them.

Registered is not the same as working: tflite-runtime 2.14 registers TRANSPOSE_CONV
up to v4, but the converter writes its hybrid form (int8 weights, float input) as v2
and the 2.14 kernel rejects it in ``allocate_tensors`` ("weights->type != input->type
(INT8 != FLOAT32)"). ``KERNEL_GAPS`` lists such measured cases per runtime.
"""

from __future__ import annotations

import re

from edgeq.models.modelinfo import ModelInfo

# Highest builtin op version each runtime registers (measured, see module docstring).
MAX_OP_VERSIONS: dict[str, dict[str, int]] = {
    "tflite-runtime-2.14": {
        "ABS": 5, "ADD": 5, "ADD_N": 1, "ARG_MAX": 3, "ARG_MIN": 3, "ASSIGN_VARIABLE": 1,
        "ATAN2": 1, "AVERAGE_POOL_2D": 3, "BATCH_MATMUL": 4, "BATCH_TO_SPACE_ND": 4,
        "BIDIRECTIONAL_SEQUENCE_LSTM": 3, "BIDIRECTIONAL_SEQUENCE_RNN": 3, "BITCAST": 1,
        "BITWISE_XOR": 1, "BROADCAST_ARGS": 1, "BROADCAST_TO": 3, "BUCKETIZE": 1,
        "CALL_ONCE": 1, "CAST": 5, "CEIL": 1, "COMPLEX_ABS": 1, "CONCATENATION": 4,
        "CONV_2D": 7, "CONV_3D": 1, "CONV_3D_TRANSPOSE": 1, "COS": 1, "CUMSUM": 1,
        "DENSIFY": 1, "DEPTHWISE_CONV_2D": 7, "DEPTH_TO_SPACE": 2, "DEQUANTIZE": 5,
        "DIV": 2, "DYNAMIC_UPDATE_SLICE": 1, "ELU": 1, "EMBEDDING_LOOKUP": 3,
        "EMBEDDING_LOOKUP_SPARSE": 1, "EQUAL": 4, "EXP": 2, "EXPAND_DIMS": 1,
        "FAKE_QUANT": 2, "FILL": 4, "FLOOR": 1, "FLOOR_DIV": 3, "FLOOR_MOD": 2,
        "FULLY_CONNECTED": 10, "GATHER": 6, "GATHER_ND": 4, "GELU": 2, "GREATER": 2,
        "GREATER_EQUAL": 3, "HARD_SWISH": 1, "HASHTABLE": 1, "HASHTABLE_FIND": 1,
        "HASHTABLE_IMPORT": 1, "HASHTABLE_LOOKUP": 1, "HASHTABLE_SIZE": 1, "IF": 1,
        "IMAG": 1, "L2_NORMALIZATION": 2, "L2_POOL_2D": 1, "LEAKY_RELU": 2, "LESS": 3,
        "LESS_EQUAL": 2, "LOCAL_RESPONSE_NORMALIZATION": 1, "LOG": 1, "LOGICAL_AND": 1,
        "LOGICAL_NOT": 1, "LOGICAL_OR": 1, "LOGISTIC": 3, "LOG_SOFTMAX": 2,
        "LSH_PROJECTION": 1, "LSTM": 4, "MATRIX_DIAG": 1, "MATRIX_SET_DIAG": 1,
        "MAXIMUM": 4, "MAX_POOL_2D": 3, "MEAN": 3, "MINIMUM": 4, "MIRROR_PAD": 3, "MUL": 7,
        "MULTINOMIAL": 1, "NEG": 1, "NON_MAX_SUPPRESSION_V4": 1,
        "NON_MAX_SUPPRESSION_V5": 1, "NOT_EQUAL": 3, "ONE_HOT": 1, "PACK": 4, "PAD": 4,
        "PADV2": 4, "POW": 1, "PRELU": 1, "QUANTIZE": 3, "RANDOM_STANDARD_NORMAL": 1,
        "RANDOM_UNIFORM": 1, "RANGE": 2, "RANK": 1, "READ_VARIABLE": 1, "REAL": 1,
        "REDUCE_ALL": 1, "REDUCE_ANY": 1, "REDUCE_MAX": 3, "REDUCE_MIN": 3,
        "REDUCE_PROD": 2, "RELU": 3, "RELU6": 3, "RELU_0_TO_1": 1, "RELU_N1_TO_1": 1,
        "RESHAPE": 1, "RESIZE_BILINEAR": 4, "RESIZE_NEAREST_NEIGHBOR": 4,
        "REVERSE_SEQUENCE": 1, "REVERSE_V2": 3, "RFFT2D": 1, "RIGHT_SHIFT": 1, "RNN": 3,
        "ROUND": 1, "RSQRT": 2, "SCATTER_ND": 1, "SEGMENT_SUM": 1, "SELECT": 4,
        "SELECT_V2": 2, "SHAPE": 1, "SIGN": 2, "SIN": 1, "SKIP_GRAM": 1, "SLICE": 6,
        "SOFTMAX": 3, "SPACE_TO_BATCH_ND": 4, "SPACE_TO_DEPTH": 2, "SPARSE_TO_DENSE": 3,
        "SPLIT": 4, "SPLIT_V": 2, "SQRT": 1, "SQUARE": 1, "SQUARED_DIFFERENCE": 2,
        "SQUEEZE": 2, "STRIDED_SLICE": 8, "SUB": 5, "SUM": 2, "SVDF": 4, "TANH": 3,
        "TILE": 3, "TOPK_V2": 3, "TRANSPOSE": 6, "TRANSPOSE_CONV": 4,
        "UNIDIRECTIONAL_SEQUENCE_LSTM": 4, "UNIDIRECTIONAL_SEQUENCE_RNN": 3, "UNIQUE": 1,
        "UNPACK": 4, "UNSORTED_SEGMENT_MAX": 1, "UNSORTED_SEGMENT_MIN": 1,
        "UNSORTED_SEGMENT_PROD": 1, "UNSORTED_SEGMENT_SUM": 1, "VAR_HANDLE": 1, "WHERE": 2,
        "WHILE": 1, "ZEROS_LIKE": 1,
    },
}

# Hybrid (dynamic-range) kernels a runtime registers but cannot prepare (measured).
KERNEL_GAPS: dict[str, dict[str, str]] = {
    "tflite-runtime-2.14": {
        "TRANSPOSE_CONV": "has no hybrid kernel for it: allocate_tensors fails",
    },
}

KNOWN_RUNTIMES: tuple[str, ...] = tuple(MAX_OP_VERSIONS)


def runtime_key(name: str, version: str) -> str | None:
    """The table key for a runtime package and version, or None when we know nothing.

    ``("tflite_runtime", "2.14.0")`` -> ``"tflite-runtime-2.14"``. TensorFlow 2.14
    (``tf.lite``) ships the same kernels. Older tflite-runtime / TensorFlow releases
    register a subset of 2.14's op versions, so they also get the 2.14 table: what it
    flags is broken there too (it may miss further problems). Anything newer, and
    ai-edge-litert, returns None: new runtimes are assumed to load what TF writes.
    """
    package = name.strip().lower().replace("_", "-")
    m = re.match(r"(\d+)\.(\d+)", version.strip())
    if not m:
        return None
    release = (int(m.group(1)), int(m.group(2)))
    if package in ("tflite-runtime", "tensorflow", "tensorflow-cpu", "tensorflow-gpu",
                   "tf-nightly", "tensorflow-lite") and release <= (2, 14):
        return "tflite-runtime-2.14"
    return None


def incompatible_ops(info: ModelInfo, runtime: str | None) -> list[str]:
    """Why ``runtime`` cannot run the model, one line per problem; [] when it can.

    e.g. ``["FULLY_CONNECTED v12 (tflite-runtime-2.14 supports up to v10)"]``.
    ``runtime`` is a key of ``KNOWN_RUNTIMES`` (None: unknown runtime, assumed fine).
    """
    if runtime is None:
        return []
    if runtime not in MAX_OP_VERSIONS:
        raise ValueError(f"unknown runtime {runtime!r}; known: {', '.join(KNOWN_RUNTIMES)}")
    table = MAX_OP_VERSIONS[runtime]
    problems = []
    for op in info.ops:
        if op.name.startswith("CUSTOM:"):
            continue
        top = table.get(op.name)
        if top is None:
            problems.append(f"{op.name} v{op.version} ({runtime} does not have this op)")
        elif op.version > top:
            problems.append(f"{op.name} v{op.version} ({runtime} supports up to v{top})")
    for name, why in KERNEL_GAPS.get(runtime, {}).items():
        if name in info.hybrid_ops:
            problems.append(f"{name} with int8 weights and float input ({runtime} {why})")
    return problems
