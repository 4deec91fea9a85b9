"""Which kind is each output? Decided once, printed and stored with the reason.

The user's word comes first: a spec file (``--outputs-spec``, TOML or JSON) and
``--output NAME=KIND[:key=value,...]`` flags. Every other output is recognised from
its shape, the op that produces it (when the model is at hand) and, when the run's
outputs are available, its values. Nothing is guessed silently: each plan carries the
sentence that explains the choice.

Spec file::

    labels = "Identity"              # the output that y (int labels) belongs to
    verdict = ["Identity", "boxes"]  # outputs that drive the verdict (default: all judged)
    [outputs.boxes]
    kind = "detection"
    scores = "scores"                # other outputs a kind reads, by role
    iou = 0.5
    [outputs.landmarks]
    kind = "regression"
    when = "presence>0.5"            # judged only where the float model's presence > 0.5 (when.py)

Every output name a user gives (``--output``, ``--labels-for``, ``--verdict-outputs``, a spec
file, ``when``, a detection's ``scores=``, ``inputs search|worst --output``) goes through
``resolve``: an exact name (the report's, the signature's, the tensor's) wins over the index
alias ``output_K``; a name that fits several outputs is refused with the candidates.
A spec file is read only if it is a regular file of at most ``SPEC_MAX_BYTES``, as UTF-8.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeq.analysis.kinds import OutputPlan, get_kind, in_unit_interval, is_probability_rows
from edgeq.analysis.when import auto_gates, user_gate
from edgeq.errors import ConfigError, InputSetError

SPEC_MAX_BYTES = 1 << 20  # an output spec is a few lines; anything larger is not one (or is /dev/zero)
SPEC_KEYS = ("outputs", "labels", "verdict")
OPTION_VALUES = (str, int, float, bool)  # what a spec's option may be (TOML dates, tables, lists are not)


@dataclass
class OutputSpec:
    """What the user said about the outputs (all optional)."""

    kinds: dict = field(default_factory=dict)  # output name -> {"kind": ..., options..., "_source": ...}
    labels: str | None = None
    verdict: list | None = None

    @classmethod
    def from_sources(cls, spec_file: Path | None = None, flags: tuple = (), labels: str | None = None,
                     verdict: str | None = None) -> "OutputSpec":
        spec = read_spec_file(spec_file) if spec_file else cls()
        for flag in flags:
            name, entry = parse_output_flag(flag)
            before = spec.kinds.get(name)
            if before is not None and before.get("_flag") and _settings(before) != _settings(entry):
                raise ConfigError(f"--output {before['_flag']} and --output {entry['_flag']} both set output "
                                  f"{name!r}; give one")
            if before is not None and not before.get("_flag"):
                entry["_over"] = f"[outputs.{name}] of {before['_source']}"
            spec.kinds[name] = entry
        if labels:
            spec.labels = labels
        if verdict:
            spec.verdict = [v.strip() for v in verdict.split(",") if v.strip()]
        return spec


def parse_output_flag(text: str) -> tuple[str, dict]:
    """``NAME=KIND[:key=value,...]`` → (name, {"kind": KIND, key: value, ...})."""
    name, sep, rest = text.partition("=")
    if not sep or not name.strip() or not rest.strip():
        raise ConfigError(f"--output {text!r}: expected NAME=KIND[:key=value,...]")
    kind, _, options = rest.partition(":")
    entry = {"kind": kind.strip(), "_source": "--output", "_flag": text}
    for item in filter(None, (o.strip() for o in options.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--output {text!r}: option {item!r} is not key=value")
        key = key.strip()
        if key == "kind" or key.startswith("_"):
            raise ConfigError(f"--output {text!r}: {key!r} is not an option (the kind goes before the ':')")
        if key in entry:
            raise ConfigError(f"--output {text!r}: option {key!r} is given twice")
        entry[key] = value.strip()
    get_kind(entry["kind"])
    return name.strip(), entry


def _settings(entry: dict) -> dict:
    """What an entry says about its output (kind and options), without where it came from."""
    return {k: v for k, v in entry.items() if not k.startswith("_")}


def read_spec_text(path: Path) -> str:
    """The spec file's text: a regular file (not a FIFO, a device or a folder), at most
    SPEC_MAX_BYTES, UTF-8; anything else is one ConfigError naming the file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))  # a FIFO must not block
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the output spec ({exc.strerror or exc})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            what = "a folder" if stat.S_ISDIR(info.st_mode) else "a FIFO" if stat.S_ISFIFO(info.st_mode) else (
                "a device" if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode) else "a special file")
            raise ConfigError(f"{path}: the output spec is {what}, not a regular file")
        if info.st_size > SPEC_MAX_BYTES:
            raise ConfigError(f"{path}: the output spec is {info.st_size} bytes; at most {SPEC_MAX_BYTES} "
                              f"({SPEC_MAX_BYTES >> 20} MiB) are read")
        chunks, size = [], 0
        while size <= SPEC_MAX_BYTES:  # the file may grow while it is read: stop past the limit
            chunk = os.read(fd, SPEC_MAX_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the output spec ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    if size > SPEC_MAX_BYTES:
        raise ConfigError(f"{path}: the output spec is larger than {SPEC_MAX_BYTES} bytes "
                          f"({SPEC_MAX_BYTES >> 20} MiB), the most that is read")
    data = b"".join(chunks)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: the output spec is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                          f"{exc.start})") from None


def read_spec_file(path: Path) -> OutputSpec:
    text = read_spec_text(path)
    json_file = Path(path).suffix.lower() == ".json"
    try:
        if json_file:
            data = json.loads(text)
        else:
            import tomllib

            data = tomllib.loads(text)
    except RecursionError:
        raise ConfigError(f"{path}: not a valid output spec (nested too deeply)") from None
    except ValueError as exc:
        problem = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ConfigError(f"{path}: not a valid output spec ({'JSON' if json_file else 'TOML'}: {problem})") from None
    return _spec_from_data(data, path)


def _spec_from_data(data, path) -> OutputSpec:
    """The spec's structure checked: tables where tables belong, names as text, options as single values."""
    def bad(problem: str):
        return ConfigError(f"{path}: {problem}")

    if not isinstance(data, dict):
        raise bad(f"an output spec is a table (outputs, labels, verdict), not {_what(data)}")
    unknown = sorted(set(data) - set(SPEC_KEYS))
    if unknown:
        raise bad(f"unknown key {unknown[0]!r} (a spec has 'outputs' tables, 'labels' and 'verdict')")
    outputs = data.get("outputs", {})
    if not isinstance(outputs, dict):
        raise bad(f"'outputs' must be a table of [outputs.NAME] tables, not {_what(outputs)}")
    kinds = {}
    for name, entry in outputs.items():
        if not isinstance(entry, dict) or "kind" not in entry:
            raise bad(f"[outputs.{name}] needs kind = \"...\"")
        if not name.strip():
            raise bad("[outputs.\"\"]: an output name may not be empty")
        for key, value in entry.items():
            if key.startswith("_"):
                raise bad(f"[outputs.{name}]: {key!r} is not an option")
            if key in ("kind", "when") or key in _roles(entry.get("kind")):
                if not isinstance(value, str):
                    what = "a kind name" if key == "kind" else "an output name" if key != "when" else "OUTPUT>NUMBER"
                    raise bad(f"[outputs.{name}] {key} must be text ({what}), not {_what(value)}")
            elif not isinstance(value, OPTION_VALUES):
                raise bad(f"[outputs.{name}] {key} must be a single value (a number, true/false or text), "
                          f"not {_what(value)}")
        get_kind(entry["kind"])
        kinds[name] = dict(entry, _source=f"spec {path}")
    labels = data.get("labels")
    if labels is not None and not (isinstance(labels, str) and labels.strip()):
        raise bad(f"labels must be an output name (text), not {_what(labels)}")
    verdict = data.get("verdict")
    if verdict is not None and not (isinstance(verdict, list) and all(isinstance(v, str) for v in verdict)):
        raise bad("verdict must be a list of output names")
    return OutputSpec(kinds=kinds, labels=labels, verdict=verdict)


def _roles(kind) -> tuple:
    try:
        return get_kind(kind).roles if isinstance(kind, str) else ()
    except ConfigError:
        return ()


def _what(value) -> str:
    """A value's type in a spec's words (TOML's, which JSON's mirror)."""
    if isinstance(value, bool):
        return f"true/false ({str(value).lower()})"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"[:80]
    if isinstance(value, str):
        return f"text ({value!r})"[:80]
    return f"a {type(value).__name__}"


@dataclass
class OutputInfo:
    """What is known of one output before any judging: name, sample shape, producer op."""

    index: int
    name: str  # the tensor's name
    shape: tuple  # one sample's shape (no batch axis)
    producer: str = ""  # the op computing it (looking through reshapes), when the model is at hand
    signature: str = ""  # its name in the model's signature (what Keras called it)
    label: str = ""  # the unique name reports use; set by ``describe_outputs``

    @property
    def short(self) -> str:
        return self.label or self.signature or self.name


def describe_outputs(names: list[str], shapes: list[tuple], info=None) -> list[OutputInfo]:
    """OutputInfo per output, with producers and signature names from a ModelInfo when given.

    Reports name an output by its signature name, else its tensor name without the
    ``:0``/``serving_default_`` decoration, else (when that is not unique) in full.
    """
    from edgeq.inputs.inputset import clean_tensor_name

    producers = list(getattr(info, "output_producers", ()) or [])
    signatures = list(getattr(info, "output_signature_names", ()) or [])
    outputs = [OutputInfo(k, name, tuple(shape), producers[k] if k < len(producers) else "",
                          signatures[k] if k < len(signatures) else "") for k, (name, shape) in enumerate(zip(names, shapes))]
    short = [o.signature or clean_tensor_name(o.name) for o in outputs]
    for o, label in zip(outputs, short):
        o.label = label if short.count(label) == 1 else o.name
    if len({o.label for o in outputs}) < len(outputs):
        for o in outputs:
            o.label = f"output_{o.index}"
    return outputs


def _exact_names(o: OutputInfo) -> set[str]:
    from edgeq.inputs.inputset import clean_tensor_name

    return {n for n in (o.label, o.signature, o.name, clean_tensor_name(o.name)) if n}


def _aliases(o: OutputInfo) -> tuple[str, str]:
    return str(o.index), f"output_{o.index}"


def _matches(name: str, outputs: list[OutputInfo]) -> list[OutputInfo]:
    exact = [o for o in outputs if name in _exact_names(o)]
    return exact or [o for o in outputs if name in _aliases(o)]


def unique_name(o: OutputInfo, outputs: list[OutputInfo]) -> str:
    """A name that ``resolve`` takes to this output and no other (its report name when it can)."""
    for name in (o.short, o.signature, o.name, *_aliases(o)):
        if name and [m.index for m in _matches(name, outputs)] == [o.index]:
            return name
    return str(o.index)


def resolve(name: str, outputs: list[OutputInfo], where: str) -> int:
    """The one way a user's output name becomes an output (every flag, spec file and command).

    First the exact names: the report's name, the signature name (what Keras called it), the
    tensor name and the tensor name without ``:0``/``serving_default_``. Only when no output has
    the name exactly, the index aliases ``K`` and ``output_K`` (K-th in the model's output
    order): a Keras dict model's signature names ``output_0…`` follow another order than its
    tensors, and ``output_0`` must be the output the report shows as ``output_0``. A name
    that fits several outputs is refused with the candidates, each by a name that fits it alone.
    """
    text = str(name).strip()
    found = _matches(text, outputs)
    if len(found) == 1:
        return found[0].index
    if found:
        candidates = ", ".join(f"{unique_name(o, outputs)!r} ({o.name})" for o in found)
        raise ConfigError(f"{where}: {text!r} fits {len(found)} outputs: {candidates}; name one of them")
    known = ", ".join(repr(unique_name(o, outputs)) for o in outputs)
    raise ConfigError(f"{where}: the model has no output {text!r} (outputs: {known})")


def plan_outputs(outputs: list[OutputInfo], spec: OutputSpec | None, has_labels: bool,
                 values: list[np.ndarray] | None = None) -> list[OutputPlan]:
    """One plan per judged output (detection parts are members of their boxes' plan)."""
    spec = spec or OutputSpec()
    plans, taken = _user_plans(outputs, spec), set()
    for plan in plans:
        taken |= {plan.index, *plan.members.values()}
    for plan in _detection_groups(outputs, taken):
        plans.append(plan)
        taken |= {plan.index, *plan.members.values()}
    judged = [o for o in outputs if o.index not in taken]
    labels_at = resolve(spec.labels, outputs, "labels") if spec.labels else None
    for o in judged:
        plans.append(_auto_plan(o, values[o.index] if values else None, labels_at,
                                sole=len(outputs) == 1))
    plans.sort(key=lambda p: p.index)
    auto_gates(plans, outputs)
    _assign_labels(plans, outputs, labels_at, has_labels)
    _choose_verdict_outputs(plans, outputs, spec)
    return plans


def _said_where(name: str, entry: dict) -> str:
    """Where the user said it, as the error names it: the flag as given, or the spec file's table."""
    if entry.get("_flag"):
        return f"--output {entry['_flag']}"
    return f"[outputs.{name}] of {entry.get('_source', 'spec')}"


def _one_entry_per_output(outputs, spec) -> list[tuple[str, dict, int]]:
    """(name, entry, index) per output the user set; two settings of one output (by any two of
    its names) are refused naming both, except that a --output flag overrides the spec file."""
    by_index: dict[int, list[tuple[str, dict]]] = {}
    for name, entry in spec.kinds.items():
        index = resolve(name, outputs, f"{entry.get('_source', 'spec')} {name}")
        by_index.setdefault(index, []).append((name, entry))
    chosen = []
    for index, entries in by_index.items():
        flags = [(n, e) for n, e in entries if e.get("_flag")]
        for group in (flags, [(n, e) for n, e in entries if not e.get("_flag")]):
            differ = [(n, e) for n, e in group[1:] if _settings(e) != _settings(group[0][1])]
            if differ:
                (a, first), (b, second) = group[0], differ[0]
                raise ConfigError(f"{_said_where(a, first)} and {_said_where(b, second)} both set output "
                                  f"{outputs[index].short!r}; give one")
        name, entry = flags[-1] if flags else entries[0]
        others = [_said_where(n, e) for n, e in entries if not e.get("_flag")]
        if flags and others:
            entry = dict(entry, _over=others[0])
        chosen.append((name, entry, index))
    return chosen


def _user_plans(outputs, spec) -> list[OutputPlan]:
    plans, owner = [], {}
    for name, entry, index in _one_entry_per_output(outputs, spec):
        source = entry.get("_source", "spec")
        kind = get_kind(str(entry["kind"]))
        given = {k: v for k, v in entry.items() if k not in ("kind", "when") and not k.startswith("_")}
        members = {role: resolve(str(given[role]), outputs, f"{source} {name} {role}")
                   for role in kind.roles if role in given}
        for role, i in {"output": index, **members}.items():
            if i in owner:
                raise ConfigError(f"{_said_where(name, entry)}: output {outputs[i].short!r} is already "
                                  f"{owner[i]}; an output is judged once")
            owner[i] = f"set by {_said_where(name, entry)}" if role == "output" else (
                f"the {role} of {outputs[index].short!r}")
        over = f" (over {entry['_over']})" if entry.get("_over") else ""
        plan = OutputPlan(outputs[index].name, index, kind.name, f"set by {source}{over}", source,
                          kind.options(given, f"{source} {name}"), members, label=outputs[index].short)
        if entry.get("when") is not None:
            plan.when = user_gate(str(entry["when"]), index, outputs, resolve, f"{source} {name}")
        kind.check(plan, _shapes(plan, outputs))
        plans.append(plan)
    return plans


def _shapes(plan: OutputPlan, outputs: list[OutputInfo]) -> dict[str, tuple]:
    shapes = {"output": outputs[plan.index].shape}
    shapes.update({role: outputs[i].shape for role, i in plan.members.items()})
    return shapes


def _squeezed(shape: tuple) -> tuple:
    return tuple(d for d in shape if d != 1) or (1,)


def _detection_groups(outputs: list[OutputInfo], taken: set) -> list[OutputPlan]:
    free = [o for o in outputs if o.index not in taken]
    post = _post_nms_group(free)
    if post:
        return [post]
    plans = []
    for boxes in free:
        if len(boxes.shape) != 2 or boxes.shape[1] < 4 or boxes.shape[0] < 8:
            continue
        partner = [o for o in free if o is not boxes and o.index not in taken and o.shape[:1] == boxes.shape[:1]
                   and (len(o.shape) == 1 or (len(o.shape) == 2 and o.shape[1] < boxes.shape[1]))]
        if len(partner) != 1:
            continue
        scores = partner[0]
        kind = get_kind("detection")
        reason = (f"{boxes.shape[0]} rows of {boxes.shape[1]} values beside {scores.short!r} with one score per row: "
                  "anchor boxes and their scores (how they are judged: options.anchors_reason)")
        plans.append(OutputPlan(boxes.name, boxes.index, "detection", reason, options=kind.options({}, boxes.short),
                                members={"scores": scores.index}, label=boxes.short))
        taken |= {boxes.index, scores.index}
    return plans


def _post_nms_group(free: list[OutputInfo]) -> OutputPlan | None:
    """TFLite_Detection_PostProcess: boxes (N, 4), classes (N,), scores (N,), count."""
    boxes = [o for o in free if len(o.shape) == 2 and o.shape[1] == 4]
    if len(boxes) != 1:
        return None
    n = boxes[0].shape[0]
    per_box = [o for o in free if o.shape == (n,)]
    counts = [o for o in free if o.shape in ((), (1,))]
    if len(per_box) != 2 or len(counts) != 1:
        return None
    named = sorted(per_box, key=lambda o: ("class" not in o.name.lower(), o.index))
    classes, scores = named[0], named[1]
    if not any("class" in o.name.lower() or "score" in o.name.lower() for o in per_box):
        classes, scores = sorted(per_box, key=lambda o: o.index)  # the post-processing op's order
    kind = get_kind("detection")
    reason = (f"boxes ({n}, 4) with per-box classes and scores and a count: post-NMS detections "
              "(TFLite_Detection_PostProcess layout), matched by IoU")
    return OutputPlan(boxes[0].name, boxes[0].index, "detection", reason,
                      options=kind.options({"layout": "post-nms"}, boxes[0].short),
                      members={"scores": scores.index, "classes": classes.index, "count": counts[0].index},
                      label=boxes[0].short)


def _auto_plan(o: OutputInfo, values: np.ndarray | None, labels_at: int | None, sole: bool) -> OutputPlan:
    kind, reason = _guess(o, values, labels_at, sole)
    plan = OutputPlan(o.name, o.index, kind, reason, options=get_kind(kind).options({}, o.short), label=o.short)
    get_kind(kind).check(plan, {"output": o.shape})
    return plan


def _guess(o: OutputInfo, values, labels_at, sole) -> tuple[str, str]:
    shape, squeezed = o.shape, _squeezed(o.shape)
    made = f" made by {o.producer}" if o.producer else ""
    if _image_like(shape):
        return "segmentation", f"sample shape {list(shape)} is an image-sized map: a class or mask per pixel"
    if len(squeezed) > 1:
        return "regression", f"sample shape {list(shape)}{made}: numbers in their own units"
    units = squeezed[0]
    if units == 1:
        return "classification", f"one value per sample{made}: a binary score, thresholded"
    if o.producer == "SOFTMAX":
        return "classification", f"{units} values per sample made by SOFTMAX: class probabilities"
    if o.producer == "LOGISTIC":
        return "multilabel", f"{units} values per sample made by LOGISTIC: independent sigmoid scores"
    if values is not None and is_probability_rows(values):
        return "classification", f"{units} values per sample that sum to 1: class probabilities"
    if values is not None and in_unit_interval(values) and not o.producer:
        return "multilabel", f"{units} values per sample in [0, 1] that do not sum to 1: independent scores"
    if labels_at == o.index:
        return "classification", f"{units} values per sample{made}, and the labels y belong to it: class scores"
    if sole:
        return "classification", f"{units} values per sample{made}, the model's only output: class scores (logits)"
    return "regression", f"{units} values per sample{made}, not a distribution: numbers in their own units"


def _image_like(shape: tuple) -> bool:
    """(H, W) or (H, W, C) with a roughly square map and few channels: a mask, not a table of rows."""
    if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] > 64):
        return False
    h, w = shape[:2]
    smallest = 16 if len(shape) == 2 else 8
    return min(h, w) >= smallest and max(h, w) <= 8 * min(h, w)


def _assign_labels(plans, outputs, labels_at, has_labels) -> None:
    if not has_labels:
        return
    if labels_at is not None:
        plan = next((p for p in plans if p.index == labels_at), None)
        if plan is None or plan.kind != "classification":
            what = "part of a detection" if plan is None else f"judged as {plan.kind}"
            raise ConfigError(f"labels: y can only belong to a classification output; "
                              f"{outputs[labels_at].short!r} is {what}")
        plan.labels = True
        return
    candidates = [p for p in plans if p.kind == "classification"]
    candidates.sort(key=lambda p: (_squeezed(outputs[p.index].shape) == (1,), p.index))
    if candidates:
        candidates[0].labels = True


def _choose_verdict_outputs(plans, outputs, spec) -> None:
    if spec.verdict is not None:
        chosen = {resolve(name, outputs, "verdict outputs") for name in spec.verdict}
        grouped = {p.index: p for p in plans}
        for index in chosen:
            if index not in grouped:
                raise ConfigError(f"verdict outputs: {outputs[index].short!r} is part of another output's "
                                  "detection; name the boxes output instead")
        for p in plans:
            p.drives_verdict = p.index in chosen and p.kind != "ignore"
    else:
        for p in plans:
            p.drives_verdict = p.kind != "ignore"
    if not any(p.drives_verdict for p in plans):
        raise ConfigError("no output is left to decide the verdict (all are ignored or unselected)")


class LabelsDoNotFit(InputSetError, ConfigError):
    """Labels y an output cannot produce. It names the file and ``[y]`` like any input-set
    error, and is a ConfigError too: the fault may be the output chosen by ``--labels-for``."""


def check_labels(plans: list[OutputPlan], outputs: list[OutputInfo], labels: np.ndarray, where: str) -> None:
    """Labels must be integer class indices of the output they belong to.

    A label the output can never produce (10 for 10 classes, -1, 1.5) makes every
    sample "wrong" for both models alike: a 0 % drop and a "robust" verdict that
    tested nothing. ``where`` names the file the labels came from.
    """
    plan = next((p for p in plans if p.labels), None)
    if plan is None:
        return
    classes = get_kind("classification").classes(outputs[plan.index].shape)
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise LabelsDoNotFit(where, f"labels must be integer class indices, got {labels.dtype}", array="y")
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        bad = int(np.count_nonzero((labels < 0) | (labels >= classes)))
        raise LabelsDoNotFit(where, f"{bad} label(s) outside 0..{classes - 1} (they run from {labels.min()} to "
                                   f"{labels.max()}), but output {outputs[plan.index].short!r} has {classes} "
                                   "classes", array="y")


def check_model_labels(info, labels: np.ndarray | None, where: str, spec: OutputSpec | None = None) -> None:
    """The output plan and the labels judged against a ModelInfo, before any device time.

    Shared by ``evaluate`` and ``inputs risky|check --model`` so a set whose labels
    cannot fit the model is refused wherever it is first seen.
    """
    outputs = describe_outputs([t.name for t in info.outputs], [t.shape[1:] for t in info.outputs], info)
    plans = plan_outputs(outputs, spec, labels is not None)
    if labels is not None:
        check_labels(plans, outputs, labels, where)
