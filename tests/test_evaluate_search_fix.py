"""edgeq evaluate --search / --worst / --fix, end to end: real models, the real local agent, no mocks.

The fragile twin (catastrophic only under shifted inputs) is searched and fixed in one
evaluation; the built-in example (robust) has nothing to fix; a small CNN's report shows
failing inputs as inline PNG images, a table model's shows none.
"""

from __future__ import annotations

import base64
import json
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeq.cli.main import main


def _strict(text: str) -> dict:
    def refuse(name):
        raise ValueError(f"non-strict JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def run_evaluate(args, out, workdir):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEQ_LOCAL_WORKDIR", str(workdir))
        result = CliRunner().invoke(main, ["evaluate", *map(str, args), "-o", str(out)])
    return result


@pytest.fixture(scope="module")
def fragile_fixed(fragile_keras, example_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("fragile_search_fix")
    result = run_evaluate([fragile_keras, "--data", example_data, "--max-per-category", "60", "--search", "300",
                           "--worst", "300", "--fix"], out / "eval", out / "device")
    assert result.exit_code == 0, result.output
    report = _strict((out / "eval" / "report.json").read_text())
    return report, out / "eval", result


def test_fix_on_the_fragile_twin_writes_a_verified_model_under_target(fragile_fixed):
    report, out, _ = fragile_fixed
    assert report["verdict"] == "catastrophic"  # decided by the suite, as before
    fix = report["fix"]
    assert fix["status"] == "fixed" and fix["verdict_before"] == "catastrophic"
    target = fix["target_drop"]
    assert target == report["thresholds"]["degraded"] and fix["target_source"] == "the degraded threshold"
    assert fix["conditions"] and all(c["fixed"] <= target + 1e-9 for c in fix["conditions"].values())
    assert max(c["shipped"] for c in fix["conditions"].values()) > target  # there was something to fix
    assert set(fix["conditions"]) >= {"clean", "brightness+/1"}  # the suite's own cells
    assert fix["recipe"] and all(r["reason"] for r in fix["recipe"])  # ops kept float, and why
    fixed = out / "models" / "fragile.fixed.tflite"
    assert fixed.is_file() and fix["fixed"] == str(fixed)
    left = [p.name for p in (out / "repair").glob("*.tflite")]
    assert left and not [n for n in left if ".keep-" in n or n.endswith(".candidate.tflite")], left
    assert all(Path(m["path"]).is_file() for m in fix["models"].values())  # what the section names exists
    on_disk = _strict((out / "models" / "fragile.fix.json").read_text())
    assert on_disk["status"] == "fixed" and on_disk["recipe"] == fix["recipe"]
    models = fix["models"]
    assert models["fixed"]["bytes"] < models["float"]["bytes"]
    assert all(m["host_latency_us"] > 0 for m in models.values())
    located = fix["localize"]
    assert located["graph"] and located["ranking"][0]["op_index"] in {r["op_index"] for r in fix["recipe"]}
    assert "fix" in report["timings_s"]
    assert any(n.startswith("fix: drop target 0.02 (the degraded threshold)") for n in report["notes"])


def test_search_in_evaluate_records_flips_within_the_bound_and_writes_them(fragile_fixed):
    report, out, _ = fragile_fixed
    s = report["search"]
    assert s["found"] > 0 and s["queries"] <= 300 and s["budget"] == 300
    bound = s["distance"]["bound"]
    assert bound == 0.1 and s["distance"]["norm"] == "linf"
    assert all(0 <= f["distance"] <= bound for f in s["inputs_found"])
    assert all(f["float_class"] != f["quant_class"] for f in s["inputs_found"])
    assert s["evaluator"]["where"].startswith("host")  # the local device: in-process
    assert "not part of the verdict" in s["effect_on_verdict"]
    with np.load(out / "inputs" / "search.npz") as found:
        assert len(found["x"]) == s["found"]
        assert set(found["category"].tolist()) == {"search"}
        assert float(found["distance"].max()) <= bound
        assert found["seed_index"].tolist() == [f["seed_index"] for f in s["inputs_found"]]
    assert s["path"] == str(out / "inputs" / "search.npz")
    # listed with the stress findings beside the verdict, as evidence
    assert any(f.startswith(f"search: {s['found']} input(s) within 0.1") for f in report["stress"]["findings"])


def test_worst_shifts_are_reported_beside_the_verdict(fragile_fixed):
    report, _, _ = fragile_fixed
    w = report["worst"]
    assert w["queries"] <= 300 and w["worst"]
    assert w["worst"][0]["families"][0] in ("brightness+", "contrast-", "noise")
    assert "not part of the verdict" in w["effect_on_verdict"]
    assert any(f.startswith("worst shift: ") for f in report["stress"]["findings"])


def test_terminal_summary_and_html_have_the_sections(fragile_fixed):
    report, out, result = fragile_fixed
    stdout = result.stdout
    assert "fix: fixed: 1 op(s) kept float" in stdout
    assert re.search(r"search: \d+ disagreement\(s\) in \d+ queries", stdout)
    assert "worst shifts (" in stdout
    lines = stdout.splitlines()
    start = next(k for k, line in enumerate(lines) if line.startswith("search:"))
    end = next(k for k, line in enumerate(lines) if line.startswith("report:"))
    for line in lines[start:end]:  # what --search/--worst/--fix add: within 80 columns
        assert len(line) <= 80, line
    page = (out / "report.html").read_text()
    for heading in ("Worst conditions", "Disagreement search (beside the verdict)",
                    "Worst input shifts (beside the verdict)", "Fix: selective quantization",
                    "Before / after, per condition (worst first)", "Localize: which op breaks"):
        assert f">{heading}<" in page, heading
    assert '<svg class="localize"' in page
    assert re.search(r"Lineages at the end: \d+% seeking .* where they coincided: \d+", page)
    assert "data:image/png" not in page and "<img" not in page  # table inputs: no pictures
    worst_rows = re.search(r"<h2>Worst conditions</h2><table>.*?</table>", page, re.S).group(0)
    first = re.search(r"<tr><td><b>([^<]*)</b>", worst_rows).group(1)
    cell = report["worst_category"] + (f"/{report['worst_severity']}" if report.get("worst_severity") else "")
    assert first == cell  # the verdict's cell leads


def test_robust_example_has_nothing_to_fix(tmp_path):
    result = run_evaluate(["--fix", "--max-per-category", "60"], tmp_path / "eval", tmp_path / "device")
    assert result.exit_code == 0, result.output
    report = _strict((tmp_path / "eval" / "report.json").read_text())
    assert report["verdict"] == "robust"
    assert report["fix"]["status"] == "nothing-to-fix" and "robust" in report["fix"]["reason"]
    assert "fix: nothing to fix" in result.stdout
    assert not list((tmp_path / "eval" / "models").glob("*.fixed.tflite"))
    assert not (tmp_path / "eval" / "repair").exists()  # no work done
    assert "Fix: selective quantization" in (tmp_path / "eval" / "report.html").read_text()


@pytest.mark.parametrize("args", [["--search", "0"], ["--worst", "-5"], ["--search-distance", "0"],
                                  ["--fix-target", "1.5"]])
def test_bad_budgets_and_targets_are_exit_2(args, tmp_path):
    result = run_evaluate([*args], tmp_path / "eval", tmp_path / "device")
    assert result.exit_code == 2, result.output


# --- images --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_cnn(tmp_path_factory, example_data):
    """The digits as 16×16 colour images (tinted per sample) and a small CNN trained on them briefly."""
    import keras

    out = tmp_path_factory.mktemp("tiny_cnn")
    with np.load(example_data) as d:
        digits, y = d["x"].reshape(-1, 8, 8) / 16.0, d["y"]
    rng = np.random.default_rng(0)
    big = np.repeat(np.repeat(digits, 2, axis=1), 2, axis=2)
    x = (big[..., None] * rng.uniform(0.5, 1.0, size=(len(y), 1, 1, 3))).astype(np.float32)
    keras.utils.set_random_seed(0)
    L = keras.layers
    model = keras.Sequential([keras.Input((16, 16, 3)), L.Conv2D(8, 3, activation="relu"), L.MaxPooling2D(),
                              L.Flatten(), L.Dense(32, activation="relu"), L.Dense(10)])
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=3, batch_size=64, verbose=0)
    model.save(out / "cnn.keras")
    np.savez(out / "images.npz", x=x, y=y)
    return out / "cnn.keras", out / "images.npz"


def _decode_png(data: bytes) -> np.ndarray:
    """Enough of PNG to read back what edgeq.reports.png writes (8-bit, filter 0), CRCs checked."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (length,), tag = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(tag + body) & 0xFFFFFFFF
        chunks[tag] = chunks.get(tag, b"") + body
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert depth == 8 and b"IEND" in chunks
    channels = {0: 1, 2: 3, 6: 4}[colour]
    raw = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(height, 1 + width * channels)
    assert not raw[:, 0].any()
    return raw[:, 1:].reshape(height, width, channels)


@pytest.mark.parametrize("shape", [(5, 7), (4, 3, 3), (2, 6, 4)])
def test_png_encoder_round_trips(shape):
    from edgeq.reports.png import png_bytes

    pixels = np.random.default_rng(1).integers(0, 256, size=shape, dtype=np.uint8)
    back = _decode_png(png_bytes(pixels))
    assert np.array_equal(back.reshape(pixels.shape), pixels)


def test_image_model_report_shows_failing_inputs_as_images(tiny_cnn, tmp_path):
    model, data = tiny_cnn
    result = run_evaluate([model, "--data", data, "--max-per-category", "30", "--search", "200"], tmp_path / "eval",
                          tmp_path / "device")
    assert result.exit_code == 0, result.output
    report = _strict((tmp_path / "eval" / "report.json").read_text())
    page = (tmp_path / "eval" / "report.html").read_text()
    assert "<h2>Example failing inputs</h2>" in page
    images = re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,([^"]+)"', page)
    suite_images = [b for alt, b in images if alt.startswith("suite row")]
    assert suite_images, "no flipped suite sample drawn"
    for _, encoded in images:
        assert _decode_png(base64.b64decode(encoded)).shape == (16, 16, 3)
    section = re.search(r"<h2>Example failing inputs</h2>.*?</section>", page, re.S).group(0)
    assert "HWC colour images" in section and '→ <b class="q">' in section
    if report["search"]["found"]:  # found inputs are drawn beside their data sample, with the distance
        assert any(alt.startswith("found input") for alt, _ in images)
        assert re.search(r"distance 0\.\d+", section)
