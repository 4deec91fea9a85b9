"""The results database: every evaluate, run and soak, so nights can be compared.

SQLite (standard library) by default; any SQLAlchemy URL (``postgresql://…`` for a
lab that shares one database) when the location contains ``://``. The SQL is kept to
what both understand: text ids made here, DOUBLE PRECISION/INTEGER/TEXT columns, no
upserts. (Tables made before used REAL, which PostgreSQL keeps in 4 bytes; they are read
as they are.)
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

from edgeq.errors import ConfigError

DEFAULT_DB = "~/.local/share/edgeq/history.sqlite"
REAL = "DOUBLE PRECISION"  # 8 bytes in both: PostgreSQL's REAL is 4 (a time to the nearest ~2 minutes)
COLUMNS = (
    ("id", "TEXT PRIMARY KEY"), ("kind", "TEXT"), ("created", REAL), ("device", "TEXT"), ("arch", "TEXT"),
    ("model_name", "TEXT"), ("model_sha256", "TEXT"), ("quant_sha256", "TEXT"), ("runtime", "TEXT"),
    ("resolver", "TEXT"), ("threads", "INTEGER"), ("edgeq_version", "TEXT"), ("verdict", "TEXT"),
    ("accuracy_drop", REAL), ("flip_rate", REAL), ("p50_ms", REAL), ("p99_ms", REAL),
    ("float_p50_ms", REAL), ("energy_mj", REAL), ("location", "TEXT"), ("payload", "TEXT"),
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
    """Open with ``Store.open(location)``; ``add`` and ``query`` are all callers need.

    ``location`` is what was given (a URL may hold a password); ``shown`` is the same
    with every password form redacted: the only form to print, log or write into a report.
    ``skipped`` lists the rows the last ``query`` left out, with why (a row with no time
    cannot be placed on a trend line)."""

    def __init__(self, connection, paramstyle: str, location: str):
        self.connection, self.paramstyle, self.location = connection, paramstyle, location
        self.skipped: list[tuple[str, str]] = []
        self._create_table()

    @property
    def shown(self) -> str:
        return redact_url(self.location)

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
            raise ConfigError(f"{self.shown}: results database error: "
                              f"{redact_text(_first_line(exc), self.location)}") from None

    def add(self, record: Record) -> Record:
        values = {name: getattr(record, name) for name in NAMES}
        self._execute(f"INSERT INTO edgeq_runs ({', '.join(NAMES)}) VALUES ({', '.join(':' + n for n in NAMES)})",
                      values)
        return record

    def query(self, *, device: str | None = None, model: str | None = None, kind: str | None = None,
              limit: int | None = None) -> list[Record]:
        """Oldest first; ``model`` matches a sha256 prefix or a model name.

        Rows are data another writer (an older edgeq, a hand edit, a NaN that PostgreSQL kept)
        may have left odd: NaN/±inf and values of the wrong type read as None (shown as —),
        and a row without a usable time is left out and named in ``skipped``."""
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
        rows, self.skipped = [], []
        for row in self._execute(sql + " ORDER BY created", params, fetch=True):
            record = clean_record(row)
            if record.created is None:
                self.skipped.append((str(record.id), "no valid time (created is NULL or not a finite number)"))
            else:
                rows.append(record)
        rows.sort(key=lambda r: r.created)  # NULL and NaN sort differently in SQLite and PostgreSQL
        return rows[-limit:] if limit else rows

    def close(self) -> None:
        self.connection.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


NUMBERS = {name: {REAL: float, "INTEGER": int}[kind] for name, kind in COLUMNS if kind in (REAL, "INTEGER")}


def clean_record(row) -> Record:
    """A Record from a database row, each value of its column's kind or None: a NaN or ±inf
    (PostgreSQL keeps them in REAL columns), text in a number column (SQLite allows it), a
    number in a text column. Nothing here raises on what another writer left."""
    values = {}
    for name, value in zip(NAMES, row):
        kind = NUMBERS.get(name)
        if kind is not None:
            values[name] = _number(value, kind)
        elif value is None or isinstance(value, str):
            values[name] = value
        elif isinstance(value, (bytes, bytearray, memoryview)):
            values[name] = bytes(value).decode("utf-8", "replace")
        else:
            values[name] = str(value)
    if values.get("id") is None:
        values["id"] = "?"
    return Record(**values)


def _number(value, kind):
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if not math.isfinite(number):
        return None
    return int(number) if kind is int and number.is_integer() else (None if kind is int else number)


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
    shown = redact_url(url)
    try:
        import sqlalchemy
    except ImportError:
        raise ConfigError(f"{shown}: a database URL needs SQLAlchemy and a driver "
                          '(pip install "edgeq[db]")') from None
    try:
        engine = sqlalchemy.create_engine(url)
    except Exception as exc:  # a malformed URL or a missing driver module
        raise ConfigError(f"{shown}: not a usable database URL: {redact_text(_first_line(exc), url)}") from None
    for attempt, pause in enumerate(CONNECT_ATTEMPTS, 1):
        time.sleep(pause)
        try:
            return engine.connect()
        except Exception as exc:  # driver errors have many types
            error = exc
    raise ConfigError(f"{shown}: cannot connect to the results database after {attempt} tries: "
                      f"{redact_text(_first_line(error), url)}") from None


SECRET_KEYS = {"password", "passwd", "pass", "pwd", "sslpassword", "secret", "token", "access_token",
               "auth_token", "api_key", "apikey"}
MASK = "***"


def redact_url(url: str) -> str:
    """The URL with every password form masked: error lines and reports end up in CI logs.

    ``scheme://user:PASSWORD@host`` (also with ``@``, ``:`` or ``/`` in the password, encoded
    or not), query parameters such as ``?password=…`` / ``sslpassword=…``, and, as a
    backstop, any other place the password text (raw, %-decoded or %-encoded) appears. A
    text without ``://`` (a SQLite path) is returned as it is."""
    text = str(url)
    if "://" not in text:
        return text
    scheme, _, rest = text.partition("://")
    userinfo, after = _userinfo(rest)
    if userinfo is not None and ":" in userinfo:
        userinfo = userinfo.partition(":")[0] + ":" + MASK
    base, question, query = after.partition("?")
    if question:
        parts = re.split(r"([&;])", query)  # the separators stay where they were
        for k in range(0, len(parts), 2):
            key, equals, _ = parts[k].partition("=")
            if equals and unquote(key).strip().lower() in SECRET_KEYS:
                parts[k] = f"{key}={MASK}"
        query = "".join(parts)
    shown = f"{scheme}://{'' if userinfo is None else userinfo}{base}{question}{query}"
    return redact_text(shown, text)


def _userinfo(rest: str) -> tuple[str | None, str]:
    """(``user:password`` or None, the rest from its ``@`` on) of what follows ``scheme://``.

    The userinfo ends at the ``@`` after which the host has no ``@`` (so a raw ``@`` in the
    password stays in it) and before any ``?`` (a query value may hold ``@``)."""
    head = rest.split("?", 1)[0]
    for at, char in enumerate(head):
        if char == "@" and "@" not in head[at + 1:].split("/", 1)[0]:
            return rest[:at], rest[at:]
    return None, rest


def redact_text(text: str, url: str | None) -> str:
    """``text`` with every password that ``url`` holds masked (a driver may quote it in a message)."""
    for secret in sorted(_secrets(url), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def _secrets(url: str | None) -> set[str]:
    """The password texts a URL holds, as written, %-decoded and %-encoded (3+ characters: masking a
    shorter one would mask parts of every word; the structural redaction hides it anyway)."""
    if not url or "://" not in url:
        return set()
    found = set()
    rest = url.partition("://")[2]
    userinfo, after = _userinfo(rest)
    if userinfo is not None and ":" in userinfo:
        found.add(userinfo.partition(":")[2])
    for part in re.split(r"[&;]", after.partition("?")[2]):
        key, equals, value = part.partition("=")
        if equals and unquote(key).strip().lower() in SECRET_KEYS:
            found.add(value)
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        if parsed.password:
            found.add(str(parsed.password))
        for key, value in parsed.query.items():
            if key.lower() in SECRET_KEYS:
                found.update(value if isinstance(value, tuple) else (value,))
    except Exception:  # noqa: BLE001 - no SQLAlchemy, or a URL it cannot parse: the forms above remain
        pass
    forms = set()
    for secret in found:
        forms |= {secret, unquote(secret), quote(unquote(secret), safe=""), quote(secret, safe="")}
    return {form for form in forms if len(form) >= 3 and form != MASK}


_redacted = redact_url  # the older name


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
