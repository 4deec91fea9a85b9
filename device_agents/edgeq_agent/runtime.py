"""The TFLite runtime the device has, its interpreters, and invoking them a batch at a time.

The runtime is the first of ai_edge_litert, tflite_runtime and tensorflow.lite that imports
(EDGEQ_AGENT_RUNTIME, or a request's "runtime", forces one). The host imports ``import_runtime``,
``open_interpreter`` and ``BatchInvoker`` too, so its own evaluator is the agent's code.
"""

import os
import time

from .wire import dtype_name, fixed_batch
from .errors import AgentFailure

RESOLVERS = ("AUTO", "BUILTIN", "BUILTIN_REF", "BUILTIN_WITHOUT_DEFAULT_DELEGATES")
RUNTIME_MODULES = (
    ("ai_edge_litert", "ai_edge_litert.interpreter"),
    ("tflite_runtime", "tflite_runtime.interpreter"),
    ("tensorflow", "tensorflow.lite"),
)


def import_runtime(preferred=None):
    """Return (name, version, interpreter_module); EDGEQ_AGENT_RUNTIME forces one."""
    import importlib

    wanted = preferred or os.environ.get("EDGEQ_AGENT_RUNTIME")
    tried = []
    for name, module_name in RUNTIME_MODULES:
        if wanted and name != wanted:
            continue
        try:
            top = importlib.import_module(name)
            module = _submodule(top, module_name)
        except Exception as exc:  # any import failure means "not usable here"
            tried.append("%s (%s)" % (name, exc.__class__.__name__))
            continue
        version = getattr(top, "__version__", None) or _dist_version(name)
        return name, version, module
    raise AgentFailure("NoRuntime", "no TFLite runtime importable: tried " + ", ".join(tried))


def _submodule(top, dotted):
    """tensorflow.lite is an attribute of the lazy tensorflow module, not importable itself."""
    import importlib

    module = top
    for part in dotted.split(".")[1:]:
        module = getattr(module, part, None) or importlib.import_module(module.__name__ + "." + part)
    return module


def _dist_version(name):
    try:
        from importlib import metadata

        return metadata.version(name.replace("_", "-"))
    except Exception:
        return "unknown"


def open_interpreter(runtime, model_path, threads, resolver):
    """Build an interpreter, mapping load failures to IncompatibleRuntime/ModelLoad."""
    if resolver not in RESOLVERS:
        raise AgentFailure("BadJob", "unknown resolver %r (choose from %s)" % (resolver, ", ".join(RESOLVERS)))
    module = runtime[2]
    kwargs = {"model_path": model_path, "num_threads": int(threads)}
    resolver_enum = _resolver_enum(module)
    if resolver_enum is not None:
        kwargs["experimental_op_resolver_type"] = getattr(resolver_enum, resolver)
    elif resolver != "AUTO":
        raise AgentFailure("BadJob", "runtime %s has no op resolver choice" % runtime[0])
    interpreter_class = getattr(module, "Interpreter")
    try:
        interpreter = interpreter_class(**kwargs)
        interpreter.allocate_tensors()
    except Exception as exc:
        text = str(exc).strip().splitlines()
        message = " ".join(line.strip() for line in text if line.strip())[-400:]
        kind = "IncompatibleRuntime" if _looks_incompatible(message) else "ModelLoad"
        raise AgentFailure(kind, "%s %s cannot load %s: %s" % (runtime[0], runtime[1], os.path.basename(model_path), message))
    return interpreter


def _resolver_enum(module):
    found = getattr(module, "OpResolverType", None)
    if found is None and hasattr(module, "experimental"):
        found = getattr(module.experimental, "OpResolverType", None)
    return found


def _looks_incompatible(message):
    lowered = message.lower()
    return "didn't find op" in lowered or "version" in lowered or "unsupported" in lowered


def tensor_summary(details):
    return [
        {"name": d["name"], "shape": [int(s) for s in d["shape"]],
         "shape_signature": [int(s) for s in d.get("shape_signature", d["shape"])],
         "dtype": dtype_name(d["dtype"])}
        for d in details
    ]


class BatchInvoker:
    """Resizes inputs only when the batch size changes, and times invoke() alone.

    A model whose inputs carry a fixed batch of 1 in their shape signature (MediaPipe's, and
    many exported with a static shape) cannot be resized to a batch: its reshapes hard-code
    the 1, and a resized invoke() returns outputs of the wrong shape without any error. Such
    a model is invoked sample by sample and its outputs stacked (``fixed_batch``).
    """

    def __init__(self, interpreter, in_details, out_details):
        self.interpreter = interpreter
        self.in_details = in_details
        self.out_details = out_details
        self.current = [tuple(int(s) for s in d["shape"]) for d in in_details]
        self.last_start_ns = 0
        self.fixed_batch = any(fixed_batch(d["shape"], d.get("shape_signature")) for d in in_details)
        self._stacked = None

    def invoke_timed(self, batches):
        rows = len(batches[0]) if batches else 1
        if self.fixed_batch and rows != 1:
            return self._one_at_a_time(batches, rows)
        self._stacked = None
        interpreter = self.interpreter
        wanted = [tuple(b.shape) for b in batches]
        if wanted != self.current:
            for detail, shape in zip(self.in_details, wanted):
                interpreter.resize_tensor_input(detail["index"], list(shape))
            interpreter.allocate_tensors()
            self.current = wanted
        for detail, array in zip(self.in_details, batches):
            interpreter.set_tensor(detail["index"], array)
        start = time.perf_counter_ns()
        interpreter.invoke()
        end = time.perf_counter_ns()
        self.last_start_ns = start
        return end - start

    def _one_at_a_time(self, batches, rows):
        import numpy as np

        total, parts = 0, []
        for i in range(rows):
            total += self.invoke_timed([b[i:i + 1] for b in batches])
            parts.append([np.array(a) for a in self.read_outputs()])
        self._stacked = [np.concatenate([p[k] for p in parts]) for k in range(len(self.out_details))]
        return total

    def read_outputs(self):
        if self._stacked is not None:
            return self._stacked
        return [self.interpreter.get_tensor(d["index"]) for d in self.out_details]
