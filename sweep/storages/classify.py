"""Which store failures may pass: told by error codes, never by message text.

A server's messages follow its ``lc_messages`` (German, Japanese, ...), so a phrase such as
"password authentication failed" cannot tell a wrong password from a restart. Codes can:

- PostgreSQL: the SQLSTATE of the error. Class 08 (connection exception), 53 (insufficient
  resources: disk full, out of memory, too many connections), 57P01/57P02/57P03 (administrator
  or crash shutdown, cannot connect now), 57014 (statement cancelled), 25P03 (the idle-in-
  transaction timeout of a paused worker), 40001/40P01 (serialization failure, deadlock), 55P03
  (lock not available), 58000/58030 (system and I/O error) may pass. Anything else with a code
  (28P01/28000 authentication, 3D000 no such database, 42xxx, 23xxx, ...) is lasting.
- A failed *connection attempt* carries no SQLSTATE in libpq/psycopg (only text). Then:
  a host name that does not resolve (psycopg's own "failed to resolve host", never translated)
  is lasting, a typo; otherwise the server is asked directly (``_probe``): nobody listening
  (refused, timed out) or an answer with a code above that may pass is an outage; a server that
  asks for a password or names a lasting code is up, so the login itself failed.
- A connection lost under a live session (no SQLSTATE, a backend PID known) may pass.
- SQLite: the primary result code of ``sqlite3.Error.sqlite_errorcode``: BUSY, LOCKED, IOERR,
  FULL and PROTOCOL may pass; READONLY, CANTOPEN, NOTADB, CORRUPT, ERROR ("no such table") do not.
"""

from __future__ import annotations

import socket
import sqlite3
import struct
from typing import Any

import optuna
from sqlalchemy import exc as sa_exc

PG_TRANSIENT_CLASSES = ("08", "53")
PG_TRANSIENT_CODES = frozenset({"57P01", "57P02", "57P03", "57014", "25P03", "40001", "40P01", "55P03",
                                "58000", "58030"})
# sqlite3's primary result codes (https://sqlite.org/rescode.html): busy, locked, I/O error, full, protocol.
SQLITE_TRANSIENT = frozenset({5, 6, 10, 13, 15})
PROBE_SECONDS = 5.0


def transient(err: BaseException) -> bool:
    """True for a store failure that may pass: a lost connection, a server restarting, a locked or full disk."""
    if isinstance(err, optuna.exceptions.StorageInternalError) and err.__cause__ is not None:
        err = err.__cause__
    if isinstance(err, sa_exc.PendingRollbackError):
        # A statement that failed while handling a lost connection (Optuna's get_trials falls back to a
        # second query on the same session when the first raises): transient when what it follows was.
        return err.__context__ is not None and transient(err.__context__)
    if isinstance(err, (sa_exc.DisconnectionError, sa_exc.TimeoutError)):
        return True  # SQLAlchemy's own: a pool connection found dead, or no pool connection free in time
    if not isinstance(err, sa_exc.DBAPIError):
        return False
    orig = err.orig
    if isinstance(orig, sqlite3.Error):
        code = getattr(orig, "sqlite_errorcode", None)
        return code is not None and (code & 0xFF) in SQLITE_TRANSIENT  # extended codes carry the primary in the low byte
    if _is_psycopg_error(orig):
        return _pg_transient(orig)
    return bool(err.connection_invalidated)  # another driver: only SQLAlchemy's own verdict of a lost connection


def _is_psycopg_error(orig: object) -> bool:
    return type(orig).__module__.startswith("psycopg") and hasattr(orig, "sqlstate")


def pg_code_transient(code: str) -> bool:
    return code in PG_TRANSIENT_CODES or code[:2] in PG_TRANSIENT_CLASSES


def _pg_transient(orig: Any) -> bool:
    code = orig.sqlstate
    if code:
        return pg_code_transient(code)
    pgconn = getattr(orig, "pgconn", None)
    if pgconn is None:
        # psycopg resolves host names itself and says so in its own (untranslated) words.
        return not str(orig).startswith("failed to resolve host")
    if pgconn.backend_pid:
        return True  # a session was running: its connection was lost (server restart, network)
    return _probe(pgconn)


def _probe(pgconn: Any) -> bool:
    """Ask the server of a failed connection attempt why: True if nobody listens or it says "not now"."""
    host = (pgconn.hostaddr or pgconn.host or b"localhost").decode().split(",")[0]
    port = int((pgconn.port or b"5432").decode().split(",")[0] or 5432)
    try:
        if host.startswith("/"):
            sock = socket.socket(socket.AF_UNIX)
            sock.settimeout(PROBE_SECONDS)
            sock.connect(f"{host}/.s.PGSQL.{port}")
        else:
            sock = socket.create_connection((host, port), timeout=PROBE_SECONDS)
    except OSError:
        return True  # refused, unreachable, timed out: a server restarting or a network away
    with sock:
        try:
            return _startup_answer(sock, pgconn.user or b"", pgconn.db or b"")
        except (OSError, struct.error):
            return True  # the server hung up on us mid-answer: shutting down


def _startup_answer(sock: socket.socket, user: bytes, db: bytes) -> bool:
    """Send a protocol 3.0 startup message; read until the server names an error, asks for a password or is ready."""
    body = struct.pack("!i", 196608) + b"user\0" + user + b"\0database\0" + db + b"\0\0"
    sock.sendall(struct.pack("!i", len(body) + 4) + body)
    while True:
        kind = _exact(sock, 1)
        payload = _exact(sock, struct.unpack("!i", _exact(sock, 4))[0] - 4)
        if kind == b"E":
            fields = dict((f[:1], f[1:]) for f in payload.split(b"\0") if f)
            return pg_code_transient(fields.get(b"C", b"").decode())
        if kind == b"R" and struct.unpack("!i", payload[:4])[0] != 0:
            return False  # it asks for a password: the server is up, so the attempt failed at the login
        if kind == b"Z":
            return True  # it lets us in now: whatever failed a moment ago has passed


def _exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise OSError("closed")
        data += chunk
    return data
