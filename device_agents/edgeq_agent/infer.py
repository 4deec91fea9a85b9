"""Batch inference (the infer op): both models over a batch, kept loaded between requests.

The wire rules (dtypes, INFER_MAX_BYTES, how an array travels) are in wire.py.
"""

from .errors import AgentFailure
from .inputsets import check_expected_sha, check_inputs
from .npz import npz_members
from .runtime import BatchInvoker, open_interpreter, tensor_summary
from .wire import INFER_MAX_BYTES, decode_array, encode_array, row_bytes


class InferPair(object):
    """A float and a quantized interpreter with one input signature, and what they were loaded from."""

    def __init__(self, key, runtime, request, options):
        self.key = key
        self.invokers = []
        for role in ("float", "quant"):
            path = request.get(role)
            if not isinstance(path, str) or not path:
                raise AgentFailure("BadJob", "infer needs %s: the path of the %s model on the device"
                                   % (role, "float" if role == "float" else "quantized"))
            check_expected_sha(path, request.get(role + "_sha256"))
            interpreter = open_interpreter(runtime, path, options["threads"], options["resolver"])
            self.invokers.append(BatchInvoker(interpreter, interpreter.get_input_details(),
                                              interpreter.get_output_details()))
        signatures = [[(d["dtype"], d["shape_signature"]) for d in tensor_summary(i.in_details)]
                      for i in self.invokers]
        if signatures[0] != signatures[1]:
            raise AgentFailure("BadJob", "the float and quantized models have different inputs: %s vs %s"
                               % (signatures[0], signatures[1]))
        self.in_details = self.invokers[0].in_details
        total = 0
        for invoker in self.invokers:
            for detail in invoker.out_details:
                total += row_bytes(detail.get("shape_signature", detail["shape"]), detail["dtype"])
        self.out_row_bytes = total

    def summary(self):
        return tensor_summary(self.in_details), [tensor_summary(i.out_details) for i in self.invokers]

    def infer(self, batches):
        rows = len(batches[0])
        if rows * self.out_row_bytes > INFER_MAX_BYTES:
            raise AgentFailure("BadInputs", "a batch of %d rows gives %d bytes of outputs; at most %d per infer "
                               "request (%d rows)" % (rows, rows * self.out_row_bytes, INFER_MAX_BYTES,
                                                      INFER_MAX_BYTES // max(self.out_row_bytes, 1)))
        outputs, invoke_ns = {}, {}
        for role, invoker in zip(("float", "quant"), self.invokers):
            invoke_ns[role] = invoker.invoke_timed(batches)
            outputs[role] = invoker.read_outputs()
        size = sum(a.nbytes for role in outputs for a in outputs[role])
        if size > INFER_MAX_BYTES:  # outputs of a dynamic shape can outgrow the estimate above
            raise AgentFailure("BadInputs", "a batch of %d rows gave %d bytes of outputs; at most %d per infer "
                               "request: send fewer rows" % (rows, size, INFER_MAX_BYTES))
        answer = dict((role, [encode_array(a) for a in arrays]) for role, arrays in outputs.items())
        answer.update(rows=rows, invoke_ns=invoke_ns)
        return answer


class _InlineArray(object):
    """An inline array seen the way check_inputs sees an .npz member."""

    def __init__(self, array):
        self.array, self.shape, self.dtype, self.rows = array, array.shape, array.dtype, int(array.shape[0])


def infer_inputs(request, details):
    """The request's input arrays, decoded and checked against the model's inputs (BadInputs names the problem)."""
    if request.get("npz") is not None:
        return _npz_inputs(request, details)
    sent = request.get("inputs")
    if not isinstance(sent, list) or len(sent) != len(details):
        raise AgentFailure("BadInputs", "infer needs inputs: a list of %d array(s) {dtype, shape, data}, one per "
                           "model input" % len(details))
    arrays, total = [], 0
    for k, item in enumerate(sent):
        array = decode_array(item, k, INFER_MAX_BYTES - total)
        total += array.nbytes
        arrays.append(array)
    return _checked(arrays, ["inputs[%d]" % k for k in range(len(arrays))], details)


def _npz_inputs(request, details):
    path, names, rows = request.get("npz"), request.get("input_arrays"), request.get("rows")
    if not isinstance(names, list) or len(names) != len(details):
        raise AgentFailure("BadInputs", "infer from an .npz needs input_arrays: %d name(s)" % len(details))
    if (not isinstance(rows, list) or len(rows) != 2 or any(isinstance(r, bool) or not isinstance(r, int) for r in rows)
            or not 0 <= rows[0] < rows[1]):
        raise AgentFailure("BadInputs", "infer from an .npz needs rows: [lo, hi] with 0 <= lo < hi")
    check_expected_sha(path, request.get("npz_sha256"))
    members = npz_members(path)
    missing = [n for n in names if n not in members]
    if missing:
        raise AgentFailure("BadInputs", "%s has no array named %s" % (path, ", ".join(missing)))
    chosen = [members[n] for n in names]
    check_inputs(chosen, names, details)
    if rows[1] > chosen[0].rows:
        raise AgentFailure("BadInputs", "rows %d:%d are past the %d samples of %s" % (rows[0], rows[1],
                                                                                      chosen[0].rows, path))
    need = sum((rows[1] - rows[0]) * m.row_items * m.dtype.itemsize for m in chosen)
    if need > INFER_MAX_BYTES:
        raise AgentFailure("BadInputs", "rows %d:%d are %d bytes of inputs; at most %d per infer request"
                           % (rows[0], rows[1], need, INFER_MAX_BYTES))
    return [m.read(rows[0], rows[1]) for m in chosen]


def _checked(arrays, names, details):
    check_inputs([_InlineArray(a) for a in arrays], names, details)
    return arrays
