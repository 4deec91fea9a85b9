"""SSH devices through paramiko: the same run/start/put/get protocol as ``local``.

Security rules (DESIGN.md): unknown host keys are refused unless pinned with
``edgeq devices trust``; commands are argv lists quoted with ``shlex.join``; uploads
go to a ``.part`` name of their own, are checked with sha256 on the device, then renamed.

Two ways up: pipelined SFTP writes, checked afterwards by a hash on the device; and, once the
agent is on the device (``use_receiver``), its receiver (``stream_push``), which hashes while it
writes and takes compressed frames. The cipher preferred is AES-GCM (AES-NI on both ends; fastest
of what paramiko and OpenSSH share); the server's choice list decides as always.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import secrets
import shlex
import socket
import time
from pathlib import Path

import paramiko

from edgeq.errors import TransportError
from edgeq.devices.transport.base import Result, Transfer, Transport, sha256_file
from edgeq.devices.transport.settings import Setting
from edgeq.devices.transport.ssh_process import CHUNK, SshProcess, read_all
from edgeq.devices.transport.stream_push import StreamPusher
from edgeq.devices.transport.ssh_target import SshTarget, resolve_target

WINDOW_SIZE = 64 * 1024 * 1024  # a large SFTP window roughly doubles throughput (DESIGN.md)
MAX_PACKET = 256 * 1024
SFTP_REQUEST = 32768 - 128
FAST_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")  # ~20 % faster than aes-ctr + HMAC here


class UnknownHostKey(TransportError):
    """The server's key is not in known_hosts; carries the key so the CLI can show it."""

    def __init__(self, target: SshTarget, key: paramiko.PKey):
        self.target, self.key = target, key
        super().__init__(
            f"{target.device}: host key of {target.known_hosts_key} is not known "
            f"({key.get_name()} {fingerprint(key)}); check it and run `edgeq devices trust {target.device}`")


class _RememberAndReject(paramiko.MissingHostKeyPolicy):
    def __init__(self):
        self.key = None

    def missing_host_key(self, client, hostname, key):
        self.key = key
        raise paramiko.SSHException(f"unknown host key for {hostname}")


def fingerprint(key: paramiko.PKey) -> str:
    import base64

    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class SshTransport(Transport):
    """A board over SSH; the inventory keys below override the ``~/.ssh/config`` entry of ``host``."""

    SETTINGS = (
        Setting("host", str, None, "an address or a ~/.ssh/config Host; default: the device name"),
        Setting("port", int, None, "default: ~/.ssh/config, else 22", low=1, high=65535),
        Setting("user", str, None, "default: ~/.ssh/config, else your user name"),
        Setting("identity_file", str, None, "a private key; default: ~/.ssh/config, else your keys"),
        Setting("known_hosts", str, None, "pinned host keys; default: ~/.ssh/config, else ~/.ssh/known_hosts"),
        Setting("connect_timeout", float, 10.0, "seconds per connection attempt", above=0),
        Setting("retries", int, 3, "reconnects after a failed attempt, with backoff", low=0),
    )

    def __init__(self, device, *, connect_timeout: float | None = None, retries: int | None = None,
                 backoff_s: float = 1.0, keepalive_s: int = 15):
        super().__init__(device.name)
        settings = SshTransport.settings_of(device)  # also for subclasses, which hand over an SSH device
        self.target = resolve_target(device.name, settings)
        self.connect_timeout = connect_timeout or settings["connect_timeout"]
        self.retries = settings["retries"] if retries is None else retries
        self.backoff_s = backoff_s
        self.keepalive_s = keepalive_s
        self._client: paramiko.SSHClient | None = None
        self._jump: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._home: str | None = None
        self._device = device  # its python and workdir: how the agent's receiver is started
        self._pusher: StreamPusher | None = None

    @classmethod
    def read_settings(cls, device, entry, where=None):
        """``host`` defaults to the device's name: boards are usually named as in ~/.ssh/config."""
        return super().read_settings(device, {"host": device, **entry}, where)

    @classmethod
    def summary(cls, settings) -> list[str]:
        """``user@host:port`` (the parts the inventory sets; ~/.ssh/config may fill the rest), then the others."""
        user = f"{settings['user']}@" if settings.get("user") else ""
        port = f":{settings['port']}" if settings.get("port") else ""
        rest = [word for word in super().summary(settings) if word.partition("=")[0] not in ("host", "user", "port")]
        return [f"{user}{settings.get('host')}{port}", *rest]

    # ------------------------------------------------------------------ connection

    @property
    def client(self) -> paramiko.SSHClient:
        if self._client is None or not self._client.get_transport() or not self._client.get_transport().is_active():
            self._sftp = None
            self._client = self._connect_with_retries()
        return self._client

    def _connect_with_retries(self) -> paramiko.SSHClient:
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                return self._connect_once()
            except _Retryable as exc:
                if attempt == self.retries:
                    raise TransportError(f"{self.device}: cannot reach {self.target.address}: {exc} "
                                         f"(tried {self.retries + 1} times)") from None
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def _connect_once(self) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        for path in self.target.known_hosts:
            if Path(path).exists():
                client.load_host_keys(path)
        policy = _RememberAndReject()
        client.set_missing_host_key_policy(policy)
        try:
            client.connect(self.target.hostname, self.target.port, username=self.target.user,
                           key_filename=list(self.target.identity_files) or None,
                           look_for_keys=not self.target.identity_files, allow_agent=True,
                           timeout=self.connect_timeout, banner_timeout=self.connect_timeout,
                           auth_timeout=self.connect_timeout, sock=self._jump_socket(),
                           transport_factory=_transport_preferring_gcm)
        except paramiko.BadHostKeyException as exc:
            raise TransportError(
                f"{self.device}: HOST KEY CHANGED for {self.target.known_hosts_key}: got "
                f"{fingerprint(exc.key)}, known_hosts has {fingerprint(exc.expected_key)}; "
                "refusing to connect (someone may be intercepting, or the device was reinstalled: then check the "
                f"new key and re-pin it with `edgeq devices trust {shlex.quote(self.device)}`)") from None
        except paramiko.AuthenticationException as exc:
            keys = ", ".join(self.target.identity_files) or "default keys"
            raise TransportError(f"{self.device}: authentication failed for {self.target.address} "
                                 f"(tried {keys} and ssh-agent): {exc}") from None
        except paramiko.SSHException as exc:
            if policy.key is not None:
                raise UnknownHostKey(self.target, policy.key) from None
            raise _Retryable(str(exc) or exc.__class__.__name__) from None
        except (OSError, EOFError, socket.timeout) as exc:
            raise _Retryable(getattr(exc, "strerror", None) or str(exc) or exc.__class__.__name__) from None
        client.get_transport().set_keepalive(self.keepalive_s)
        return client

    def _jump_socket(self):
        if not self.target.proxy_jump:
            return None
        from edgeq.devices.inventory import Device

        spec = self.target.proxy_jump.split(",")[0]
        user, _, hostport = spec.rpartition("@")
        host, _, port = hostport.partition(":")
        settings = {"host": host, "user": user or None, "port": int(port) if port else None}
        jump = SshTransport(Device(name=f"{self.device} (jump {host})", settings=settings),
                            connect_timeout=self.connect_timeout, retries=0)
        self._jump = jump.client
        return self._jump.get_transport().open_channel(
            "direct-tcpip", (self.target.hostname, self.target.port), ("127.0.0.1", 0))

    @property
    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None or self._sftp.get_channel().closed:
            self._sftp = paramiko.SFTPClient.from_transport(self.client.get_transport(), window_size=WINDOW_SIZE,
                                                            max_packet_size=MAX_PACKET)
        return self._sftp

    def close(self):
        if self._pusher is not None:
            self._pusher.drop()  # its channel goes with the connection; the next push starts it again
        for closable in (self._sftp, self._client, self._jump):
            if closable is not None:
                try:
                    closable.close()
                except Exception:
                    pass
        self._sftp = self._client = self._jump = None

    # ------------------------------------------------------------------ commands

    def _run_impl(self, argv, stdin, timeout):
        command = shlex.join(argv)
        start = time.perf_counter()
        try:
            channel = self.client.get_transport().open_session(timeout=self.connect_timeout)
            channel.settimeout(timeout)
            channel.exec_command(command)
            if stdin:
                channel.sendall(stdin)
            channel.shutdown_write()
            stdout, stderr = read_all(channel, timeout)
            code = channel.recv_exit_status()
        except socket.timeout:
            raise TransportError(f"{self.device}: {argv[0]} did not finish in {timeout} s") from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise TransportError(f"{self.device}: connection lost while running {argv[0]}: {exc}") from None
        return Result(self.device, command, code, stdout.decode(errors="replace"),
                      stderr.decode(errors="replace"), time.perf_counter() - start)

    def _start_impl(self, argv):
        try:
            channel = self.client.get_transport().open_session(timeout=self.connect_timeout)
            channel.exec_command(shlex.join(argv))
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise TransportError(f"{self.device}: cannot start {argv[0]}: {exc}") from None
        return SshProcess(channel)

    # ------------------------------------------------------------------ files

    def use_receiver(self, agent: str) -> None:
        """Start the agent's receiver (``python -I AGENT receive``, the device's python as for the agent
        session: ``inventory.device_python``) now, in the background: ``push_streamed`` uses it."""
        pusher = self._pusher
        if pusher is not None and pusher.argv[2:3] == [agent] and not (pusher.failed or pusher.ended):
            return
        from edgeq.devices.inventory import device_python

        python = device_python(self._device, self)
        if self._pusher is not None:
            self._pusher.drop()
        self._pusher = StreamPusher(self, [python, "-I", agent, "receive"])

    def bind_receiver(self, process) -> None:
        """End the receiver with ``process`` (the agent session's), also on a connection the caller keeps."""
        if self._pusher is not None:
            self._pusher.end_with(process)

    def push_streamed(self, local: Path, remote: str, sha256: str, record: bool = False) -> Transfer | None:
        """Upload through the agent's receiver: hashed as it is written, compressed when that pays, renamed once
        verified (``record``: recorded as edgeq's first). None without a usable receiver: use ``put``."""
        if self._pusher is None or self._pusher.failed or self._pusher.ended:
            return None
        start = time.perf_counter()
        part = part_name(remote)
        _WRITING.add(posixpath.basename(part))
        try:
            adopted = self._claim_stale_part(remote, part)
            return self._pusher.put(Path(local), remote, part, adopted, sha256, record, start)
        finally:
            _WRITING.discard(posixpath.basename(part))

    def _put_impl(self, local: Path, remote: str, sha256: str, hasher) -> Transfer:
        """Upload to a part name of this transfer's own, verify, rename.

        Two runs pushing the same file to one device must never write into one part file, so
        the name carries this host, PID and a random token. A dropped connection resumes this
        transfer's part; a part left by a dead edgeq process on this host is taken over (so a
        rerun after Ctrl-C resumes too).
        """
        start = time.perf_counter()
        part = part_name(remote)
        _WRITING.add(posixpath.basename(part))
        try:
            return self._put_part(local, remote, self._adopt_stale_part(remote, part), sha256, hasher, start)
        finally:
            _WRITING.discard(posixpath.basename(part))

    def _put_part(self, local: Path, remote: str, part: str, sha256: str, hasher, start: float) -> Transfer:
        moved, resumed = self._upload_with_retries(local, part)
        digest = (hasher or self.remote_sha256)(part)
        if digest != sha256 and resumed:  # the part we resumed was from other bytes: start over once
            self.sftp.remove(part)
            more, _ = self._upload_with_retries(local, part)
            moved += more
            digest = (hasher or self.remote_sha256)(part)
        if digest != sha256:
            self.sftp.remove(part)
            raise TransportError(f"{self.device}: {local.name} arrived corrupted (sha256 mismatch); removed")
        self.sftp.posix_rename(part, remote)
        return Transfer(str(local), remote, local.stat().st_size, digest, moved, time.perf_counter() - start)

    def _adopt_stale_part(self, remote: str, part: str) -> str:
        """Rename the longest stale part of ``remote`` to ``part``; remove the other stale ones.

        Stale: left by an edgeq process of this host that has exited (or by a failed transfer
        of this one). The rename is the claim: of two runs that find one stale part, one
        rename succeeds and the other finds it gone. Parts of live processes, and of other
        hosts (whose PIDs mean nothing here), are left alone.
        """
        self._claim_stale_part(remote, part)
        return part

    def _claim_stale_part(self, remote: str, part: str) -> bool:
        """``_adopt_stale_part``; True when a stale part now sits at ``part``."""
        folder, adopted = posixpath.dirname(remote), False
        for name in self._stale_parts(remote):
            stale = posixpath.join(folder, name)
            try:
                if adopted:
                    self.sftp.remove(stale)
                else:
                    self.sftp.posix_rename(stale, part)
                    adopted = True
            except (paramiko.SSHException, OSError):  # another run claimed or removed it first
                continue
        return adopted

    def _stale_parts(self, remote: str) -> list[str]:
        """Names of ``remote``'s part files whose writers on this host are gone, longest first."""
        try:
            found = self.sftp.listdir_attr(posixpath.dirname(remote))
        except (paramiko.SSHException, OSError, EOFError):  # no folder yet, or the upload will say what broke
            return []
        stale = [a for a in found if _is_stale(a.filename, posixpath.basename(remote))]
        return [a.filename for a in sorted(stale, key=lambda a: a.st_size or 0, reverse=True)]

    def _upload_with_retries(self, local: Path, part: str) -> tuple[int, bool]:
        moved, resumed = 0, False
        for attempt in range(self.retries + 1):
            try:
                offset = self._remote_size(part)
                resumed = resumed or offset > 0
                moved += self._upload_from(local, part, offset)
                return moved, resumed
            except (paramiko.SSHException, OSError, EOFError) as exc:
                if isinstance(exc, OSError) and "No space" in str(exc):
                    raise
                if attempt == self.retries:
                    raise TransportError(f"{self.device}: upload of {local.name} failed after "
                                         f"{attempt + 1} attempts: {exc or exc.__class__.__name__}") from None
                self.close()
                time.sleep(self.backoff_s * 2 ** attempt)
        raise AssertionError("unreachable")

    def _remote_size(self, path: str) -> int:
        try:
            return self.sftp.stat(path).st_size or 0
        except FileNotFoundError:
            return 0

    def _upload_from(self, local: Path, part: str, offset: int) -> int:
        size = local.stat().st_size
        if offset > size:
            offset = 0
        with open(local, "rb") as source, self.sftp.open(part, "ab" if offset else "wb") as target:
            target.set_pipelined(True)
            # paramiko's default 32 KiB requests exceed OpenSSH's 32 KiB channel packets once
            # framed, so each write became two packets; a request that fits one is ~50% faster
            target.MAX_REQUEST_SIZE = SFTP_REQUEST
            source.seek(offset)
            for block in iter(lambda: source.read(CHUNK), b""):
                target.write(block)
        return size - offset

    def _get_impl(self, remote: str, local: Path) -> Transfer:
        start = time.perf_counter()
        local.parent.mkdir(parents=True, exist_ok=True)
        part = local.with_name(part_name(local.name))  # two runs pulling to one place never share it
        try:
            self.sftp.get(remote, str(part), prefetch=True)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            part.unlink(missing_ok=True)
            if isinstance(exc, FileNotFoundError):
                raise TransportError(f"{self.device}: {remote} does not exist") from None
            raise TransportError(f"{self.device}: download of {remote} failed: {exc}") from None
        part.replace(local)
        size = local.stat().st_size
        return Transfer(remote, str(local), size, sha256_file(local), size, time.perf_counter() - start)

    def read_from(self, remote, offset, limit=16 << 20):
        try:
            with self.sftp.open(remote, "rb") as handle:
                handle.seek(offset)
                return handle.read(limit)
        except FileNotFoundError:
            return b""
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise TransportError(f"{self.device}: cannot read {remote}: {exc}") from None

    def remote_sha256(self, path: str) -> str:
        result = self.run(["sha256sum", "--", path], timeout=600)
        return result.stdout.split()[0]

    def exists(self, remote):
        try:
            self.sftp.stat(remote)
            return True
        except FileNotFoundError:
            return False
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise TransportError(f"{self.device}: cannot check {remote}: {exc}") from None

    def makedirs(self, remote):
        """Over SFTP, one component at a time: no shell command, so no login-shell start-up."""
        path = ""
        for part in remote.strip("/").split("/"):
            path += "/" + part
            try:
                self.sftp.stat(path)
            except FileNotFoundError:
                try:
                    self.sftp.mkdir(path)
                except OSError as exc:
                    raise TransportError(f"{self.device}: cannot create {path}: {exc}") from None
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise TransportError(f"{self.device}: cannot check {path}: {exc}") from None

    def expand(self, remote):
        if remote == "~" or remote.startswith("~/"):
            if self._home is None:
                self._home = self.sftp.normalize(".")
            return self._home + remote[1:]
        return remote

    def free_bytes(self, remote: str) -> int | None:
        result = self.run(["df", "-Pk", "--", remote], check=False, timeout=30)
        lines = result.stdout.strip().splitlines()
        if result.exit_code != 0 or len(lines) < 2:
            return None
        return int(lines[-1].split()[3]) * 1024


HOST_TAG = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_WRITING: set[str] = set()  # part files this process is writing now (other threads' are not stale)


def part_name(path: str) -> str:
    """``.NAME.<host>-<pid>-<token>.part`` beside ``path``: unique per transfer, and says whose it is."""
    folder, name = posixpath.split(str(path))
    return posixpath.join(folder, f".{name}.{HOST_TAG}-{os.getpid()}-{secrets.token_hex(4)}.part")


def _part_owner(name: str, base: str) -> tuple[str, int] | None:
    """(host tag, pid) of a part file of ``base``, or None when ``name`` is not one."""
    prefix = f".{base}."
    if not (name.startswith(prefix) and name.endswith(".part")):
        return None
    fields = name[len(prefix):-len(".part")].split("-")
    if len(fields) != 3 or not fields[1].isdigit():
        return None
    return fields[0], int(fields[1])


def _is_stale(name: str, base: str) -> bool:
    """A part of ``base`` from this host whose writer is gone: an exited process, or a failed transfer of ours."""
    owner = _part_owner(name, base)
    if owner is None or owner[0] != HOST_TAG:
        return False
    if owner[1] == os.getpid():
        return name not in _WRITING
    try:
        os.kill(owner[1], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's live process
        return False
    return False


def _transport_preferring_gcm(sock, **kwargs) -> paramiko.Transport:
    transport = paramiko.Transport(sock, **kwargs)
    rest = tuple(c for c in transport._preferred_ciphers if c not in FAST_CIPHERS)
    transport._preferred_ciphers = tuple(c for c in FAST_CIPHERS if c in transport._preferred_ciphers) + rest
    return transport


class _Retryable(Exception):
    """A connection failure worth another try (as opposed to a refused key or login)."""
