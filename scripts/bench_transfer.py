#!/usr/bin/env python3
"""Transfer speed of edgeq's SSH deploy path, measured against baselines taken in the same run.

Why: edgeq claims pushes faster than `scp` although each upload goes to a `.part` name, is
verified with sha256 on the device and renamed; that unchanged content is never sent
twice; that a fleet runs in parallel. Speed is measured, not asserted: every figure is a
ratio against a baseline measured in this run, on the same sshd and the same files.

  (a) Deployer.push of a 50 MB random .tflite into an empty workdir inside a run (open_session:
      agent pushed and started, its receiver beside it; the push hashes on the host, streams
      through the receiver, which hashes while writing, and renames) vs OpenSSH `scp` to the same
      sshd; interleaved rounds, medians. Goal >= 1.5x scp. Also the push on a new connection
      without an agent (pipelined SFTP, then sha256sum), SshTransport.put and the bare SFTP write
      (_upload_from) on an open connection, and an image input set pushed in a run vs scp.
  (b) re-push of the unchanged file: bytes moved and wall time, fresh and open connection;
      bytes on the wire counted through tests/lab.py's TcpProxy.
  (c) run_on_device of the built-in example on 1 vs 4 network-namespace devices via
      run_fleet (fresh workdirs: pushes included), inference-bound and transfer-bound
      (a 20 MB input set, 200 inferences), with the machine's busy CPU-seconds per run.
  (d) an image input set (--image-mb, ~15 MB: the example's digits as 28x28 8-bit images scaled
      to float32 [0, 1], through the risky suite: shifts, noise, blur, jpeg, occlusion...) pushed
      in a run to a network-namespace device behind a 10 Mbit/s link (tc tbf on its veth) vs
      `scp` through the same link; interleaved rounds, medians. Goal >= 3x scp. The push is
      compressed block by block as the link and the codecs measure (Transfer.wire_bytes).

Lab sshds run commands through this user's shell, and bash sources ~/.bashrc for them;
--plain-shell bind-mounts /dev/null over it in sshd's private mount namespace (the host
is untouched) to tell edgeq's cost from this machine's shell start-up.

Needs root (network namespaces), sshd, scp, ip, unshare. From the repository root:

    .venv/bin/python scripts/bench_transfer.py [--size-mb 50] [--rounds 3] [--image-mb 15] [--slow-rounds 2]
                                               [--no-fleet] [--plain-shell] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import lab  # noqa: E402  (tests/lab.py: real sshd servers and namespace devices)
from edgeq.models.convert import convert_model  # noqa: E402  (imports TensorFlow only when called)
from edgeq.devices.deploy import Deployer  # noqa: E402
from edgeq.devices.inventory import device_from_entry  # noqa: E402
from edgeq.evaluate import EXAMPLE_DATA, EXAMPLE_MODEL  # noqa: E402
from edgeq.devices.fleet import run_fleet  # noqa: E402
from edgeq.inputs.inputset import InputSet  # noqa: E402
from edgeq.devices.run import RunSpec, run_on_device  # noqa: E402
from edgeq.devices.session import open_session  # noqa: E402
from edgeq.devices.transport.ssh import SshTransport  # noqa: E402
from edgeq.inputs.risky import write_risky_suite  # noqa: E402

MB = 1e6


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=50, help="size of the model-like file (a)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds in (a), at least 3")
    parser.add_argument("--fleet-reps", type=int, default=2, help="repetitions of each fleet run (c)")
    parser.add_argument("--samples", type=int, default=2000, help="inferences per device in (c)")
    parser.add_argument("--no-fleet", action="store_true", help="skip (c)")
    parser.add_argument("--image-mb", type=float, default=15, help="about the size of the image input set (a, d)")
    parser.add_argument("--slow-rounds", type=int, default=2, help="interleaved rounds through the 10 Mbit/s link (d)")
    parser.add_argument("--slow-rate", default="10mbit", help="tc tbf rate of the slow link (d)")
    parser.add_argument("--plain-shell", action="store_true", help="hide ~/.bashrc from the lab sshds only (their commands skip this user's shell start-up)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return parser.parse_args(argv)


def timed(fn, *args):
    start = time.perf_counter()
    value = fn(*args)
    return time.perf_counter() - start, value


def busy_cpu_s() -> float:
    """CPU-seconds the whole machine spent busy (every process, every core), from /proc/stat."""
    fields = [int(v) for v in open("/proc/stat").readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def plain_shell_sshd() -> None:
    """Lab sshds started from now on see an empty ~/.bashrc, in their private mount namespace."""
    original, bashrc = lab.SshServer._launch_command, Path.home() / ".bashrc"

    def launch(self):
        cmd, script = original(self), self.dir / "launch.sh"
        script.write_text(script.read_text().replace("\nexec ", f"\nmount --bind /dev/null {bashrc}\nexec ", 1))
        return cmd

    if bashrc.exists() and lab.can_unshare():
        lab.SshServer._launch_command = launch


def ssh_device(server, name: str, workdir: Path, **override):
    return device_from_entry(name, {**server.inventory_entry(), "workdir": str(workdir), **override})


def edgeq_push(device, local: Path) -> int:
    """Deployer.push on a new connection; returns the bytes it moved."""
    with SshTransport(device) as transport:
        deployer = Deployer(transport, device.workdir)
        deployer.push(local)
        return sum(t.bytes_moved for t in deployer.transfers)


def edgeq_push_in_run(device, local: Path) -> float:
    """The push as run_on_device does it: in open_session (agent pushed, started, hello, lock), timed alone."""
    return push_in_session(device, local)[0]


def push_in_session(device, local: Path) -> tuple[float, float, object]:
    """(push s, whole session s, Transfer): connect, push the agent, start it, hello, lock, then the timed push."""
    start = time.perf_counter()
    with open_session(device, lock=True) as opened:
        seconds, _ = timed(opened.deployer.push, local)
        transfer = opened.deployer.transfers[-1]
    return seconds, time.perf_counter() - start, transfer


def scp(server, local: Path, remote: Path) -> None:
    subprocess.run(["scp", "-F", "/dev/null", "-i", str(server.client_key), "-P", str(server.port),
                    "-o", f"UserKnownHostsFile={server.known_hosts}", "-o", "StrictHostKeyChecking=yes",
                    "-o", "BatchMode=yes", "-q", str(local), f"{server.user}@{server.host}:{remote}"], check=True)


def open_put(device, local: Path, remote_dir: Path, raw: bool) -> dict:
    """Connect, run one command (mkdir), then SshTransport.put or the bare SFTP write: each timed."""
    with SshTransport(device) as transport:
        connect_s, _ = timed(lambda: transport.sftp)
        command_s, _ = timed(transport.makedirs, str(remote_dir))
        put = (transport._upload_from, local, str(remote_dir / ".m.part"), 0) if raw else \
              (transport.put, local, str(remote_dir / "m.tflite"))
        return {"connect": connect_s, "command": command_s, "raw_sftp" if raw else "put": timed(*put)[0]}


def bench_push(server, local: Path, images: Path, rounds: int) -> dict:
    device, root = ssh_device(server, "loop", server.workdir), server.workdir
    runs = {"push": [], "push_fresh": [], "scp": [], "put": [], "raw_sftp": [], "connect": [], "command": [],
            "images_push": [], "images_scp": []}
    for i in range(rounds):  # fresh destinations every round; the order rotates, no method always first
        steps = [lambda: {"push": edgeq_push_in_run(ssh_device(server, "loop", root / f"run{i}"), local),
                          "push_fresh": timed(edgeq_push, ssh_device(server, "loop", root / f"push{i}"), local)[0]},
                 lambda: {"scp": timed(scp, server, local, root / f"scp{i}.tflite")[0]},
                 lambda: open_put(device, local, root / f"put{i}", raw=False),
                 lambda: open_put(device, local, root / f"raw{i}", raw=True),
                 lambda: {"images_push": edgeq_push_in_run(ssh_device(server, "loop", root / f"img{i}"), images),
                          "images_scp": timed(scp, server, images, root / f"img{i}.npz")[0]}]
        for step in steps[i % len(steps):] + steps[:i % len(steps)]:
            for name, seconds in step().items():
                runs[name].append(seconds)
        for leftover in root.iterdir():
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
    figures = {name: statistics.median(values) for name, values in runs.items()}
    figures.update({f"{n}_MBps": local.stat().st_size / MB / figures[n]
                    for n in ("push", "push_fresh", "scp", "put", "raw_sftp")})
    figures.update({f"{n}_MBps": images.stat().st_size / MB / figures[n] for n in ("images_push", "images_scp")})
    return {**figures, "runs_s": runs}


def make_image_set(tmp: Path, megabytes: float) -> Path:
    """An image input set like a camera model's: the example's digits as 28x28 8-bit images (bilinear from 8x8),
    scaled to float32 [0, 1] as a Keras model takes them, through the risky suite (shifts, noise, blur, jpeg,
    occlusion, ...); about ``megabytes`` MB, stored as edgeq writes input sets (.npz members not compressed)."""
    with np.load(EXAMPLE_DATA) as data:
        x, y = data["x"].reshape(-1, 8, 8) / 16.0, data["y"]
    grid = np.linspace(0, 7, 28)
    low = np.floor(grid).astype(int)
    high, w = np.minimum(low + 1, 7), (grid - low)[None, :, None]
    rows = x[:, low] * (1 - w) + x[:, high] * w
    w = w.reshape(1, 1, -1)
    images = rows[:, :, low] * (1 - w) + rows[:, :, high] * w
    images = (np.round(images * 255) / 255).astype(np.float32)[..., None]  # 8-bit pixels, as a camera gives
    per_sample = 28 * 28 * 4
    per_category = max(1, int(megabytes * 1e6 / per_sample / 47))  # ~47 samples per source image in the suite
    path = tmp / "images.npz"
    plan = write_risky_suite(path, {"x": images}, y, seed=0, max_per_category=per_category)
    print(f"    image input set: {plan.n} samples of 28x28x1 float32, {path.stat().st_size / MB:.1f} MB")
    return path


def bench_slow_link(tmp: Path, images: Path, rounds: int, rate: str) -> dict:
    """(d): the image set pushed in a run vs scp, both through one tbf-shaped veth to a namespace device."""
    runs = {"push": [], "session": [], "scp": [], "wire": []}
    with lab.NetnsLab(1, tmp / "slow") as netns:
        device = netns.devices[0]
        netns.rate_limit(device, rate=rate, burst="32kbit", latency="400ms")
        server = device.server
        for i in range(rounds):
            def ours():
                push_s, session_s, transfer = push_in_session(ssh_device(server, device.name,
                                                                         server.workdir / f"run{i}"), images)
                runs["push"].append(push_s)
                runs["session"].append(session_s)
                runs["wire"].append(transfer.wire_bytes)
                print(f"    round {i}: push {push_s:.2f} s (session {session_s:.2f} s, "
                      f"{transfer.wire_bytes / MB:.2f} MB on the wire)", flush=True)

            def theirs():
                runs["scp"].append(timed(scp, server, images, server.workdir / f"scp{i}.npz")[0])
                print(f"    round {i}: scp {runs['scp'][-1]:.2f} s", flush=True)

            for step in (ours, theirs) if i % 2 == 0 else (theirs, ours):
                step()
    size = images.stat().st_size
    figures = {n: statistics.median(v) for n, v in runs.items()}
    return {**figures, "size": size, "rate": rate, "runs": runs,
            "push_MBps": size / MB / figures["push"], "scp_MBps": size / MB / figures["scp"],
            "session_MBps": size / MB / figures["session"]}


def bench_repush(server, local: Path) -> dict:
    device = ssh_device(server, "loop", server.workdir / "repush")
    edgeq_push(device, local)
    fresh_s, fresh_bytes = timed(edgeq_push, device, local)
    with SshTransport(device) as transport:
        transport.sftp  # connected before the clock starts
        deployer = Deployer(transport, device.workdir)
        open_s, _ = timed(deployer.push, local)
    proxy = lab.TcpProxy(server)  # counts what really crosses the wire
    try:
        edgeq_push(ssh_device(server, "loop", Path(device.workdir), host=proxy.host, port=proxy.port), local)
        wire_up = proxy.bytes_forwarded["up"]
    finally:
        proxy.close()
    return {"fresh_s": fresh_s, "fresh_bytes": fresh_bytes, "open_s": open_s,
            "open_bytes": sum(t.bytes_moved for t in deployer.transfers), "wire_bytes_up": wire_up}


def make_inputs(tmp: Path, samples: int, pad_mb: int = 0) -> Path:
    with np.load(EXAMPLE_DATA) as data:
        idx = np.arange(samples) % len(data["y"])
        arrays, y = {"x": np.ascontiguousarray(data["x"][idx])}, data["y"][idx]
    if pad_mb:  # an array the agent never reads: bytes to move, not work to do
        shape = (samples, pad_mb * 1_000_000 // samples)
        arrays["pad"] = np.random.default_rng(1).integers(0, 255, shape, dtype=np.uint8)
    return InputSet(arrays=arrays, y=y).save(tmp / f"inputs-{samples}-{pad_mb}mb.npz")


def fleet_run(netns, model: Path, inputs: Path, n: int, tag: str, tmp: Path) -> tuple[float, float]:
    """(wall s, machine busy CPU-s) of run_fleet over the first n devices, fresh workdirs."""
    devices = [ssh_device(d.server, d.name, d.server.workdir / tag) for d in netns.devices[:n]]
    spec, cpu = RunSpec(model=model, inputs=inputs, label="quant"), busy_cpu_s()
    wall, result = timed(run_fleet, devices, lambda dev: run_on_device(dev, [spec], [tmp / "runs" / tag / dev.name]))
    if result.failed:
        raise SystemExit(f"fleet run {tag} failed: {result.failed}")
    return wall, busy_cpu_s() - cpu


def bench_fleet(netns, model: Path, inputs: Path, reps: int, tmp: Path, kind: str) -> dict:
    out = {"one_s": [], "four_s": [], "one_cpu_s": [], "four_cpu_s": []}
    for rep in range(reps):
        for n, key in ((1, "one"), (4, "four"))[::1 if rep % 2 == 0 else -1]:
            wall, cpu = fleet_run(netns, model, inputs, n, f"{kind}-{n}dev-{rep}", tmp)
            out[f"{key}_s"].append(wall)
            out[f"{key}_cpu_s"].append(cpu)
    one, four = statistics.median(out["one_s"]), statistics.median(out["four_s"])
    return {**out, "one_median_s": one, "four_median_s": four, "ratio": four / one,
            "ratios": [f / o for f, o in zip(out["four_s"], out["one_s"])]}


def rows(a: dict, b: dict, c: dict, d: dict | None) -> list[tuple]:
    """(name, measured, baseline, ratio, goal, met); met None = information only."""
    def row(name, value, base=None, goal="info", met=None):
        return name, value, base, value / base if base else None, goal, met

    out = [row("(a) push in a run MB/s vs scp MB/s", a["push_MBps"], a["scp_MBps"], ">= 1.5",
               a["push_MBps"] >= 1.5 * a["scp_MBps"]),
           row("(a) push, new connection + sha256sum", a["push_fresh_MBps"], a["scp_MBps"]),
           row("(a) SshTransport.put MB/s, open conn", a["put_MBps"], a["scp_MBps"]),
           row("(a) bare SFTP write MB/s, open conn", a["raw_sftp_MBps"], a["scp_MBps"]),
           row("(a) image set in a run MB/s vs scp", a["images_push_MBps"], a["images_scp_MBps"]),
           row("(a) connect ssh+sftp s", a["connect"]),
           row("(a) one remote command (mkdir) s", a["command"]),
           row("(b) re-push bytes moved, fresh conn", b["fresh_bytes"], None, "== 0", b["fresh_bytes"] == 0),
           row("(b) re-push bytes moved, open conn", b["open_bytes"], None, "== 0", b["open_bytes"] == 0),
           row("(b) re-push bytes on the wire, up", b["wire_bytes_up"]),
           row("(b) re-push s, fresh conn (vs push)", b["fresh_s"], a["push"], "< 1 s", b["fresh_s"] < 1),
           row("(b) re-push s, open conn (vs push)", b["open_s"], a["push"], "< 1 s", b["open_s"] < 1)]
    for kind, f in c.items():
        out += [row(f"(c) fleet wall s 4/1, {kind}", f["four_median_s"], f["one_median_s"], "<= 1.5",
                    f["ratio"] <= 1.5),
                row(f"(c) machine CPU-s 4/1, {kind}", statistics.median(f["four_cpu_s"]),
                    statistics.median(f["one_cpu_s"]))]
    if d:
        out += [row(f"(d) image set, {d['rate']}: push MB/s vs scp", d["push_MBps"], d["scp_MBps"], ">= 3.0",
                    d["push_MBps"] >= 3 * d["scp_MBps"]),
                row("(d) same, whole session + push vs scp", d["session_MBps"], d["scp_MBps"]),
                row("(d) file MB / MB on the wire", d["size"] / MB, d["wire"] / MB)]
    return out


def print_table(table: list[tuple]) -> None:
    fmt = lambda v: "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))  # noqa: E731
    print(f"\n{'name':40} {'measured':>9} {'baseline':>9} {'ratio':>6}  {'goal':6} met?")
    for name, measured, baseline, ratio, goal, met in table:
        verdict = "-" if met is None else ("yes" if met else "NO")
        print(f"{name:40} {fmt(measured):>9} {fmt(baseline):>9} {fmt(ratio):>6}  {goal:6} {verdict}")


def run(args, tmp: Path, stack: ExitStack) -> dict:
    show = lambda values: " ".join(f"{v:.2f}" for v in values)  # noqa: E731
    local = tmp / "model.tflite"
    local.write_bytes(np.random.default_rng(0).bytes(args.size_mb * 1_000_000))
    server = stack.enter_context(lab.SshServer(tmp / "sshd"))
    print(f"load average {open('/proc/loadavg').read().split()[0]}, {os.cpu_count()} cores"
          f"{', --plain-shell' if args.plain_shell else ''}")
    images = make_image_set(tmp, args.image_mb)
    print(f"(a) {args.size_mb} MB push vs scp, {args.rounds} interleaved rounds, sshd {server.host}:{server.port}")
    a = bench_push(server, local, images, args.rounds)
    for name, values in a["runs_s"].items():
        print(f"    {name:9} s: {' '.join(f'{v:.3f}' for v in values)}")
    b = bench_repush(server, local)
    print(f"(b) re-push: fresh connection {b['fresh_s']:.3f} s, open connection {b['open_s']:.3f} s")
    print(f"(d) image set through a {args.slow_rate} link vs scp, {args.slow_rounds} interleaved rounds")
    d = bench_slow_link(tmp, images, max(args.slow_rounds, 1), args.slow_rate)
    c = {}
    if not args.no_fleet:
        print("(c) fleet: converting the example, starting 4 namespace devices")
        model = convert_model(EXAMPLE_MODEL, tmp / "models").quant_path
        netns = stack.enter_context(lab.NetnsLab(4, tmp / "netns"))
        fleet_run(netns, model, make_inputs(tmp, 100), 4, "warmup", tmp)  # page cache, first imports: not timed
        for kind, inputs in ((f"{args.samples} inferences", make_inputs(tmp, args.samples)),
                             ("20 MB set, 200 inf", make_inputs(tmp, 200, pad_mb=20))):
            f = c[kind] = bench_fleet(netns, model, inputs, args.fleet_reps, tmp, kind.split()[0])
            print(f"    {kind}: 1 dev {show(f['one_s'])} s ({show(f['one_cpu_s'])} CPU-s), 4 dev "
                  f"{show(f['four_s'])} s ({show(f['four_cpu_s'])} CPU-s), 4/1 {show(f['ratios'])}")
    table = rows(a, b, c, d)
    print_table(table)
    return {"push": a, "repush": b, "fleet": c, "slow_link": d, "cores": os.cpu_count(),
            "plain_shell": args.plain_shell,
            "table": [dict(zip(("name", "measured", "baseline", "ratio", "goal", "met"), r)) for r in table]}


def main(argv=None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench_transfer.py must run as root: (c) needs network namespaces and sshd a private /run.\n"
              "Run: sudo .venv/bin/python scripts/bench_transfer.py", file=sys.stderr)
        return 2
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    missing = [t for t in ("sshd", "scp", "ip", "unshare", "ssh-keygen", "tc") if not shutil.which(t, path=path)]
    if missing:
        print(f"missing {', '.join(missing)}: `bash scripts/setup.sh --tests` installs them", file=sys.stderr)
        return 2
    args.rounds = max(args.rounds, 3)
    if args.plain_shell:
        plain_shell_sshd()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgeq-bench-") as tmpdir, ExitStack() as stack:
        os.environ["EDGEQ_SSH_CONFIG"] = str(Path(tmpdir) / "no-ssh-config")  # keep ~/.ssh/config out
        figures = run(args, Path(tmpdir), stack)
    figures["total_s"] = time.perf_counter() - start
    print(f"\ntotal {figures['total_s']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
