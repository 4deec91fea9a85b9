"""Pushes through the agent's receiver (issue 25 part 6): one pass on each side, compressed input sets.

Against the loopback sshd and the real agent: what lands is byte for byte the source, a corrupted
stream or a wrong digest never reaches the final name, a cut link leaves a part that the next
push resumes, an unchanged file is not sent again, and the device never reads a pushed file a
second time to hash it. The codec's choice is checked on figures given to it. No timing asserts.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import write_inventory
from test_public_model import face_detector  # noqa: F401  (MediaPipe's face detector, from its PyPI wheel)

from device_agents.edgeq_agent import made_by_edgeq
from device_agents.edgeq_agent.receive import FRAME, MAX_BLOCK, RAW, XZ, ZLIB, END, receive_file
from edgeq.devices.inventory import load_inventory
from edgeq.devices.session import open_session
from edgeq.devices.transport import push_codec
from edgeq.devices.transport.base import sha256_file
from edgeq.devices.transport.ssh import SshTransport
from edgeq.errors import TransportError


def device_at(entry: dict, tmp_path: Path, **extra):
    inventory = write_inventory(tmp_path / "edgeq.toml", {"pi": {**entry, "workdir": str(tmp_path / "w"), **extra}})
    return load_inventory(inventory)["pi"]


@pytest.fixture
def input_set(tmp_path) -> Path:
    """An input set as edgeq writes them (.npz members stored): 8-bit images scaled to float32, compressible."""
    rng = np.random.default_rng(3)
    images = (rng.integers(0, 8, (600, 28, 28, 1)) * 32 / 255).astype(np.float32)
    path = tmp_path / "images.npz"
    np.savez(path, x=images, y=rng.integers(0, 10, 600))
    return path


@pytest.fixture
def model_file(tmp_path) -> Path:
    path = tmp_path / "model.tflite"
    path.write_bytes(os.urandom(3_000_000))  # random: incompressible, goes raw
    return path


class Counting:
    """Counts what would read a pushed file again on the device: the agent's sha256 op, a sha256sum command."""

    def __init__(self, opened):
        self.hashes, self.commands = [], []
        session, transport = opened.session, opened.transport
        hasher, run = session.sha256, transport._run_impl
        opened.deployer.hasher = lambda path: self.hashes.append(path) or hasher(path)
        transport._run_impl = lambda argv, *a: self.commands.append(argv) or run(argv, *a)


@pytest.mark.parametrize("codec", ["zlib1", "xz6", None])
def test_pushed_files_are_the_source_byte_for_byte_compressed_or_not(ssh_device, input_set, model_file, codec,
                                                                     monkeypatch):
    """Each codec forced (the choice itself depends on the link: tested below on given figures)."""
    monkeypatch.setattr(push_codec.Codec, "choose", lambda self: codec)
    device, _ = ssh_device
    with open_session(device, lock=False) as opened:
        pushed = {local: opened.deployer.push(local) for local in (input_set, model_file)}
        transfers = {Path(t.source): t for t in opened.deployer.transfers if not t.skipped}
    for local, (remote, digest) in pushed.items():
        assert Path(remote).read_bytes() == local.read_bytes()
        assert digest == sha256_file(local) == transfers[local].sha256
        assert made_by_edgeq(remote)  # recorded before the rename, as the agent's record op does
    if codec:
        assert transfers[input_set].wire_bytes < input_set.stat().st_size / 2  # went compressed
    else:
        assert transfers[input_set].wire_bytes == input_set.stat().st_size
    assert transfers[model_file].wire_bytes == model_file.stat().st_size  # a .tflite of random bytes: raw
    assert not [name for name in os.listdir(Path(remote).parent) if name.endswith(".part")]


def test_the_device_hashes_while_it_writes_never_in_a_second_pass(ssh_device, input_set, model_file):
    device, _ = ssh_device
    with open_session(device, lock=False) as opened:
        counting = Counting(opened)
        for local in (input_set, model_file):
            opened.deployer.push(local)
        assert all(t.wire_bytes is not None for t in opened.deployer.transfers[-2:])  # through the receiver
    assert counting.hashes == []
    assert not [argv for argv in counting.commands if "sha256sum" in argv]


def test_without_the_receiver_the_device_hashes_afterwards(ssh_device, model_file):
    """The counter above can fail: the SFTP path (a transport that has no receiver) hashes through the agent."""
    device, _ = ssh_device
    with open_session(device, lock=False) as opened:
        opened.transport._pusher = None
        counting = Counting(opened)
        remote, digest = opened.deployer.push(model_file)
    assert len(counting.hashes) == 1 and sha256_file(Path(remote)) == digest


def test_a_wrong_digest_never_reaches_the_final_name(ssh_device, model_file):
    device, _ = ssh_device
    wrong = "0" * 64
    with open_session(device, lock=False) as opened:
        with pytest.raises(TransportError, match="arrived corrupted"):
            opened.deployer.push(model_file, sha256=wrong)
        cas = Path(opened.deployer.path("cas"))
    assert not (cas / f"{wrong}.tflite").exists()
    assert [name for name in os.listdir(cas) if not name.startswith(".edgeq-made")] == []  # no part left


def test_a_corrupted_stream_never_reaches_the_final_name(ssh_device, tmp_path):
    """A receiver fed by hand: a zlib frame that is not one (bytes flipped on the way) is refused, the part removed."""
    device, _ = ssh_device
    data = os.urandom(1000) * 200
    packed = bytearray(zlib.compress(data))
    packed[len(packed) // 2] ^= 0xFF
    with open_session(device, lock=False) as opened:
        folder = opened.deployer.path("cas")
        opened.transport.makedirs(folder)
        receiver = opened.transport._pusher.ready()
        final, part = f"{folder}/blob.bin", f"{folder}/.blob.bin.by-hand.part"
        header = {"part": part, "final": final, "sha256": "%064x" % 1, "size": len(data), "offset": 0}
        receiver._send((json.dumps(header) + "\n").encode() + FRAME.pack(ZLIB, len(packed)) + bytes(packed)
                       + FRAME.pack(END, 0))
        answer = receiver.answer()
        assert not answer["ok"] and answer["kind"] == "Corrupt"
        assert not os.path.exists(final) and not os.path.exists(part)
        again = opened.deployer.push(_file(tmp_path / "after.bin", data))  # the receiver still serves
    assert Path(again[0]).read_bytes() == data


def test_a_cut_link_leaves_no_final_file_and_the_next_push_resumes(sshd_session, tcp_proxy_factory, input_set,
                                                                   tmp_path):
    big = _file(tmp_path / "model.tflite", os.urandom(6_000_000))
    proxy = tcp_proxy_factory(sshd_session)
    device = device_at(proxy.inventory_entry(), tmp_path, retries=0)
    stored = tmp_path / "w" / "cas" / f"{sha256_file(big)}.tflite"
    with open_session(device, lock=False) as opened:
        opened.transport._pusher.ready()  # the receiver runs: the cut hits the stream, not its start
        proxy.cut_after(2_500_000, refuse_after=True)
        with pytest.raises(TransportError, match="model.tflite"):
            opened.deployer.push(big)
    proxy.resume()
    parts = list(stored.parent.glob(f".{stored.name}.*.part"))
    assert not stored.exists() and len(parts) == 1 and 0 < parts[0].stat().st_size < 6_000_000
    with open_session(device, lock=False) as opened:
        opened.deployer.push(big)
        transfer = opened.deployer.transfers[-1]
    assert transfer.wire_bytes is not None and 0 < transfer.bytes_moved < 6_000_000  # resumed, not restarted
    assert sha256_file(stored) == sha256_file(big)
    assert not list(stored.parent.glob("*.part")) and made_by_edgeq(str(stored))


def test_a_cut_mid_push_is_retried_and_arrives_whole(sshd_session, tcp_proxy_factory, input_set, tmp_path):
    proxy = tcp_proxy_factory(sshd_session)
    device = device_at(proxy.inventory_entry(), tmp_path, retries=3)
    with SshTransport(device, backoff_s=0.1) as transport:
        with open_session(device, lock=False, transport=transport) as opened:
            opened.transport._pusher.ready()
            proxy.cut_after(300_000)  # the input set goes compressed: cut early in it
            remote, digest = opened.deployer.push(input_set)
    assert proxy.connections >= 2  # the link really was cut and opened again
    assert Path(remote).read_bytes() == input_set.read_bytes() and digest == sha256_file(input_set)


def test_a_repush_sends_nothing(sshd_session, tcp_proxy_factory, input_set, model_file, tmp_path):
    proxy = tcp_proxy_factory(sshd_session)
    device = device_at(proxy.inventory_entry(), tmp_path)
    with open_session(device, lock=False) as opened:
        for local in (input_set, model_file):
            opened.deployer.push(local)
        before = proxy.bytes_forwarded["up"]
        for local in (input_set, model_file):
            opened.deployer.push(local)
        repushed = opened.deployer.transfers[-2:]
        up = proxy.bytes_forwarded["up"] - before
    assert all(t.skipped and t.bytes_moved == 0 for t in repushed)
    assert up < 10_000  # two existence checks; the files are 3 and 1.9 MB


@pytest.mark.parametrize("codec", [None, "xz6"])
def test_a_public_model_arrives_whole_and_loads_on_the_device(ssh_device, face_detector, codec, monkeypatch):
    """MediaPipe's face detector from its PyPI wheel, pushed raw and (forced) as xz blocks: the stored file is
    the wheel's bytes and a TFLite interpreter opens it and gives the source's outputs."""
    from ai_edge_litert.interpreter import Interpreter

    if codec:
        monkeypatch.setattr(push_codec, "COMPRESSIBLE", frozenset({".tflite"}))
        monkeypatch.setattr(push_codec.Codec, "choose", lambda self: codec)
    device, _ = ssh_device
    with open_session(device, lock=False) as opened:
        remote, _ = opened.deployer.push(face_detector)
        transfer = opened.deployer.transfers[-1]
    assert transfer.wire_bytes is not None and not transfer.skipped
    if codec:
        assert transfer.wire_bytes < face_detector.stat().st_size  # float weights shrink a little
    assert hashlib.sha256(Path(remote).read_bytes()).hexdigest() == hashlib.sha256(face_detector.read_bytes()).hexdigest()
    x = np.random.default_rng(0).uniform(-1, 1, (1, 128, 128, 3)).astype(np.float32)
    outputs = [_invoke(Interpreter(model_path=str(path)), x) for path in (remote, face_detector)]
    assert all(np.array_equal(a, b) for a, b in zip(*outputs))


def _invoke(interpreter, x):
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]


def test_a_receiver_that_cannot_start_leaves_pushes_to_sftp(ssh_device, model_file):
    device, _ = ssh_device
    with open_session(device, lock=False) as opened:
        opened.transport.use_receiver(opened.deployer.path("agents", "missing.pyz"))
        remote, digest = opened.deployer.push(model_file)
        assert opened.transport._pusher.failed and opened.deployer.transfers[-1].wire_bytes is None
    assert sha256_file(Path(remote)) == digest


# ---- the receiver's wire rules and the codec's choice, without a device -----------------------------------------

def test_a_frame_that_inflates_beyond_its_bound_is_refused(tmp_path):
    bomb = zlib.compress(bytes(MAX_BLOCK + 1), 9)  # a few KiB that would inflate past the bound
    header = {"part": str(tmp_path / ".f.part"), "final": str(tmp_path / "f"), "sha256": "%064x" % 1,
              "size": MAX_BLOCK + 1, "offset": 0}
    answer = receive_file(io.BytesIO(FRAME.pack(ZLIB, len(bomb)) + bomb + FRAME.pack(END, 0)), header)
    assert not answer["ok"] and answer["kind"] == "Corrupt" and os.listdir(tmp_path) == []


def test_a_stream_cut_mid_frame_keeps_what_arrived(tmp_path):
    data = os.urandom(300_000)
    header = {"part": str(tmp_path / ".f.part"), "final": str(tmp_path / "f"), "sha256": "%064x" % 1,
              "size": len(data), "offset": 0}
    with pytest.raises(EOFError):
        receive_file(io.BytesIO(FRAME.pack(RAW, len(data)) + data[:200_000]), header)
    assert (tmp_path / ".f.part").read_bytes() == data[:200_000] and not (tmp_path / "f").exists()


@pytest.mark.parametrize("link, expected", [(200e6, None), (1.2e6, "xz6"), (30e6, "zlib1")])
def test_the_codec_picks_what_moves_a_block_fastest(link, expected, monkeypatch):
    """A fast link gets raw frames (compressing would slow it), a slow one the strongest codec that keeps up."""
    monkeypatch.setattr(push_codec, "WORKERS", 1)
    codec = push_codec.Codec()
    codec.link, codec.delivery = link, True
    codec.speed = {"zlib1": 150e6, "xz3": 20e6, "xz6": 5e6}
    codec.ratio = {"zlib1": 2.6, "xz3": 3.4, "xz6": 3.8}
    assert codec.choose() == expected


def test_the_codec_compresses_input_sets_and_gives_up_on_random_bytes():
    codec = push_codec.Codec()
    assert codec.start(Path("x.npz"), 10 << 20).candidate and not codec.start(Path("m.tflite"), 10 << 20).candidate
    random = codec.start(Path("noise.npz"), 10 << 20)
    frames = [random.frame(os.urandom(1 << 16), i) for i in range(push_codec.GIVE_UP + 1)]
    assert [f[0] for f in frames] == [RAW] * len(frames) and not random.candidate
    assert codec.start(Path("x.npz"), 10 << 20).frame(bytes(1 << 16), 0)[0] in (ZLIB, XZ)


def _file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
