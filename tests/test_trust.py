"""Trust (issue 9, items 1-4): the stored agent is re-verified, trust replaces a changed host key,
the host's files get sane modes, and two runs pushing one file to one device never share a part file.

Everything runs against the real parts: the local device, the loopback sshd, the real agent.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import write_inventory

from edgeq.cli.main import main
from edgeq.devices.deploy import AGENT_SOURCE, Deployer
from edgeq.devices.inventory import connect, load_inventory
from edgeq.devices.run import RunSpec, run_on_device
from edgeq.devices.transport.base import sha256_file
from edgeq.devices.transport.ssh import HOST_TAG, SshTransport
from edgeq.errors import TransportError

AGENT_SHA = sha256_file(AGENT_SOURCE)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_0():
    """The loosest umask: modes that come out right here do not lean on the user's umask."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


# ---- 1. the stored agent is verified before it runs -------------------------------------------

def stored_agent(device) -> Path:
    return Path(device.workdir) / "agents" / f"edgeq_agent-{AGENT_SHA[:12]}.pyz"


@pytest.mark.parametrize("which", ["local", "ssh_device"])
def test_an_edited_agent_on_the_device_is_replaced_before_it_runs(which, request, example_tflite, small_inputs,
                                                                   tmp_path, capsys):
    device = request.getfixturevalue(which)
    device = device[0] if isinstance(device, tuple) else device
    spec = RunSpec(model=example_tflite[1], inputs=small_inputs)
    run_on_device(device, [spec], [tmp_path / "first"])
    agent, marker = stored_agent(device), tmp_path / "EDITED_AGENT_RAN"
    assert sha256_file(agent) == AGENT_SHA
    agent.write_bytes(f"open({str(marker)!r}, 'w').close()\n".encode() + agent.read_bytes())
    capsys.readouterr()
    (second,) = run_on_device(device, [spec], [tmp_path / "second"])
    err = capsys.readouterr().err
    assert second.n == 40 and not marker.exists()
    assert sha256_file(agent) == AGENT_SHA
    said = [line for line in err.splitlines() if "stored agent" in line]
    assert len(said) == 1 and "changed on the device" in said[0] and "pushing it again" in said[0]


def test_an_intact_agent_is_not_sent_again_and_nothing_is_said(local, capsys):
    with connect(local) as transport:
        Deployer(transport, local.workdir).push_agent()
        again = Deployer(transport, local.workdir)
        again.push_agent()
    assert again.transfers[0].skipped and "stored agent" not in capsys.readouterr().err


def test_an_agent_with_bytes_appended_is_replaced(local, capsys):
    with connect(local) as transport:
        remote = Deployer(transport, local.workdir).push_agent()
        with open(remote, "a") as handle:
            handle.write("\nimport os; os.system('true')\n")
        Deployer(transport, local.workdir).push_agent()
    assert sha256_file(Path(remote)) == AGENT_SHA and "changed on the device" in capsys.readouterr().err


# ---- 2. trust replaces a changed host key ----------------------------------------------------

@pytest.fixture
def changed_key(sshd_server, sshd_session, tmp_path):
    """A device whose known_hosts pins another server's key for its address: a reinstalled board."""
    known = tmp_path / "keys" / "known_hosts"
    known.parent.mkdir()
    known.write_text("# lab keys\n" + sshd_session.known_hosts_line(sshd_server.host, sshd_server.port))
    entry = dict(sshd_server.inventory_entry(), known_hosts=str(known), workdir=str(tmp_path / "w"))
    return write_inventory(tmp_path / "edgeq.toml", {"pi-new": entry}), known


def host_lines(known: Path, server) -> list[str]:
    return [line for line in known.read_text().splitlines() if line.startswith(f"[{server.host}]:{server.port} ")]


def test_changed_host_key_says_how_to_repin_and_trust_yes_replaces_it(changed_key, sshd_server, sshd_session):
    inventory, known = changed_key
    device = load_inventory(inventory)["pi-new"]
    with pytest.raises(TransportError) as refused:
        SshTransport(device, retries=0).run(["true"])
    assert "HOST KEY CHANGED" in str(refused.value) and "`edgeq devices trust pi-new`" in str(refused.value)
    assert "\n" not in str(refused.value)
    runner = CliRunner()
    failed = runner.invoke(main, ["devices", "check", "pi-new", "--inventory", str(inventory)])
    assert failed.exit_code == 3, failed.output
    trusted = runner.invoke(main, ["devices", "trust", "pi-new", "--inventory", str(inventory), "--yes"])
    assert trusted.exit_code == 0, trusted.output
    assert sshd_server.host_key_fingerprint in trusted.output and sshd_session.host_key_fingerprint in trusted.output
    assert "replaced" in trusted.output
    assert host_lines(known, sshd_server) == [sshd_server.known_hosts_line().strip()]
    assert known.read_text().startswith("# lab keys\n")  # other lines are kept
    assert mode(known) == 0o600
    checked = runner.invoke(main, ["devices", "check", "pi-new", "--inventory", str(inventory)])
    assert checked.exit_code == 0, checked.output
    again = runner.invoke(main, ["devices", "trust", "pi-new", "--inventory", str(inventory), "--yes"])
    assert again.exit_code == 0 and "already pinned" in again.output
    assert len(host_lines(known, sshd_server)) == 1


def test_declining_to_replace_a_changed_key_exits_2_and_changes_nothing(changed_key, sshd_server, sshd_session):
    inventory, known = changed_key
    before = known.read_bytes()
    declined = CliRunner().invoke(main, ["devices", "trust", "pi-new", "--inventory", str(inventory)], input="n\n")
    assert declined.exit_code == 2, declined.output
    assert sshd_server.host_key_fingerprint in declined.output and sshd_session.host_key_fingerprint in declined.output
    assert "not pinned" in declined.output
    assert known.read_bytes() == before


def test_replacing_with_a_confirmed_prompt_and_a_hashed_old_entry(changed_key, sshd_server):
    """``ssh-keygen -H`` hashes host names; the old key is found and dropped all the same."""
    import paramiko

    inventory, known = changed_key
    name = f"[{sshd_server.host}]:{sshd_server.port}"
    old_line = host_lines(known, sshd_server)[0]
    known.write_text(old_line.replace(name, paramiko.HostKeys.hash_host(name), 1) + "\n")
    confirmed = CliRunner().invoke(main, ["devices", "trust", "pi-new", "--inventory", str(inventory)], input="y\n")
    assert confirmed.exit_code == 0, confirmed.output
    assert known.read_text().splitlines() == [sshd_server.known_hosts_line().strip()]
    with SshTransport(load_inventory(inventory)["pi-new"]) as ssh:
        assert ssh.run(["echo", "ok"]).stdout.strip() == "ok"


# ---- 3. modes of what the host writes --------------------------------------------------------

def test_a_new_known_hosts_file_is_0600_in_a_0700_folder(sshd_server, tmp_path, umask_0):
    known = tmp_path / "new" / "ssh" / "known_hosts"
    entry = dict(sshd_server.inventory_entry(), known_hosts=str(known))
    inventory = write_inventory(tmp_path / "edgeq.toml", {"pi": entry})
    pinned = CliRunner().invoke(main, ["devices", "trust", "pi", "--inventory", str(inventory),
                                       "--fingerprint", sshd_server.host_key_fingerprint])
    assert pinned.exit_code == 0, pinned.output
    assert mode(known) == 0o600 and mode(known.parent) == 0o700 and mode(known.parent.parent) == 0o700
    assert known.read_text() == sshd_server.known_hosts_line()


def test_history_db_is_0600_and_its_folder_0700(tmp_path, umask_0):
    from edgeq.store.db import Record, Store

    path = tmp_path / "share" / "edgeq" / "history.sqlite"
    with Store.open(str(path)) as store:
        store.add(Record(id="a", kind="run", created=1.0))
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    os.chmod(path, 0o666)  # an older one, world-writable: fixed on the next open
    Store.open(str(path)).close()
    assert not mode(path) & 0o002


def test_reports_are_0644_whatever_the_umask(tmp_path, umask_0):
    from test_report_html import make_report

    from edgeq.reports.report import write_report

    (tmp_path / "report.html").write_text("old")
    os.chmod(tmp_path / "report.html", 0o666)
    json_path, html_path = write_report(tmp_path, make_report(), {})
    assert mode(json_path) == 0o644 and mode(html_path) == 0o644


# ---- 4. concurrent pushes and pulls never share a part file --------------------------------

@pytest.fixture
def big_file(tmp_path) -> Path:
    path = tmp_path / "model-6mb.bin"
    path.write_bytes(os.urandom(6_000_000))
    return path


def together(count: int, work) -> list:
    """Run ``work(i)`` in ``count`` threads released at once; re-raise the first failure."""
    barrier, results, errors = threading.Barrier(count), [None] * count, []

    def one(i):
        try:
            barrier.wait(timeout=60)
            results[i] = work(i)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def test_two_runs_pushing_and_pulling_one_file_at_once(ssh_device, big_file, tmp_path):
    device, _ = ssh_device
    digest = sha256_file(big_file)
    remote_dir = Path(device.workdir) / "cas"
    remote_dir.mkdir(parents=True)
    remote = str(remote_dir / f"{digest}.bin")
    sessions = [SshTransport(device), SshTransport(device)]
    try:
        for round_ in range(5):
            Path(remote).unlink(missing_ok=True)
            sent = together(2, lambda i: sessions[i].put(big_file, remote, sha256=digest))
            assert [t.sha256 for t in sent] == [digest, digest] and sha256_file(Path(remote)) == digest
            back = tmp_path / f"back-{round_}" / "model.bin"
            got = together(2, lambda i: sessions[i].get(remote, back))
            assert [t.sha256 for t in got] == [digest, digest] and sha256_file(back) == digest
            assert [p.name for p in back.parent.iterdir()] == ["model.bin"]
        assert sorted(os.listdir(remote_dir)) == [f"{digest}.bin"]  # no part file left behind
    finally:
        for session in sessions:
            session.close()


def dead_pid() -> int:
    """The PID of a process that has exited (a run killed mid-upload)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_dead_runs_part_is_resumed_a_live_ones_left_alone(ssh_device, big_file):
    device, _ = ssh_device
    data, digest = big_file.read_bytes(), sha256_file(big_file)
    folder = Path(device.workdir) / "cas"
    folder.mkdir(parents=True)
    remote = folder / f"{digest}.bin"
    dead = folder / f".{remote.name}.{HOST_TAG}-{dead_pid()}-0000aaaa.part"
    dead.write_bytes(data[:2_000_000])
    dead_too = folder / f".{remote.name}.{HOST_TAG}-{dead_pid()}-0000bbbb.part"
    dead_too.write_bytes(data[:1_000])
    live = folder / f".{remote.name}.{HOST_TAG}-1-0000cccc.part"  # PID 1 is always alive
    other_host = folder / f".{remote.name}.0123abcd-{dead_pid()}-0000dddd.part"  # its PIDs mean nothing here
    for keep in (live, other_host):
        keep.write_bytes(b"someone else's")
    with SshTransport(device) as ssh:
        sent = ssh.put(big_file, str(remote), sha256=digest)
    assert sha256_file(remote) == digest and sent.bytes_moved < len(data) - 900_000  # resumed, not restarted
    assert not dead.exists() and not dead_too.exists()
    assert live.read_bytes() == other_host.read_bytes() == b"someone else's"


def test_a_dead_runs_part_of_other_bytes_is_started_over(ssh_device, big_file):
    device, _ = ssh_device
    digest = sha256_file(big_file)
    folder = Path(device.workdir) / "cas"
    folder.mkdir(parents=True)
    remote = folder / f"{digest}.bin"
    (folder / f".{remote.name}.{HOST_TAG}-{dead_pid()}-0000aaaa.part").write_bytes(b"x" * 100_000)
    with SshTransport(device) as ssh:
        ssh.put(big_file, str(remote), sha256=digest)
    assert sha256_file(remote) == digest and sorted(os.listdir(folder)) == [remote.name]


def test_a_cut_upload_keeps_its_own_part_and_the_next_push_resumes_it(sshd_session, tcp_proxy_factory, big_file,
                                                                       tmp_path):
    """The part name is unique now, but resuming after a failed push (same process) still works."""
    proxy = tcp_proxy_factory(sshd_session)
    entry = dict(proxy.inventory_entry(), workdir=str(tmp_path / "w"), retries=0)
    device = load_inventory(write_inventory(tmp_path / "p.toml", {"pi": entry}))["pi"]
    stored = tmp_path / "w" / "cas" / (sha256_file(big_file) + ".bin")
    with SshTransport(device, backoff_s=0.1) as ssh:
        deployer = Deployer(ssh, device.workdir)
        deployer.push_agent()
        proxy.cut_after(2_000_000, refuse_after=True)
        with pytest.raises(TransportError, match="model-6mb.bin"):
            deployer.push(big_file)
    proxy.resume()
    assert not stored.exists() and len(list(stored.parent.glob(f".{stored.name}.*.part"))) == 1
    with SshTransport(device) as ssh:
        deployer = Deployer(ssh, device.workdir)
        deployer.push(big_file)
    assert 0 < deployer.transfers[-1].bytes_moved < big_file.stat().st_size  # resumed, not restarted
    assert sha256_file(stored) == sha256_file(big_file) and os.listdir(stored.parent) == [stored.name]


def test_an_agent_that_reports_another_sha_is_refused():
    """The last gap: a file swapped between the host's check and the start shows in hello."""
    from edgeq.devices.deploy import AGENT_SOURCE
    from edgeq.devices.run import check_running_agent
    from edgeq.devices.transport.base import sha256_file
    from edgeq.errors import TransportError

    check_running_agent("pi", {"agent_sha256": sha256_file(AGENT_SOURCE)})
    with pytest.raises(TransportError, match="pi: the agent that started reports sha256 0123456789ab"):
        check_running_agent("pi", {"agent_sha256": "0123456789abcdef"})
