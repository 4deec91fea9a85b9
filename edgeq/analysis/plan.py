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
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeq.analysis.kinds import OutputPlan, get_kind, in_unit_interval, is_probability_rows
from edgeq.analysis.when import auto_gates, user_gate
from edgeq.errors import ConfigError, InputSetError


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
    entry = {"kind": kind.strip(), "_source": "--output"}
    for item in filter(None, (o.strip() for o in options.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--output {text!r}: option {item!r} is not key=value")
        entry[key.strip()] = value.strip()
    get_kind(entry["kind"])
    return name.strip(), entry


def read_spec_file(path: Path) -> OutputSpec:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the output spec ({exc.strerror or exc})") from None
    try:
        if Path(path).suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import tomllib

            data = tomllib.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{path}: not a valid output spec ({exc})") from None
    unknown = sorted(set(data) - {"outputs", "labels", "verdict"})
    if unknown or not isinstance(data.get("outputs", {}), dict):
        raise ConfigError(f"{path}: unknown key {unknown[0] if unknown else 'outputs'!r} "
                          "(a spec has 'outputs' tables, 'labels' and 'verdict')")
    kinds = {}
    for name, entry in data.get("outputs", {}).items():
        if not isinstance(entry, dict) or "kind" not in entry:
            raise ConfigError(f"{path}: [outputs.{name}] needs kind = \"...\"")
        get_kind(str(entry["kind"]))
        kinds[name] = dict(entry, _source=f"spec {path}")
    verdict = data.get("verdict")
    if verdict is not None and not (isinstance(verdict, list) and all(isinstance(v, str) for v in verdict)):
        raise ConfigError(f"{path}: verdict must be a list of output names")
    return OutputSpec(kinds=kinds, labels=data.get("labels"), verdict=verdict)


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


def resolve(name: str, outputs: list[OutputInfo], where: str) -> int:
    """An output by its report name, signature name, tensor name, index or ``output_K``."""
    for o in outputs:
        if name in (o.short, o.signature, o.name, str(o.index), f"output_{o.index}"):
            return o.index
    known = ", ".join(repr(o.short) for o in outputs)
    raise ConfigError(f"{where}: the model has no output {name!r} (outputs: {known})")


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


def _user_plans(outputs, spec) -> list[OutputPlan]:
    plans = []
    for name, entry in spec.kinds.items():
        source = entry.get("_source", "spec")
        index = resolve(name, outputs, f"{source} {name}")
        kind = get_kind(str(entry["kind"]))
        given = {k: v for k, v in entry.items() if k not in ("kind", "_source", "when")}
        members = {role: resolve(str(given[role]), outputs, f"{source} {name} {role}")
                   for role in kind.roles if role in given}
        plan = OutputPlan(outputs[index].name, index, kind.name, f"set by {source}", source,
                          kind.options(given, f"{source} {name}"), members)
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
        plans.append(OutputPlan(boxes.name, boxes.index, "detection", reason,
                                options=kind.options({}, boxes.short), members={"scores": scores.index}))
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
                      members={"scores": scores.index, "classes": classes.index, "count": counts[0].index})


def _auto_plan(o: OutputInfo, values: np.ndarray | None, labels_at: int | None, sole: bool) -> OutputPlan:
    kind, reason = _guess(o, values, labels_at, sole)
    plan = OutputPlan(o.name, o.index, kind, reason, options=get_kind(kind).options({}, o.short))
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
