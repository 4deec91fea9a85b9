"""Issue 23: what a user says about the outputs is taken at its word, or refused in one line.

1. Output names resolve to the output the report shows under that name. A Keras model with
   dict outputs named ``output_0…output_4`` keeps those names only in its signature; its
   tensors (``StatefulPartitionedCall_1:K``) come in another order, so the index alias
   ``output_K`` (K-th output) and the signature name ``output_K`` are different outputs.
   ``--labels-for``, ``--verdict-outputs``, ``--output`` and ``inputs search|worst --output``
   all go through ``plan.resolve``, where the exact name wins; a name that fits several
   outputs is refused with the candidates.
2. ``--outputs-spec`` reads only a regular UTF-8 file of at most 1 MiB, survives deep
   nesting, and checks the structure (tables, names, single-valued options).
3. Kind options and gate limits have ranges (``Option(default, Limits(...))`` in each kind's
   table, ``Gate(..., limits)`` in ``gates.GATES``); two ``--output`` flags for one output
   are refused naming both.

Every refusal is exit 2 and one line naming the flag or the file. Real CLI, a real Keras
model converted by edgeq's converter.
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import PROGRESS, one_line_error
from edgeq.analysis.kinds import get_kind
from edgeq.analysis.plan import SPEC_MAX_BYTES, OutputInfo, OutputSpec, describe_outputs, plan_outputs, resolve
from edgeq.cli.main import main
from edgeq.errors import ConfigError

HEADS = {"output_0": (10, "softmax"), "output_1": (16, None), "output_2": (3, "softmax"), "output_3": (7, None),
         "output_4": (5, None)}  # name -> (units, activation): a classifier, an embedding, other heads


@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    """(float .tflite, quantized .tflite, data .npz, ModelInfo) of a Keras model with five dict outputs."""
    import keras

    from edgeq.models.convert import convert_model
    from edgeq.models.modelinfo import read_model

    folder = tmp_path_factory.mktemp("multi_output")
    keras.utils.set_random_seed(0)
    pixels = keras.Input((64,), name="pixels")
    hidden = keras.layers.Dense(64, activation="relu", name="hidden")(pixels)  # 4096 weights: quantized
    outputs = {name: keras.layers.Dense(units, activation=act, name=f"head_{name}")(hidden)
               for name, (units, act) in HEADS.items()}
    keras.Model(pixels, outputs).save(folder / "multi.keras")
    rng = np.random.default_rng(0)
    np.savez(folder / "multi.npz", x=rng.uniform(0, 16, (60, 64)).astype(np.float32),
             y=rng.integers(0, 10, 60))
    result = convert_model(folder / "multi.keras", folder / "models")
    info = read_model(result.float_path)
    return result.float_path, result.quant_path, folder / "multi.npz", info


def signatures(info) -> list[str]:
    return list(info.output_signature_names)


def evaluate_args(multi, tmp_path, *extra):
    float_path, quant_path, data, _ = multi
    return ["evaluate", float_path, "--quant-model", quant_path, "--data", data, "-o", tmp_path / "out",
            "--max-per-category", "5", "--no-history", *extra]


# --- 1. one resolver: the exact name wins over the output_K index alias ---------------------------

def test_the_model_has_the_trap(multi):
    """The signature names are output_0…output_4, but not in output order: output_K by position
    and output_K by name are different outputs (else the tests below would prove nothing)."""
    names = signatures(multi[3])
    assert sorted(names) == sorted(HEADS)
    assert names != sorted(names)


def test_evaluate_labels_verdict_and_kind_flags_act_on_the_named_output(multi, tmp_path):
    names = signatures(multi[3])
    # an output whose name, read as an index alias, points at another output
    ignored = next(n for k, n in enumerate(names) if n != f"output_{k}" and n != "output_0")
    result = CliRunner().invoke(main, [str(a) for a in evaluate_args(
        multi, tmp_path, "--labels-for", "output_0", "--verdict-outputs", "output_0", "--output", f"{ignored}=ignore",
        "--json", tmp_path / "report.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    sections = report["outputs"]
    assert set(sections) == set(HEADS)  # reports name the outputs by their signature names
    for name, section in sections.items():
        assert section["index"] == names.index(name)
    assert sections["output_0"]["labels"] and sections["output_0"]["kind"] == "classification"
    assert [n for n, s in sections.items() if s["labels"]] == ["output_0"]
    assert [n for n, s in sections.items() if s["drives_verdict"]] == ["output_0"]
    assert report["deciding_output"] == "output_0"
    assert sections["output_0"]["overall"]["float_accuracy"] is not None  # judged against y: 10 classes
    assert [n for n, s in sections.items() if s["kind"] == "ignore"] == [ignored]


@pytest.mark.parametrize("command", ["search", "worst"])
def test_inputs_search_and_worst_output_is_the_named_output(multi, tmp_path, command):
    float_path, quant_path, data, info = multi
    extra = ["--samples", "8", "--no-pairs"] if command == "worst" else []
    result = CliRunner().invoke(main, [str(a) for a in [
        "inputs", command, "--float", float_path, "--quantized", quant_path, "--data", data, "--output", "output_0",
        "--budget", "30", "--json", tmp_path / "out.json", *extra]])
    assert result.exit_code == 0, result.output
    objective = json.loads((tmp_path / "out.json").read_text())["objective"]
    assert objective["output"] == "output_0" and objective["index"] == signatures(info).index("output_0")
    assert objective["kind"] == "classification"  # the softmax head, not the embedding at index 0


def test_a_name_that_fits_several_outputs_is_refused_with_the_candidates(multi, tmp_path):
    line = one_line_error(evaluate_args(multi, tmp_path, "--verdict-outputs", "StatefulPartitionedCall_1"),
                          ["verdict outputs", "'StatefulPartitionedCall_1' fits 5 outputs"])
    for name in HEADS:
        assert repr(name) in line
    float_path, quant_path, data, _ = multi
    one_line_error(["inputs", "search", "--float", float_path, "--quantized", quant_path, "--data", data,
                    "--output", "StatefulPartitionedCall_1", "--budget", "30"], ["--output", "fits 5 outputs"])
    assert not (tmp_path / "out" / "runs").exists()  # refused before any device time


def test_resolve_takes_exact_names_before_index_aliases():
    outputs = describe_outputs(["StatefulPartitionedCall_1:1", "StatefulPartitionedCall_1:0", "Identity"],
                               [(4,), (3,), (2,)],
                               type("Info", (), {"output_producers": ("", "", ""),
                                                 "output_signature_names": ("output_1", "output_0", "")})())
    assert resolve("output_0", outputs, "t") == 1 and resolve("output_1", outputs, "t") == 0  # signature names
    assert resolve("output_2", outputs, "t") == 2  # no output is named so: the index alias
    assert resolve("0", outputs, "t") == 0 and resolve("StatefulPartitionedCall_1:0", outputs, "t") == 1
    assert resolve("Identity", outputs, "t") == 2
    with pytest.raises(ConfigError, match=r"fits 2 outputs: 'output_1' \(StatefulPartitionedCall_1:1\), "
                                          r"'output_0' \(StatefulPartitionedCall_1:0\)"):
        resolve("StatefulPartitionedCall_1", outputs, "t")
    with pytest.raises(ConfigError, match="has no output 'nope'"):
        resolve("nope", outputs, "t")


# --- 2. --outputs-spec: regular UTF-8 files up to 1 MiB, checked structure ---------------------------

def run_cli(args, timeout=60):
    """The CLI in its own process, with memory capped (2 GiB) and a time limit: a reader that blocks or
    grows without bound fails the test instead of hanging it or eating the machine."""
    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "edgeq", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, preexec_fn=cap, env=env)


@pytest.mark.parametrize("what", ["device", "fifo", "folder"])
def test_an_outputs_spec_that_is_not_a_regular_file_is_refused(multi, tmp_path, what):
    if what == "device":
        spec, needle = Path("/dev/zero"), "a device"
    elif what == "fifo":
        spec, needle = tmp_path / "spec.fifo", "a FIFO"
        os.mkfifo(spec)  # nobody writes: opening it for reading blocks unless the reader does not wait
    else:
        spec, needle = tmp_path / "folder", "a folder"
        spec.mkdir()
    result = run_cli(evaluate_args(multi, tmp_path, "--outputs-spec", spec))
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and not PROGRESS.match(line)]
    assert lines == [f"edgeq: error: {spec}: the output spec is {needle}, not a regular file"], result.stderr


def test_an_outputs_spec_over_the_size_limit_is_refused_naming_it(multi, tmp_path):
    spec = tmp_path / "big.toml"
    spec.write_text("# padding\n" * (SPEC_MAX_BYTES // 10 + 1))
    one_line_error(evaluate_args(multi, tmp_path, "--outputs-spec", spec), ["big.toml", "1 MiB", "at most"])


@pytest.mark.parametrize("suffix, text", [(".json", "[" * 200_000 + "]" * 200_000),
                                          (".toml", "labels = " + "[" * 200_000 + "]" * 200_000),
                                          (".json", '{"outputs": ' * 50_000 + "{}" + "}" * 50_000)])
def test_a_deeply_nested_outputs_spec_is_one_line(multi, tmp_path, suffix, text):
    spec = tmp_path / f"deep{suffix}"
    spec.write_text(text)
    one_line_error(evaluate_args(multi, tmp_path, "--outputs-spec", spec), [spec.name, "nested too deeply"])


def test_an_outputs_spec_that_is_not_utf8_is_one_line(multi, tmp_path):
    spec = tmp_path / "latin1.toml"
    spec.write_bytes('labels = "café"\n'.encode("latin-1"))
    one_line_error(evaluate_args(multi, tmp_path, "--outputs-spec", spec),
                   ["latin1.toml", "not UTF-8", "0xe9", "offset 13"])


SPEC_STRUCTURES = {
    "list.json": ("[1, 2]", "an output spec is a table"),
    "number.json": ("3", "an output spec is a table"),
    "outputs-list.json": ('{"outputs": []}', "'outputs' must be a table"),
    "entry-number.json": ('{"outputs": {"output_0": 3}}', "[outputs.output_0] needs kind"),
    "kind-number.toml": ("[outputs.output_0]\nkind = 5\n", "kind must be text"),
    "labels-number.toml": ("labels = 3\n", "labels must be an output name"),
    "labels-table.toml": ("[labels]\nx = 1\n", "labels must be an output name"),
    "verdict-text.toml": ('verdict = "output_0"\n', "verdict must be a list of output names"),
    "verdict-numbers.toml": ("verdict = [1, 2]\n", "verdict must be a list of output names"),
    "option-list.json": ('{"outputs": {"output_0": {"kind": "classification", "top_k": [1]}}}',
                         "top_k must be a single value"),
    "option-date.toml": ('[outputs.output_1]\nkind = "regression"\natol = 1979-05-27\n', "atol must be a single value"),
    "role-number.toml": ('[outputs.output_1]\nkind = "detection"\nscores = 2\n', "scores must be text"),
    "when-number.toml": ('[outputs.output_1]\nkind = "regression"\nwhen = 0.5\n', "when must be text"),
    "bool-top-k.toml": ('[outputs.output_0]\nkind = "classification"\ntop_k = true\n',
                        "output_0: top_k must be a number, not true"),
    "unknown-key.toml": ('lables = "output_0"\n', "unknown key 'lables'"),
    "bad-toml.toml": ("[outputs\n", "not a valid output spec (TOML"),
}


@pytest.mark.parametrize("name", sorted(SPEC_STRUCTURES))
def test_an_outputs_spec_with_the_wrong_structure_is_one_line(multi, tmp_path, name):
    text, needle = SPEC_STRUCTURES[name]
    spec = tmp_path / name
    spec.write_text(text)
    one_line_error(evaluate_args(multi, tmp_path, "--outputs-spec", spec), [name, needle])


def test_a_good_outputs_spec_names_outputs_like_the_flags(multi, tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"labels": "output_0", "verdict": ["output_0", "output_2"],
                                "outputs": {"output_1": {"kind": "embedding", "min_cosine": 0.9}}}))
    result = CliRunner().invoke(main, [str(a) for a in evaluate_args(
        multi, tmp_path, "--outputs-spec", spec, "--json", tmp_path / "report.json")])
    assert result.exit_code == 0, result.output
    sections = json.loads((tmp_path / "report.json").read_text())["outputs"]
    assert sections["output_1"]["kind"] == "embedding" and sections["output_1"]["options"]["min_cosine"] == 0.9
    assert sorted(n for n, s in sections.items() if s["drives_verdict"]) == ["output_0", "output_2"]
    assert [n for n, s in sections.items() if s["labels"]] == ["output_0"]


# --- 3. option and gate limits; one setting per output --------------------------------------------

@pytest.mark.parametrize("flag, needle", [
    ("output_0=classification:top_k=0", "--output output_0: top_k must be a whole number ≥ 1, not 0"),
    ("output_0=classification:top_k=-3", "--output output_0: top_k must be a whole number ≥ 1, not -3"),
    ("output_0=classification:top_k=1.5", "top_k must be a whole number ≥ 1, not 1.5"),
    ("output_0=classification:threshold=0.5", "--output output_0: threshold is for a single binary score, "
                                              "but the output has 10 classes"),
    ("output_1=regression:atol=-1", "--output output_1: atol must be a number ≥ 0, not -1"),
    ("output_1=regression:rtol=-0.5", "rtol must be a number ≥ 0, not -0.5"),
    ("output_1=embedding:min_cosine=-5", "--output output_1: min_cosine must be a number in [-1, 1], not -5"),
    ("output_1=multilabel:threshold=2", "--output output_1: threshold must be a number in (0, 1), not 2"),
    ("output_1=multilabel:threshold=0", "threshold must be a number in (0, 1), not 0"),
])
def test_kind_options_outside_their_limits_are_refused(multi, tmp_path, flag, needle):
    one_line_error(evaluate_args(multi, tmp_path, "--output", flag), [needle])
    assert not (tmp_path / "out" / "runs").exists()  # refused before any device time


@pytest.mark.parametrize("gate, needle", [
    ("min-n=-1", "--fail-on min-n= must be a whole number ≥ 1, not -1"),
    ("min-n=1.5", "--fail-on min-n= must be a whole number ≥ 1, not 1.5"),
    ("min-n=0", "min-n= must be a whole number ≥ 1, not 0"),
    ("drop=2", "--fail-on drop= must be a number in [0, 1], not 2"),
    ("flip=-0.1", "--fail-on flip= must be a number in [0, 1], not -0.1"),
    ("kl=-1", "--fail-on kl= must be a number ≥ 0"),
    ("p99-ms=0", "--fail-on p99-ms= must be a number > 0"),
])
def test_gate_limits_outside_their_range_are_refused(multi, tmp_path, gate, needle):
    one_line_error(evaluate_args(multi, tmp_path, "--fail-on", gate), [needle])


def test_two_output_flags_for_one_output_are_refused_naming_both(multi, tmp_path):
    one_line_error(evaluate_args(multi, tmp_path, "--output", "output_1=regression", "--output", "output_1=ignore"),
                   ["--output output_1=regression and --output output_1=ignore both set output 'output_1'"])
    tensor = multi[3].outputs[signatures(multi[3]).index("output_1")].name  # the same output by another name
    one_line_error(evaluate_args(multi, tmp_path, "--output", "output_1=regression:atol=0.1",
                                 "--output", f"{tensor}=embedding"),
                   ["--output output_1=regression:atol=0.1", f"--output {tensor}=embedding",
                    "both set output 'output_1'"])


def test_one_setting_per_output_in_plans():
    outputs = [OutputInfo(0, "emb", (16,)), OutputInfo(1, "probs", (10,), "SOFTMAX"), OutputInfo(2, "s", (16,))]
    same = OutputSpec.from_sources(flags=("emb=regression", "emb=regression"))  # said twice alike: fine
    assert plan_outputs(outputs, same, False)[0].kind == "regression"
    with pytest.raises(ConfigError, match="both set output 'emb'"):
        plan_outputs(outputs, OutputSpec.from_sources(flags=("emb=regression", "0=embedding")), False)
    detector = [OutputInfo(0, "boxes", (64, 4)), OutputInfo(1, "scores", (64,)), OutputInfo(2, "probs", (10,))]
    with pytest.raises(ConfigError, match="--output scores=regression: output 'scores' is already the scores of "
                                          "'boxes'; an output is judged once"):
        plan_outputs(detector, OutputSpec.from_sources(flags=("boxes=detection:scores=scores", "scores=regression")),
                     False)


def test_a_flag_overrides_the_spec_file_and_says_so(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text('[outputs.emb]\nkind = "embedding"\n')
    outputs = [OutputInfo(0, "emb", (16,)), OutputInfo(1, "probs", (10,), "SOFTMAX")]
    plans = plan_outputs(outputs, OutputSpec.from_sources(spec_file=spec, flags=("0=ignore",)), False)
    assert plans[0].kind == "ignore" and f"over [outputs.emb] of spec {spec}" in plans[0].reason
    (tmp_path / "twice.json").write_text(json.dumps({"outputs": {"emb": {"kind": "embedding"},
                                                                 "0": {"kind": "regression"}}}))
    with pytest.raises(ConfigError, match=r"\[outputs.emb\] of spec .*twice.json and \[outputs.0\] of spec "
                                          r".*twice.json both set output 'emb'"):
        plan_outputs(outputs, OutputSpec.from_sources(spec_file=tmp_path / "twice.json"), False)


@pytest.mark.parametrize("kind, given, expected", [
    ("classification", {"top_k": 1}, {"top_k": 1}), ("classification", {"top_k": "2"}, {"top_k": 2}),
    ("regression", {"atol": 0, "rtol": 0}, {"atol": 0, "rtol": 0}),
    ("embedding", {"min_cosine": -1}, {"min_cosine": -1}), ("embedding", {"min_cosine": "1"}, {"min_cosine": 1}),
    ("multilabel", {"threshold": 0.3}, {"threshold": 0.3}), ("multilabel", {"logits": "true"}, {"logits": True}),
    ("segmentation", {"min_iou": 0, "channels_last": "false"}, {"min_iou": 0, "channels_last": False}),
    ("detection", {"box_offset": 4, "input_size": "128"}, {"box_offset": 4, "input_size": 128}),
])
def test_options_at_their_limits_are_taken(kind, given, expected):
    merged = get_kind(kind).options(given, "t")
    assert {key: merged[key] for key in expected} == expected


@pytest.mark.parametrize("kind, given, needle", [
    ("segmentation", {"min_iou": 1.5}, "min_iou must be a number in [0, 1], not 1.5"),
    ("segmentation", {"channels_last": 2}, "channels_last must be true or false"),
    ("detection", {"box_offset": -1}, "box_offset must be a whole number ≥ 0, not -1"),
    ("detection", {"box_offset": 1.5}, "box_offset must be a whole number ≥ 0, not 1.5"),
    ("detection", {"iou": True}, "iou must be a number, not true"),
    ("classification", {"top_k": 10 ** 400}, "top_k must be a number"),
    ("regression", {"atol": float("nan")}, "atol must be a finite number"),
])
def test_options_outside_their_limits_are_refused(kind, given, needle):
    with pytest.raises(ConfigError, match=re.escape(needle)):
        get_kind(kind).options(given, "t")


def test_segmentation_threshold_only_for_one_channel_masks():
    outputs = [OutputInfo(0, "seg", (16, 16, 4), "SOFTMAX"), OutputInfo(1, "mask", (16, 16, 1), "LOGISTIC")]
    with pytest.raises(ConfigError, match="--output seg: threshold is for a one-channel mask, but the output has 4"):
        plan_outputs(outputs, OutputSpec.from_sources(flags=("seg=segmentation:threshold=0.5",)), False)
    plans = plan_outputs(outputs, OutputSpec.from_sources(flags=("mask=segmentation:threshold=0.3",)), False)
    assert plans[1].options["threshold"] == 0.3
