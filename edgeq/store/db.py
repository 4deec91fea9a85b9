"""The results database: every evaluate, run and soak, so nights can be compared.

SQLite (standard library) by default; any SQLAlchemy URL (``postgresql://…`` for a
lab that shares one database) when the location contains ``://``. The SQL is kept to
what both understand: text ids made here, REAL/INTEGER/TEXT columns, no upserts.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from edgeq.errors import ConfigError

DEFAULT_DB = "~/.local/share/edgeq/history.sqlite"
COLUMNS = (
    ("id", "TEXT PRIMARY KEY"), ("kind", "TEXT"), ("created", "REAL"), ("device", "TEXT"), ("arch", "TEXT"),
    ("model_name", "TEXT"), ("model_sha256", "TEXT"), ("quant_sha256", "TEXT"), ("runtime", "TEXT"),
    ("resolver", "TEXT"), ("threads", "INTEGER"), ("edgeq_version", "TEXT"), ("verdict", "TEXT"),
    ("accuracy_drop", "REAL"), ("flip_rate", "REAL"), ("p50_ms", "REAL"), ("p99_ms", "REAL"),
    ("float_p50_ms", "REAL"), ("energy_mj", "REAL"), ("location", "TEXT"), ("payload", "TEXT"),
)
NAMES = tuple(name for name, _ in COLUMNS)


PROJECT_DB = ".edgeq/history.sqlite"  # beside the project's edgeq.toml


def default_location() -> str:
    """$EDGEQ_DB; else the project's database beside its edgeq.toml (found upwards, as the
    inventory is), so a team's history stays with its boards; else one per user."""
    if os.environ.get("EDGEQ_DB"):
        return os.environ["EDGEQ_DB"]
    from edgeq.devices.inventory import find_inventory

    inventory = find_inventory()
    return str(inventory.parent / PROJECT_DB) if inventory else str(Path(DEFAULT_DB).expanduser())


@dataclass(frozen=True)
class Record:
    """One stored run; ``payload`` keeps whatever else the report said."""

    id: str
    kind: str
    created: float
    device: str | None = None
    arch: str | None = None
    model_name: str | None = None
    model_sha256: str | None = None
    quant_sha256: str | None = None
    runtime: str | None = None
    resolver: str | None = None
    threads: int | None = None
    edgeq_version: str | None = None
    verdict: str | None = None
    accuracy_drop: float | None = None
    flip_rate: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    float_p50_ms: float | None = None
    energy_mj: float | None = None
    location: str | None = None
    payload: str | None = None

    @property
    def series_key(self) -> tuple:
        """Runs that belong on one trend line: same device, model and runtime setup."""
        return (self.device, self.model_sha256, self.runtime, self.resolver, self.threads)


class Store:
    """Open with ``Store.open(location)``; ``add`` and ``query`` are all callers need."""

    def __init__(self, connection, paramstyle: str, location: str):
        self.connection, self.paramstyle, self.location = connection, paramstyle, location
        self._create_table()

    def _create_table(self) -> None:
        """Make the table once. Two first writers at the same moment (two CI jobs on a new
        lab database) can both try: PostgreSQL then refuses one with a unique-key error
        on its catalogue although the table now exists, so the loser looks again."""
        sql = f"CREATE TABLE IF NOT EXISTS edgeq_runs ({', '.join(f'{n} {t}' for n, t in COLUMNS)})"
        try:
            self._execute(sql)
        except ConfigError:
            if isinstance(self.connection, sqlite3.Connection):
                raise
            self._execute(sql)  # the other writer has made it; a real failure repeats

    @classmethod
    def open(cls, location: str | None = None) -> "Store":
        location = location or default_location()
        if "://" in location:
            return cls(_sqlalchemy_connection(location), "named", location)
        path = Path(location).expanduser()
        try:
            _create_private(path)
            connection = sqlite3.connect(path, timeout=30)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"{path}: cannot open the results database: {exc}") from None
        return cls(connection, "named", str(path))

    def _execute(self, sql: str, params: dict | None = None, fetch: bool = False):
        try:
            if isinstance(self.connection, sqlite3.Connection):
                with self.connection:
                    cursor = self.connection.execute(sql, params or {})
                    return cursor.fetchall() if fetch else None
            from sqlalchemy import text

            with self.connection.begin():
                result = self.connection.execute(text(sql), params or {})
                return result.fetchall() if fetch else None
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"{self.location}: results database error: {exc}") from None
        except Exception as exc:  # SQLAlchemy's errors (server gone, refused) without importing it eagerly
            if type(exc).__module__.split(".")[0] != "sqlalchemy":
                raise
            raise ConfigError(f"{_redacted(self.location)}: results database error: {_first_line(exc)}") from None

    def add(self, record: Record) -> Record:
        values = {name: getattr(record, name) for name in NAMES}
        self._execute(f"INSERT INTO edgeq_runs ({', '.join(NAMES)}) VALUES ({', '.join(':' + n for n in NAMES)})",
                      values)
        return record

    def query(self, *, device: str | None = None, model: str | None = None, kind: str | None = None,
              limit: int | None = None) -> list[Record]:
        """Oldest first; ``model`` matches a sha256 prefix or a model name."""
        where, params = [], {}
        if device:
            where.append("device = :device")
            params["device"] = device
        if kind:
            where.append("kind = :kind")
            params["kind"] = kind
        if model:
            where.append("(model_sha256 LIKE :model_prefix OR model_name = :model)")
            params.update(model_prefix=model + "%", model=model)
        sql = f"SELECT {', '.join(NAMES)} FROM edgeq_runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = [Record(*row) for row in self._execute(sql + " ORDER BY created", params, fetch=True)]
        return rows[-limit:] if limit else rows

    def close(self) -> None:
        self.connection.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _create_private(path: Path) -> None:
    """Make the SQLite file 0600 (its folder 0700 when made here) before SQLite opens it.

    The history names models, devices and paths: per-user data. SQLite gives its journals
    the database file's mode, so they follow. An existing database keeps its mode (a lab may
    share one through a group) except that it is never left world-writable.
    """
    missing = [folder for folder in (path.parent, *path.parent.parents) if not folder.exists()]
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)
    if path.exists():
        mode = path.stat().st_mode & 0o777
        if mode & 0o002:
            with contextlib.suppress(PermissionError):  # another user's: theirs to fix, still readable
                os.chmod(path, mode & ~0o002)
        return
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    os.chmod(path, 0o600)


CONNECT_ATTEMPTS = (0.0, 1.0, 3.0)  # seconds before each try: a lab database restarting is back in seconds


def _sqlalchemy_connection(url: str):
    try:
        import sqlalchemy
    except ImportError:
        raise ConfigError(f"{_redacted(url)}: a database URL needs SQLAlchemy and a driver "
                          '(pip install "edgeq[db]")') from None
    try:
        engine = sqlalchemy.create_engine(url)
    except Exception as exc:  # a malformed URL or a missing driver module
        raise ConfigError(f"{_redacted(url)}: not a usable database URL: {_first_line(exc)}") from None
    for attempt, pause in enumerate(CONNECT_ATTEMPTS, 1):
        time.sleep(pause)
        try:
            return engine.connect()
        except Exception as exc:  # driver errors have many types
            error = exc
    raise ConfigError(f"{_redacted(url)}: cannot connect to the results database after {attempt} tries: "
                      f"{_first_line(error)}") from None


def _redacted(url: str) -> str:
    """The URL without its password: error lines end up in CI logs."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}" if ":" in credentials else url


def _first_line(exc: Exception) -> str:
    """Driver messages run to several lines (SQL, background links); the first says what happened."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def record_from_report(report: dict, kind: str, location: str | None = None) -> Record:
    """A history row from an evaluate report (also fine for one device of a fleet)."""
    from edgeq.analysis.compare import worst_value

    model = report.get("model") or {}
    device = report.get("device") or {}
    latency = report.get("latency_ms") or {}
    energy = ((report.get("energy") or {}).get("quant") or {}).get("energy_mj")
    return Record(
        id=uuid.uuid4().hex, kind=kind, created=time.time(), device=device.get("name"), arch=device.get("arch"),
        model_name=Path(model.get("source") or model.get("float", {}).get("path", "")).name or None,
        model_sha256=(model.get("float") or {}).get("sha256"), quant_sha256=(model.get("quant") or {}).get("sha256"),
        runtime=device.get("runtime"), resolver=device.get("resolver"), threads=device.get("threads"),
        edgeq_version=report.get("edgeq_version"), verdict=report.get("verdict"),
        accuracy_drop=worst_value(report) if report.get("categories") else None,
        flip_rate=(report.get("overall") or {}).get("flip_rate"),
        p50_ms=(latency.get("quant") or {}).get("p50"), p99_ms=(latency.get("quant") or {}).get("p99"),
        float_p50_ms=(latency.get("float") or {}).get("p50"), energy_mj=energy, location=location,
        payload=json.dumps({"worst_category": report.get("worst_category"),
                            "worst_severity": report.get("worst_severity"),
                            "deciding_output": report.get("deciding_output"),
                            "timings_s": report.get("timings_s")}))


def record_from_run(summary: dict, kind: str = "run", location: str | None = None) -> Record:
    """A history row from ``edgeq run``'s summary (one model, no comparison)."""
    device = summary.get("device") or {}
    latency = summary.get("latency_ms") or {}
    return Record(id=uuid.uuid4().hex, kind=kind, created=time.time(), device=device.get("name"),
                  arch=device.get("arch"), model_name=summary.get("model_name"),
                  model_sha256=summary.get("model_sha256"), runtime=device.get("runtime"),
                  resolver=device.get("resolver"), threads=device.get("threads"),
                  edgeq_version=summary.get("edgeq_version"), p50_ms=latency.get("p50"), p99_ms=latency.get("p99"),
                  energy_mj=summary.get("energy_mj"), location=location, payload=json.dumps(summary))
