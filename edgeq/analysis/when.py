"""Outputs that mean something only when another output says so.

A hand-landmark model returns landmarks for every input, but an application reads them
only where the model's own presence score says a hand is there; elsewhere they are
noise, and quantization "failing" on them costs a user nothing. Such an output is
judged only on the samples where the *float* model's gate is open (``when``), so both
models are judged on the same samples.

Given as ``--output NAME=KIND:when=OTHER>0.5`` (or ``when = "OTHER>0.5"`` in a spec
file; ``>``, ``>=``, ``<``, ``<=``). Recognised automatically when the model makes it
clear: a single value beside landmark outputs (several numbers, judged as regression)
is their presence score — made by LOGISTIC, a probability (open above 0.5), otherwise a
logit (open above 0, the same decision: MediaPipe's face landmark model gives its face
flag so). With several, sigmoid ones come first, then the one whose name says so
(presence, score, flag, conf), then the first (MediaPipe's order: presence, then
handedness); the others are gated with the landmarks. Every choice is printed with its
reason.
"""

from __future__ import annotations

import re

import numpy as np

from edgeq.errors import ConfigError
from edgeq.inputs.npz import row_blocks

OPS = {">": np.greater, ">=": np.greater_equal, "<": np.less, "<=": np.less_equal}
PRESENCE_WORDS = re.compile(r"presen|score|flag|conf|visib|detect")
_RULE = re.compile(r"^\s*(?P<name>.+?)\s*(?P<op>>=|<=|>|<)\s*(?P<value>[-+0-9.eE]+|inf)\s*$")


def parse_when(text: str, where: str) -> tuple[str, str, float]:
    """``NAME>0.5`` → (name, op, threshold)."""
    found = _RULE.match(str(text))
    if not found:
        raise ConfigError(f"{where}: when={text!r} is not OUTPUT>NUMBER (or >=, <, <=)")
    try:
        value = float(found["value"])
    except ValueError:
        raise ConfigError(f"{where}: when={text!r}: {found['value']!r} is not a number") from None
    if not np.isfinite(value):
        raise ConfigError(f"{where}: when={text!r} needs a finite threshold")
    return found["name"], found["op"], value


def rule_text(when: dict) -> str:
    return f"{when['output']}{when['op']}{when['threshold']:g}"


def auto_gates(plans: list, outputs: list) -> None:
    """Gate landmark outputs (and the other single scores) by a lone sigmoid presence score."""
    scores = [o for o in outputs if int(np.prod(o.shape)) == 1]
    landmarks = [p for p in plans if p.kind == "regression" and int(np.prod(outputs[p.index].shape)) > 1]
    if not scores or not landmarks:
        return
    sigmoid = [o for o in scores if o.producer == "LOGISTIC"]
    named = [o for o in (sigmoid or scores) if PRESENCE_WORDS.search(f"{o.short} {o.name}".lower())]
    gate = (named or sigmoid or scores)[0]
    threshold = 0.5 if gate.producer == "LOGISTIC" else 0.0
    what = "sigmoid output" if gate.producer == "LOGISTIC" else "value (a logit: open above 0, sigmoid 0.5)"
    which = (f"a single {what}" if len(scores) == 1 else
             f"the single {what} named so, of {len(scores)} single values" if named else
             f"the first single {what} of {len(scores)} (MediaPipe's order: presence first)")
    reason = (f"judged only where the float model's {gate.short!r} > {threshold:g}: {which} beside landmark outputs "
              "is their presence score (set another with --output NAME=KIND:when=OTHER>T)")
    gated_scores = {o.index for o in scores if o is not gate}
    for plan in plans:
        if plan.when is None and plan.source == "auto" and plan.index != gate.index and (
                plan in landmarks or plan.index in gated_scores):
            plan.when = {"index": gate.index, "output": gate.short, "op": ">", "threshold": threshold,
                         "source": "auto", "reason": reason}


def user_gate(text: str, index: int, outputs: list, resolve, where: str) -> dict:
    """A ``when`` the user gave, resolved to an output index."""
    name, op, value = parse_when(text, where)
    gate = resolve(name, outputs, f"{where} when")
    if gate == index:
        raise ConfigError(f"{where}: when={text!r} names the output itself")
    if int(np.prod(outputs[gate].shape)) != 1:
        raise ConfigError(f"{where}: when={text!r}: output {outputs[gate].short!r} has "
                          f"{int(np.prod(outputs[gate].shape))} values per sample; a gate is one score")
    return {"index": gate, "output": outputs[gate].short, "op": op, "threshold": value, "source": where,
            "reason": f"judged only where the float model's {outputs[gate].short}{op}{value:g} (set by {where})"}


def open_mask(when: dict | None, ref: list) -> np.ndarray | None:
    """Per sample: the float model's gate is open (None: the output has no gate)."""
    if when is None:
        return None
    gate = ref[when["index"]]
    values = np.concatenate([np.asarray(b, dtype=np.float64).reshape(len(b), -1)[:, 0] for b in row_blocks(gate)])
    return OPS[when["op"]](values, when["threshold"])
