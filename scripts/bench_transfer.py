#!/usr/bin/env python3
"""Transfer speed of edgeq's SSH deploy path, measured against baselines taken in the same run.

Why: edgeq claims its pushes are at least as fast as plain `scp` although every upload
goes to a `.part` name, is checked with sha256sum on the device and renamed; that an
unchanged model is never sent twice; and that a fleet runs in parallel, not one device
after another. Speed is measured, not asserted: each figure is a ratio against a
baseline measured in this run, on the same sshd and the same files.

  (a) Deployer.push of a 50 MB random .tflite into an empty workdir (connect, local hash,
      SFTP upload, remote sha256sum, rename) vs OpenSSH `scp` of the same file to the same
      sshd; interleaved rounds, median. Also SshTransport.put and the bare SFTP write
      (SshTransport._upload_from) on an open connection, to show what verification costs.
  (b) re-push of the unchanged file: bytes moved and wall time, with a fresh connection
      and with an open one; wire bytes counted through tests/lab.py's TcpProxy.
  (c) run_on_device of the built-in example on 1 vs 4 network-namespace devices through
      run_fleet (fresh workdirs, so pushes are included): inference-bound and
      transfer-bound (a 20 MB input set, 200 inferences). This box has 2 cores.

Needs root (network namespaces), sshd, scp, ip, unshare. From the repository root:

    .venv/bin/python scripts/bench_transfer.py [--size-mb 50] [--rounds 3] [--json FILE]
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
MB = 1e6


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=50, help="size of the model-like file (a)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds in (a), at least 3")
    parser.add_argument("--fleet-reps", type=int, default=2, help="repetitions of each fleet run (c)")
    parser.add_argument("--samples", type=int, default=2000, help="inferences per device in (c)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return parser.parse_args(argv)


def timed(fn, *args):
    start = time.perf_counter()
    value = fn(*args)
    return time.perf_counter() - start, value


def ssh_device(server, name: str, workdir: Path, **override):
    from edgeq.devices import Device

    return Device(name=name, **{**server.inventory_entry(), "workdir": str(workdir), **override})


# ---- (a) one 50 MB push --------------------------------------------------------------------

def edgeq_push(device, local: Path) -> tuple[str, int]:
    from edgeq.deploy import Deployer
    from edgeq.transport.ssh import SshTransport

    with SshTransport(device) as transport:
        deployer = Deployer(transport, device.workdir)
        remote, _ = deployer.push(local)
        return remote, sum(t.bytes_moved for t in deployer.transfers)


def scp(server, local: Path, remote: Path) -> None:
    subprocess.run(["scp", "-F", "/dev/null", "-i", str(server.client_key), "-P", str(server.port),
                    "-o", f"UserKnownHostsFile={server.known_hosts}", "-o", "StrictHostKeyChecking=yes",
                    "-o", "BatchMode=yes", "-q", str(local), f"{server.user}@{server.host}:{remote}"], check=True)


def open_put(device, local: Path, remote_dir: Path, raw: bool) -> tuple[float, float]:
    """(connect s, upload s) on one connection: SshTransport.put, or the bare SFTP write."""
    from edgeq.transport.ssh import SshTransport

    with SshTransport(device) as transport:
        connect_s, _ = timed(lambda: transport.sftp)
        transport.makedirs(str(remote_dir))
        if raw:
            return connect_s, timed(transport._upload_from, local, str(remote_dir / ".m.part"), 0)[0]
        return connect_s, timed(transport.put, local, str(remote_dir / "m.tflite"))[0]


def bench_push(server, local: Path, rounds: int) -> dict:
    device = ssh_device(server, "loop", server.workdir)
    size, root = local.stat().st_size, server.workdir
    walls = {"edgeq_push": [], "scp": [], "put_open": [], "raw_sftp_open": [], "connect": []}
    for i in range(rounds):
        steps = [("edgeq_push", lambda: edgeq_push(ssh_device(server, "loop", root / f"push{i}"), local)),
                 ("scp", lambda: scp(server, local, root / f"scp{i}.tflite")),
                 ("put_open", lambda: open_put(device, local, root / f"put{i}", raw=False)),
                 ("raw_sftp_open", lambda: open_put(device, local, root / f"raw{i}", raw=True))]
        for name, step in steps[i % 4:] + steps[:i % 4]:  # rotate the order: no method always goes first
            wall, value = timed(step)
            if name in ("put_open", "raw_sftp_open"):
                walls["connect"].append(value[0])
                wall = value[1]
            walls[name].append(wall)
        for leftover in root.iterdir():
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
    figures = {name: statistics.median(w) for name, w in walls.items()}
    figures.update({f"{name}_MBps": size / MB / figures[name] for name in ("edgeq_push", "scp", "put_open",
                                                                           "raw_sftp_open")})
    figures["runs_s"] = walls
    return figures


# ---- (b) re-push of unchanged content ------------------------------------------------------

def bench_repush(server, local: Path) -> dict:
    from edgeq.deploy import Deployer
    from edgeq.transport.ssh import SshTransport
    from lab import TcpProxy

    workdir = server.workdir / "repush"
    device = ssh_device(server, "loop", workdir)
    edgeq_push(device, local)
    fresh_s, (_, fresh_bytes) = timed(edgeq_push, device, local)
    with SshTransport(device) as transport:
        Deployer(transport, str(workdir)).push(local)  # connection opened, then timed
        deployer = Deployer(transport, str(workdir))
        open_s, _ = timed(deployer.push, local)
        open_bytes = sum(t.bytes_moved for t in deployer.transfers)
    proxy = TcpProxy(server)
    try:
        edgeq_push(ssh_device(server, "loop", workdir, host=proxy.host, port=proxy.port), local)
        wire_up = proxy.bytes_forwarded["up"]
    finally:
        proxy.close()
    return {"fresh_s": fresh_s, "fresh_bytes": fresh_bytes, "open_s": open_s, "open_bytes": open_bytes,
            "wire_bytes_up": wire_up}


# ---- (c) fleet -----------------------------------------------------------------------------

def make_inputs(tmp: Path, samples: int, pad_mb: int = 0) -> Path:
    from edgeq.evaluate import EXAMPLE_DATA
    from edgeq.inputset import InputSet

    with np.load(EXAMPLE_DATA) as data:
        x, y = data["x"], data["y"]
    idx = np.arange(samples) % len(x)
    arrays = {"x": np.ascontiguousarray(x[idx])}
    if pad_mb:  # extra array the agent never reads: bytes to move, not work to do
        arrays["pad"] = np.random.default_rng(1).integers(0, 255, (samples, pad_mb * 1_000_000 // samples),
                                                          dtype=np.uint8)
    return InputSet(arrays=arrays, y=y[idx]).save(tmp / f"inputs-{samples}-{pad_mb}mb.npz")


def fleet_wall(lab, model: Path, inputs: Path, n: int, tag: str, tmp: Path) -> float:
    from edgeq.fleet import run_fleet
    from edgeq.run import RunSpec, run_on_device

    devices = [ssh_device(d.server, d.name, d.server.workdir / tag) for d in lab.devices[:n]]
    spec = RunSpec(model=model, inputs=inputs, label="quant")
    wall, result = timed(run_fleet, devices,
                         lambda dev: run_on_device(dev, [spec], [tmp / "runs" / tag / dev.name]))
    if result.failed:
        raise SystemExit(f"fleet run {tag} failed: {result.failed}")
    return wall


def bench_fleet(lab, model: Path, inputs: Path, reps: int, tmp: Path, kind: str) -> dict:
    walls = {1: [], 4: []}
    for rep in range(reps):
        for n in (1, 4) if rep % 2 == 0 else (4, 1):
            walls[n].append(fleet_wall(lab, model, inputs, n, f"{kind}-{n}dev-{rep}", tmp))
    one, four = statistics.median(walls[1]), statistics.median(walls[4])
    return {"one_s": walls[1], "four_s": walls[4], "one_median_s": one, "four_median_s": four,
            "ratios": [f / o for f, o in zip(walls[4], walls[1])], "ratio": four / one}


# ---- report --------------------------------------------------------------------------------

def rows(a: dict, b: dict, c: dict) -> list[tuple]:
    """(name, measured, baseline, ratio, goal text, met)."""
    push_s = a["edgeq_push"]
    out = [("(a) edgeq push MB/s vs scp", a["edgeq_push_MBps"], a["scp_MBps"],
            a["edgeq_push_MBps"] / a["scp_MBps"], ">= 1.0", a["edgeq_push_MBps"] >= a["scp_MBps"]),
           ("(a) SshTransport.put MB/s (open)", a["put_open_MBps"], a["scp_MBps"],
            a["put_open_MBps"] / a["scp_MBps"], "info", None),
           ("(a) raw SFTP write MB/s (open)", a["raw_sftp_open_MBps"], a["scp_MBps"],
            a["raw_sftp_open_MBps"] / a["scp_MBps"], "info", None),
           ("(a) connect ssh+sftp s", a["connect"], None, None, "info", None),
           ("(b) re-push bytes, fresh conn", b["fresh_bytes"], None, None, "== 0", b["fresh_bytes"] == 0),
           ("(b) re-push bytes, open conn", b["open_bytes"], None, None, "== 0", b["open_bytes"] == 0),
           ("(b) re-push wire bytes up (ssh)", b["wire_bytes_up"], None, None, "info", None),
           ("(b) re-push s, fresh conn", b["fresh_s"], push_s, b["fresh_s"] / push_s, "< 1 s", b["fresh_s"] < 1),
           ("(b) re-push s, open conn", b["open_s"], push_s, b["open_s"] / push_s, "< 1 s", b["open_s"] < 1)]
    for kind, f in c.items():
        out.append((f"(c) fleet 4/1 wall s, {kind}", f["four_median_s"], f["one_median_s"], f["ratio"],
                    "<= 1.5", f["ratio"] <= 1.5))
    return out


def print_table(table: list[tuple]) -> None:
    fmt = lambda v: "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))  # noqa: E731
    print(f"\n{'name':36} {'measured':>10} {'baseline':>10} {'ratio':>7}  {'goal':7} met?")
    for name, measured, baseline, ratio, goal, met in table:
        verdict = "-" if met is None else ("yes" if met else "NO")
        print(f"{name:36} {fmt(measured):>10} {fmt(baseline):>10} {fmt(ratio):>7}  {goal:7} {verdict}")


def run(args, tmp: Path, stack: ExitStack) -> dict:
    from lab import NetnsLab, SshServer

    from edgeq.convert import convert_model
    from edgeq.evaluate import EXAMPLE_MODEL

    local = tmp / "model.tflite"
    local.write_bytes(np.random.default_rng(0).bytes(args.size_mb * 1_000_000))
    server = stack.enter_context(SshServer(tmp / "sshd"))
    print(f"(a) {args.size_mb} MB push vs scp, {args.rounds} interleaved rounds on {server.host}:{server.port}")
    a = bench_push(server, local, args.rounds)
    for name in ("edgeq_push", "scp", "put_open", "raw_sftp_open", "connect"):
        print(f"    {name:14} runs s: {' '.join(f'{w:.3f}' for w in a['runs_s'][name])}")
    print("(b) re-push of unchanged content")
    b = bench_repush(server, local)
    print(f"    fresh conn {b['fresh_s']:.3f} s, open conn {b['open_s']:.3f} s")
    print("(c) fleet: converting the example, starting 4 namespace devices")
    model = convert_model(EXAMPLE_MODEL, tmp / "models").quant_path
    lab = stack.enter_context(NetnsLab(4, tmp / "netns"))
    fleet_wall(lab, model, make_inputs(tmp, 100), 1, "warmup", tmp)  # page cache, first imports
    c = {}
    for kind, inputs in ((f"{args.samples} inferences", make_inputs(tmp, args.samples)),
                         ("20 MB set, 200 inf", make_inputs(tmp, 200, pad_mb=20))):
        c[kind] = bench_fleet(lab, model, inputs, args.fleet_reps, tmp, kind.split()[0])
        print(f"    {kind}: 1 dev s {['%.2f' % w for w in c[kind]['one_s']]}, 4 dev s "
              f"{['%.2f' % w for w in c[kind]['four_s']]}, ratios {['%.2f' % r for r in c[kind]['ratios']]}")
    table = rows(a, b, c)
    print_table(table)
    return {"push": a, "repush": b, "fleet": c, "cores": os.cpu_count(),
            "table": [dict(zip(("name", "measured", "baseline", "ratio", "goal", "met"), r)) for r in table]}


def main(argv=None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench_transfer.py must run as root: (c) needs network namespaces (and sshd needs a "
              "private /run). Run: sudo .venv/bin/python scripts/bench_transfer.py", file=sys.stderr)
        return 2
    missing = [t for t in ("sshd", "scp", "ip", "unshare", "ssh-keygen")
               if not shutil.which(t, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")]
    if missing:
        print(f"missing {', '.join(missing)}: bash scripts/setup.sh --tests installs them", file=sys.stderr)
        return 2
    args.rounds = max(args.rounds, 3)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgeq-bench-") as tmpdir, ExitStack() as stack:
        tmp = Path(tmpdir)
        os.environ["EDGEQ_SSH_CONFIG"] = str(tmp / "no-ssh-config")  # the user's ~/.ssh/config stays out
        figures = run(args, tmp, stack)
    figures["total_s"] = time.perf_counter() - start
    print(f"\ntotal {figures['total_s']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
