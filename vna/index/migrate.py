"""Schema migrations: numbered SQL files under vna/index/migrations/, applied in
order, each in its own transaction together with its schema_version row.

Re-running is a no-op: only versions above the recorded maximum are applied, and
the check is repeated inside the write transaction so two processes opening the
same database at once cannot both apply a migration.
"""

from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import dataclass
from importlib import resources

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations() -> list[Migration]:
    """The packaged migration files, in version order."""
    folder = resources.files("vna.index").joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        m = _NAME.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text("utf-8")))
    found.sort(key=lambda mig: mig.version)
    versions = [mig.version for mig in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migration files are not numbered 1..n: {versions}")
    return found


def statements(sql: str) -> list[str]:
    """Split a script into statements (sqlite3.complete_statement knows comments
    and string literals), so they can run inside one explicit transaction."""
    out, buf = [], ""
    for line in sql.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                out.append(buf.strip())
            buf = ""
    if buf.strip() and not all(ln.strip().startswith("--") for ln in buf.strip().splitlines()):
        raise RuntimeError(f"unterminated SQL statement in migration: {buf.strip()[:80]!r}")
    return out


def schema_version(conn: sqlite3.Connection) -> int:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
    )
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def apply_migrations(
    conn: sqlite3.Connection, migrations: list[Migration] | None = None, upto: int | None = None
) -> list[int]:
    """Apply the pending migrations (up to ``upto``); returns the versions applied.
    ``conn`` must be in autocommit mode (isolation_level=None)."""
    applied = []
    for mig in migrations if migrations is not None else load_migrations():
        if upto is not None and mig.version > upto:
            break
        if mig.version <= schema_version(conn):
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            if mig.version <= schema_version(conn):  # another process got there first
                conn.execute("ROLLBACK")
                continue
            for stmt in statements(mig.sql):
                conn.execute(stmt)
            conn.execute(
                "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
                (mig.version, mig.name, time.time()),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        applied.append(mig.version)
    return applied
