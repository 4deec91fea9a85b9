"""The field verdict: only field cells where the float model still works decide it.

Pure comparisons over made-up outputs pin each exclusion (stress families, near-boundary
points, float fails too, gated outputs); real models end to end pin what a user sees:
an image model whose quantized twin collapses under brightness is still catastrophic, and
the single-pixel sensor families are not in its suite.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgeq.analysis.compare import compare_outputs
from edgeq.analysis.gates import evaluate_gates, parse_gates
from edgeq.analysis.plan import OutputInfo, OutputSpec
from edgeq.cli.main import main
from edgeq.inputs.risky.roles import suite_roles

N = 200  # samples per cell


def suite_tags(cells: list[tuple[str, int]]) -> dict:
    """Tags of a suite whose cells each hold the same N source rows."""
    category = np.concatenate([np.full(N, c, dtype="<U16") for c, _ in cells])
    severity = np.concatenate([np.full(N, s, dtype=np.int32) for _, s in cells])
    source = np.tile(np.arange(N, dtype=np.int64), len(cells))
    return {"category": category, "severity": severity, "source_index": source}


def logits_for(classes: np.ndarray, k: int = 4) -> np.ndarray:
    out = np.zeros((len(classes), k), np.float32)
    out[np.arange(len(classes)), classes] = 5.0
    return out


def flipped(classes: np.ndarray, share: float, k: int = 4) -> np.ndarray:
    """``classes`` with the first ``share`` of every cell moved to the next class."""
    out = classes.copy()
    for lo in range(0, len(classes), N):
        out[lo:lo + int(share * N)] = (out[lo:lo + int(share * N)] + 1) % k
    return out


IMAGE_CELLS = [("clean", 0), ("brightness+", 1), ("outlier", 1), ("outlier", 3), ("boundary", 3)]


def test_stress_cells_are_reported_beside_a_robust_verdict_and_gate_only_when_asked():
    tags = suite_tags(IMAGE_CELLS)
    base = np.tile(np.arange(N) % 4, len(IMAGE_CELLS))
    quant = base.copy()
    stress_rows = np.isin(tags["category"], ["outlier", "boundary"])
    quant[stress_rows] = flipped(base[stress_rows], 0.3)  # 30 % flips on the pixel outlier and the boundary
    roles = suite_roles(["clean", "brightness+", "outlier", "boundary"], ["image"])
    report = compare_outputs(logits_for(base), logits_for(quant), tags, roles=roles,
                             boundary={"margin_levels": {"3": 0.03}, "share_of_data": {"3": 0.004}})
    assert report["verdict"] == "robust" and report["worst_category"] in ("clean", "brightness+")
    outlier = report["categories"]["outlier"]["severities"]["3"]
    assert outlier["role"] == "stress" and outlier["counts_for_verdict"] is False
    assert "a pixel cannot leave the range" in outlier["not_counted"]
    stress = report["stress"]
    assert stress["worst"]["value"] == pytest.approx(0.3) and stress["worst"]["band"] == "catastrophic"
    assert {(c["category"], c["severity"]) for c in stress["cells"]} == {("outlier", "1"), ("outlier", "3"),
                                                                         ("boundary", "3")}
    boundary = next(f for f in stress["findings"] if f.startswith("boundary/3"))
    assert "more than 3% of the median float margin on 30.0% of 200 near-boundary points" in boundary
    assert "0.4% of the real samples lie that close" in boundary and "0.12% of real decisions" in boundary
    report["verdict"] = report["verdict"]
    gates = evaluate_gates(report, parse_gates("flip=0.05,verdict=degraded"))
    assert not any(g["failed"] for g in gates)  # the field gates never see the stress cells
    (stress_gate,) = evaluate_gates(report, parse_gates("stress=catastrophic"))
    assert stress_gate["failed"] and stress_gate["observed"] == "catastrophic"


def test_without_the_suites_word_boundary_and_mistakes_are_stress_by_name():
    cells = [("clean", 0), ("boundary", 2), ("value-scale", 1), ("night", 0)]
    tags = suite_tags(cells)
    base = np.tile(np.arange(N) % 4, len(cells))
    quant = flipped(base, 0.0)
    quant[tags["category"] == "value-scale"] = flipped(base[tags["category"] == "value-scale"], 0.5)
    report = compare_outputs(logits_for(base), logits_for(quant), tags)
    assert report["verdict"] == "robust"
    assert report["categories"]["boundary"]["role"] == "stress"
    assert report["categories"]["value-scale"]["counts_for_verdict"] is False
    assert report["categories"]["night"]["counts_for_verdict"] is True  # the user's own category is field


def test_a_cell_where_float_fails_too_is_shown_but_does_not_decide():
    cells = [("clean", 0), ("noise", 1), ("noise", 3)]
    tags = suite_tags(cells)
    y = np.tile(np.arange(N) % 4, len(cells))
    float_pred = y.copy()
    hard = tags["severity"] == 3
    float_pred[hard] = flipped(y[hard], 0.7)  # float keeps 30 %: below chance + half its clean skill
    quant_pred = float_pred.copy()
    quant_pred[hard] = flipped(float_pred[hard], 0.5)  # quantized loses more there
    quant_pred[tags["severity"] == 1] = flipped(y[tags["severity"] == 1], 0.01)
    report = compare_outputs(logits_for(float_pred), logits_for(quant_pred), dict(tags, y=y))
    cell = report["categories"]["noise"]["severities"]["3"]
    assert cell["counts_for_verdict"] is False and cell["not_counted"].startswith("float fails here too")
    competence = cell["float_competence"]
    assert competence["basis"] == "labels" and competence["float"] == pytest.approx(0.3)
    assert competence["floor"] == pytest.approx(0.25 + 0.5 * (1.0 - 0.25))
    assert report["verdict"] == "robust" and (report["worst_category"], report["worst_severity"]) == ("noise", "1")


def test_without_labels_float_competence_is_its_own_clean_answer():
    cells = [("clean", 0), ("blur", 2), ("blur", 3)]
    tags = suite_tags(cells)
    clean = np.arange(N) % 4
    float_pred = np.tile(clean, len(cells))
    blur3 = (tags["category"] == "blur") & (tags["severity"] == 3)
    float_pred[blur3] = flipped(float_pred[blur3], 0.6)  # float changes its own answer on 60 %
    quant_pred = float_pred.copy()
    quant_pred[blur3] = flipped(float_pred[blur3], 0.4)
    blur2 = (tags["category"] == "blur") & (tags["severity"] == 2)
    quant_pred[blur2] = flipped(float_pred[blur2], 0.12)
    report = compare_outputs(logits_for(float_pred), logits_for(quant_pred), tags)
    blur = report["categories"]["blur"]["severities"]
    assert blur["3"]["counts_for_verdict"] is False and blur["3"]["float_competence"]["basis"] == "consistency"
    assert blur["3"]["float_kept_clean"] == pytest.approx(0.4)
    assert blur["2"]["counts_for_verdict"] is True
    assert report["verdict"] == "catastrophic" and report["worst_severity"] == "2"  # real losses still decide


def landmark_outputs():
    return [OutputInfo(0, "presence", (1,), "LOGISTIC"), OutputInfo(1, "landmarks", (42,), "FULLY_CONNECTED"),
            OutputInfo(2, "handedness", (1,), "LOGISTIC")]


def test_landmarks_are_judged_only_where_the_float_presence_is_on():
    cells = [("clean", 0), ("noise", 1)]
    tags = suite_tags(cells)
    n = len(tags["category"])
    rng = np.random.default_rng(0)
    presence = (rng.uniform(size=(n, 1)) < 0.25).astype(np.float32) * 0.9 + 0.05
    landmarks = rng.uniform(0, 32, size=(n, 42)).astype(np.float32)
    broken = landmarks.copy()
    broken[presence[:, 0] < 0.5] += 50.0  # garbage wherever there is no hand, exact where there is
    hand = rng.uniform(size=(n, 1)).astype(np.float32)
    report = compare_outputs([presence, landmarks, hand], [presence, broken, hand], tags, outputs=landmark_outputs())
    section = report["outputs"]["landmarks"]
    assert section["when"]["output"] == "presence" and section["when"]["open"] == int((presence > 0.5).sum())
    assert section["overall"]["n"] == section["when"]["open"] and section["worst_value"] == 0.0
    assert report["outputs"]["handedness"]["when"]["output"] == "presence"
    assert report["verdict"] == "robust"


def test_with_the_gate_never_open_the_verdict_says_so_and_is_not_catastrophic():
    tags = suite_tags([("clean", 0), ("noise", 1)])
    n = len(tags["category"])
    presence = np.full((n, 1), 0.02, np.float32)
    landmarks = np.random.default_rng(1).uniform(0, 32, size=(n, 42)).astype(np.float32)
    hand = np.full((n, 1), 0.3, np.float32)
    report = compare_outputs([presence, landmarks, hand], [presence, landmarks + 50.0, hand], tags,
                             outputs=landmark_outputs())
    assert report["verdict"] == "robust" and report["verdict_confidence"]["level"] == "low-n"
    assert any("judged only where presence>0.5" in w and "on 0 of 400 samples" in w for w in report["warnings"])


def test_a_given_gate_and_a_bad_one():
    tags = suite_tags([("clean", 0)])
    gate = np.linspace(0, 1, N, dtype=np.float32)[:, None]
    values = np.zeros((N, 42), np.float32)
    outputs = [OutputInfo(0, "score", (1,)), OutputInfo(1, "points", (42,))]
    spec = OutputSpec.from_sources(flags=("points=regression:when=score<=0.25",))
    report = compare_outputs([gate, values], [gate, values + 1.0], tags, outputs=outputs, spec=spec)
    assert report["outputs"]["points"]["when"]["open"] == int((gate <= 0.25).sum())
    assert report["outputs"]["points"]["when"]["source"] == "--output points"
    from edgeq.errors import ConfigError

    for flag, words in (("points=regression:when=score~1", "is not OUTPUT>NUMBER"),
                        ("points=regression:when=nope>1", "has no output 'nope'"),
                        ("score=classification:when=points>1", "a gate is one score")):
        with pytest.raises(ConfigError, match=words):
            compare_outputs([gate, values], [gate, values], tags, outputs=outputs,
                            spec=OutputSpec.from_sources(flags=(flag,)))


# --- real models, end to end -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fragile_image(fragile_keras, example_data, tmp_path_factory):
    """The fragile twin taking 8×8×1 grey images: its quantized model collapses once the silent pixel lights up."""
    import keras

    out = tmp_path_factory.mktemp("fragile_image")
    twin = keras.models.load_model(fragile_keras, compile=False)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten()]
                             + [layer for layer in twin.layers if isinstance(layer, keras.layers.Dense)])
    model.save(out / "fragile_image.keras")
    with np.load(example_data) as d:
        np.savez(out / "images.npz", x=d["x"].reshape(-1, 8, 8, 1).astype(np.float32), y=d["y"])
    return out / "fragile_image.keras", out / "images.npz"


def test_an_image_model_that_loses_on_brightness_is_still_catastrophic(fragile_image, tmp_path):
    model, data = fragile_image
    result = CliRunner().invoke(main, ["evaluate", str(model), "--data", str(data), "-o", str(tmp_path),
                                       "--max-per-category", "120", "--no-history"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["verdict"] == "catastrophic"
    assert report["worst_category"] in ("brightness+", "contrast-", "noise", "haze", "gamma")
    assert report["inputs"]["kinds"] == {"x": "image"}
    cats = report["categories"]
    assert not {"sentinel", "stuck", "scaled", "offset", "dropout-zero", "dropout-mean"} & set(cats)
    assert cats["outlier"]["role"] == "stress" and cats["outlier"]["counts_for_verdict"] is False
    assert {"boundary", "outlier", "value-scale", "normalization"} <= {c["category"] for c in report["stress"]["cells"]}
    assert "stress (beside the verdict)" in result.output and " * " in result.output


def test_input_kind_sets_the_families_and_a_wrong_one_is_one_line(example_keras, example_data, tmp_path):
    np.savez(tmp_path / "w.npz", x=np.random.default_rng(0).random((40, 128, 6)).astype(np.float32))
    built = CliRunner().invoke(main, ["inputs", "risky", "--data", str(tmp_path / "w.npz"), "-o",
                                      str(tmp_path / "s.npz"), "--max-per-category", "5"])
    assert built.exit_code == 0, built.output
    assert "read as a window of sensor readings (time × channels) (sensor-window, from the sample shape)" \
        in built.output
    given = CliRunner().invoke(main, ["inputs", "risky", "--data", str(tmp_path / "w.npz"), "-o",
                                      str(tmp_path / "g.npz"), "--max-per-category", "5", "--input-kind", "x=grid"])
    assert given.exit_code == 0 and "(grid, set by --input-kind)" in given.output
    for kind, words in (("image", "cannot be read as images"), ("audio", "needs 1 axis"), ("pixels", "unknown")):
        bad = CliRunner().invoke(main, ["inputs", "risky", "--data", str(tmp_path / "w.npz"), "-o",
                                        str(tmp_path / "b.npz"), "--input-kind", kind])
        assert bad.exit_code == 2 and words in bad.output and "Traceback" not in bad.output, bad.output


def test_the_worst_shift_search_looks_only_at_field_shifts_unless_told(fragile_image, tmp_path):
    model, data = fragile_image
    result = CliRunner().invoke(main, ["inputs", "worst", str(model), "--data", str(data), "--budget", "40",
                                       "--json", "-"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["skipped_families"]["outlier"].startswith("stands for no field input of this kind")
    assert "sentinel" in payload["skipped_families"]  # a pixel is no sensor
    named = CliRunner().invoke(main, ["inputs", "worst", str(model), "--data", str(data), "--budget", "20",
                                      "--family", "outlier", "--json", "-"])
    assert named.exit_code == 0, named.output
    assert "outlier" not in json.loads(named.stdout)["skipped_families"]


def test_a_logit_presence_flag_gates_the_landmarks_at_zero():
    """MediaPipe's face landmark model: 1404 landmark values and a one-value face flag, a logit (no sigmoid op)."""
    tags = suite_tags([("clean", 0)])
    flag = np.where(np.arange(N) % 4 == 0, 3.0, -3.0).astype(np.float32)[:, None]  # a face in a quarter
    points = np.zeros((N, 1404), np.float32)
    outputs = [OutputInfo(0, "conv2d_21", (1404,), "CONV_2D"), OutputInfo(1, "conv2d_31", (1,), "CONV_2D")]
    report = compare_outputs([points, flag], [points + 1.0, flag], tags, outputs=outputs)
    gate = report["outputs"]["conv2d_21"]["when"]
    assert (gate["output"], gate["op"], gate["threshold"], gate["open"]) == ("conv2d_31", ">", 0.0, N // 4)
    assert "a logit" in gate["reason"]


def test_a_few_unlucky_trials_make_the_verdict_unsure_not_worse():
    """Gated landmarks open on 3 samples, all 3 off: with 200 presence decisions per cell behind a clean
    verdict, 3 trials cannot make it catastrophic; they make it low-n and are named."""
    tags = suite_tags([("clean", 0), ("noise", 1)])
    n = len(tags["category"])
    presence = np.full((n, 1), 0.02, np.float32)
    presence[[5, 250, 390]] = 0.95
    landmarks = np.zeros((n, 42), np.float32)
    hand = np.full((n, 1), 0.3, np.float32)
    report = compare_outputs([presence, landmarks, hand], [presence, landmarks + 50.0, hand], tags,
                             outputs=landmark_outputs())
    assert report["outputs"]["landmarks"]["verdict"] == "catastrophic"  # its own worst, from 1-2 trials a cell
    assert report["deciding_output"] == "presence" and report["verdict"] == "robust"
    assert report["verdict_confidence"]["level"] == "low-n"
    assert any("output 'landmarks' has too few trials in every cell" in w for w in report["warnings"])


def test_a_small_cell_beside_large_ones_cannot_decide():
    cells = [("clean", 0), ("noise", 1), ("mine", 2)]
    tags = suite_tags(cells)
    keep = np.ones(len(tags["category"]), bool)
    keep[np.flatnonzero(tags["category"] == "mine")[5:]] = False  # the user's own category: 5 samples
    tags = {k: v[keep] for k, v in tags.items()}
    base = np.arange(len(tags["category"])) % 4
    quant = base.copy()
    quant[tags["category"] == "mine"] = (base[tags["category"] == "mine"] + 1) % 4  # 5 of 5 flip
    report = compare_outputs(logits_for(base), logits_for(quant), tags)
    assert report["verdict"] == "robust" and report["verdict_confidence"]["level"] == "low-n"
    assert "mine/2: 5 of 5" in report["verdict_confidence"]["note"]
