"""Users, API keys, sessions, login throttles and the audit trail, in the index.

They live beside the instance rows (migration 0004) so every serving process of
``--workers N`` shares them.  ``SecurityMixin`` adds the async methods to an index
that has ``_read`` / ``_write`` (the SQLite index); the SQL below is plain and
portable.  Audit rows are append-only: triggers refuse UPDATE and DELETE.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from vna.errors import AlreadyExists, NotFound

Conn = Any
T = TypeVar("T")


@dataclass(slots=True)
class UserRecord:
    name: str
    password_hash: str
    role: str
    site: str | None = None
    created_at: float = 0.0
    disabled: bool = False


@dataclass(slots=True)
class ApiKeyRecord:
    id: str
    secret_sha256: str
    role: str
    site: str | None = None
    label: str = ""
    created_at: float = 0.0
    revoked_at: float | None = None


@dataclass(slots=True)
class SessionRecord:
    token_sha256: str
    user_name: str
    csrf: str
    created_at: float
    expires_at: float


@dataclass(slots=True)
class AuditRecord:
    at: float
    who: str
    who_kind: str
    action: str
    outcome: str
    role: str = ""
    ip: str = ""
    method: str = ""
    route: str = ""
    status: int = 0
    patient_id: str | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    sop_uid: str | None = None
    slide_id: str | None = None
    detail: str = ""
    pk: int = 0


@dataclass(slots=True)
class AuditQuery:
    patient_id: str | None = None
    study_uid: str | None = None
    who: str | None = None
    action: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = 100
    offset: int = 0


AUDIT_COLUMNS = [
    "at", "who", "who_kind", "role", "ip", "action", "method", "route", "status",
    "outcome", "patient_id", "study_uid", "series_uid", "sop_uid", "slide_id", "detail",
]  # fmt: skip


# -- users -----------------------------------------------------------------------
def add_user(conn: Conn, user: UserRecord) -> None:
    if conn.execute("SELECT 1 FROM users WHERE name = ?", (user.name,)).fetchone():
        raise AlreadyExists(f"user {user.name!r} already exists")
    conn.execute(
        "INSERT INTO users (name, password_hash, role, site, created_at, disabled) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (user.name, user.password_hash, user.role, user.site, user.created_at, int(user.disabled)),
    )


def _user(row: Any) -> UserRecord:
    return UserRecord(
        row["name"], row["password_hash"], row["role"], row["site"], row["created_at"],
        bool(row["disabled"]),
    )  # fmt: skip


def put_external_user(conn: Conn, user: UserRecord) -> None:
    """A user signed in elsewhere (OIDC): role and sites follow the last sign-in."""
    conn.execute(
        "INSERT INTO users (name, password_hash, role, site, created_at, disabled) "
        "VALUES (?, ?, ?, ?, ?, 0) ON CONFLICT (name) DO UPDATE SET "
        "role = excluded.role, site = excluded.site WHERE password_hash = excluded.password_hash",
        (user.name, user.password_hash, user.role, user.site, user.created_at),
    )


def get_user(conn: Conn, name: str) -> UserRecord | None:
    row = conn.execute("SELECT * FROM users WHERE name = ?", (name,)).fetchone()
    return None if row is None else _user(row)


def list_users(conn: Conn) -> list[UserRecord]:
    return [_user(r) for r in conn.execute("SELECT * FROM users ORDER BY name")]


def remove_user(conn: Conn, name: str) -> bool:
    conn.execute("DELETE FROM sessions WHERE user_name = ?", (name,))
    return conn.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount > 0


def set_password(conn: Conn, name: str, password_hash: str) -> bool:
    conn.execute("DELETE FROM sessions WHERE user_name = ?", (name,))
    cur = conn.execute("UPDATE users SET password_hash = ? WHERE name = ?", (password_hash, name))
    return cur.rowcount > 0


# -- API keys --------------------------------------------------------------------
def add_key(conn: Conn, key: ApiKeyRecord) -> None:
    conn.execute(
        "INSERT INTO api_keys (id, secret_sha256, role, site, label, created_at, revoked_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (key.id, key.secret_sha256, key.role, key.site, key.label, key.created_at, key.revoked_at),
    )


def _key(row: Any) -> ApiKeyRecord:
    return ApiKeyRecord(
        row["id"], row["secret_sha256"], row["role"], row["site"], row["label"],
        row["created_at"], row["revoked_at"],
    )  # fmt: skip


def get_key(conn: Conn, key_id: str) -> ApiKeyRecord | None:
    row = conn.execute("SELECT * FROM api_keys WHERE id = ?", (key_id,)).fetchone()
    return None if row is None else _key(row)


def list_keys(conn: Conn) -> list[ApiKeyRecord]:
    return [_key(r) for r in conn.execute("SELECT * FROM api_keys ORDER BY created_at, id")]


def revoke_key(conn: Conn, key_id: str, at: float) -> bool:
    cur = conn.execute(
        "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (at, key_id)
    )
    return cur.rowcount > 0


# -- sessions --------------------------------------------------------------------
def add_session(conn: Conn, s: SessionRecord) -> None:
    # expired sessions are swept whenever a new one is made: no separate janitor
    conn.execute("DELETE FROM sessions WHERE expires_at < ?", (s.created_at,))
    conn.execute(
        "INSERT INTO sessions (token_sha256, user_name, csrf, created_at, expires_at) "
        "VALUES (?, ?, ?, ?, ?)",
        (s.token_sha256, s.user_name, s.csrf, s.created_at, s.expires_at),
    )


def get_session(conn: Conn, token_sha256: str, now: float) -> SessionRecord | None:
    row = conn.execute(
        "SELECT * FROM sessions WHERE token_sha256 = ? AND expires_at > ?", (token_sha256, now)
    ).fetchone()
    if row is None:
        return None
    return SessionRecord(
        row["token_sha256"], row["user_name"], row["csrf"], row["created_at"], row["expires_at"]
    )


def session_user(
    conn: Conn, token_sha256: str, now: float
) -> tuple[SessionRecord, UserRecord | None] | None:
    """A live session and its user (None when removed), in one read: every request
    of a signed-in browser (dozens per pan of a slide) asks for both."""
    session = get_session(conn, token_sha256, now)
    return None if session is None else (session, get_user(conn, session.user_name))


def drop_session(conn: Conn, token_sha256: str) -> None:
    conn.execute("DELETE FROM sessions WHERE token_sha256 = ?", (token_sha256,))


# -- login throttling ------------------------------------------------------------
def login_failures(conn: Conn, client: str) -> tuple[int, float]:
    """(failures in a row, time of the last one) for a client."""
    row = conn.execute(
        "SELECT failures, last_at FROM login_failures WHERE client = ?", (client,)
    ).fetchone()
    return (0, 0.0) if row is None else (int(row[0]), float(row[1]))


def add_login_failure(conn: Conn, client: str, at: float) -> int:
    conn.execute(
        "INSERT INTO login_failures (client, failures, last_at) VALUES (?, 1, ?) "
        "ON CONFLICT (client) DO UPDATE SET failures = failures + 1, last_at = excluded.last_at",
        (client, at),
    )
    return login_failures(conn, client)[0]


def clear_login_failures(conn: Conn, client: str) -> None:
    conn.execute("DELETE FROM login_failures WHERE client = ?", (client,))


# -- audit -----------------------------------------------------------------------
_PATIENT_OF_STUDY = (
    "(SELECT p.patient_id FROM studies s JOIN patients p ON p.pk = s.patient_pk "
    "WHERE s.study_uid = ?)"
)
_PATIENT_OF_SLIDE = "(SELECT patient_id FROM slides WHERE id = ?)"


VIEW_WINDOW = 300.0  # seconds: a repeated read is recorded once per window


def fresh_views(
    conn: Conn, records: list[AuditRecord], keys: list[str | None]
) -> list[AuditRecord]:
    """The records to keep: those without a key, and those whose key was not
    recorded in the last VIEW_WINDOW seconds by any process.  Marks them recorded."""
    kept = []
    for rec, key in zip(records, keys, strict=True):
        if key is not None:
            row = conn.execute("SELECT at FROM audit_views WHERE key = ?", (key,)).fetchone()
            if row is not None and rec.at - row[0] < VIEW_WINDOW:
                continue
            conn.execute(
                "INSERT INTO audit_views (key, at) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET at = excluded.at",
                (key, rec.at),
            )
        kept.append(rec)
    if any(k is not None for k in keys):
        newest = max(r.at for r in records)
        conn.execute("DELETE FROM audit_views WHERE at < ?", (newest - VIEW_WINDOW,))
    return kept


def append_audit(
    conn: Conn, records: list[AuditRecord], keys: list[str | None] | None = None
) -> list[AuditRecord]:
    """One batch; a missing patient ID is filled from the study or slide named,
    here in the writer thread rather than per request on the event loop.  With
    ``keys``, repeated reads are dropped (fresh_views).  Returns what was stored."""
    if keys is not None:
        records = fresh_views(conn, records, keys)
    cols = ", ".join(AUDIT_COLUMNS)
    marks = ", ".join(
        f"COALESCE(?, {_PATIENT_OF_STUDY}, {_PATIENT_OF_SLIDE})" if c == "patient_id" else "?"
        for c in AUDIT_COLUMNS
    )
    rows = []
    for r in records:
        values: list[Any] = []
        for c in AUDIT_COLUMNS:
            values.append(getattr(r, c))
            if c == "patient_id":
                values += [r.study_uid, r.slide_id]
        rows.append(values)
    conn.executemany(f"INSERT INTO audit ({cols}) VALUES ({marks})", rows)
    return records


def find_audit(conn: Conn, q: AuditQuery) -> list[AuditRecord]:
    where, params = [], []
    for col, value in (
        ("patient_id", q.patient_id),
        ("study_uid", q.study_uid),
        ("who", q.who),
        ("action", q.action),
    ):
        if value is not None:
            where.append(f"{col} = ?")
            params.append(value)
    if q.since is not None:
        where.append("at >= ?")
        params.append(q.since)
    if q.until is not None:
        where.append("at < ?")
        params.append(q.until)
    sql = "SELECT * FROM audit" + (" WHERE " + " AND ".join(where) if where else "")
    sql += " ORDER BY at, pk LIMIT ? OFFSET ?"
    rows = conn.execute(sql, [*params, q.limit, q.offset]).fetchall()
    return [AuditRecord(**{c: r[c] for c in AUDIT_COLUMNS}, pk=r["pk"]) for r in rows]


class SecurityIndex(Protocol):
    """What vna.auth and vna.audit need from an index."""

    async def add_user(self, user: UserRecord) -> None: ...
    async def get_user(self, name: str) -> UserRecord: ...
    async def put_external_user(self, user: UserRecord) -> None: ...
    async def list_users(self) -> list[UserRecord]: ...
    async def remove_user(self, name: str) -> None: ...
    async def set_password(self, name: str, password_hash: str) -> None: ...
    async def add_key(self, key: ApiKeyRecord) -> None: ...
    async def get_key(self, key_id: str) -> ApiKeyRecord: ...
    async def list_keys(self) -> list[ApiKeyRecord]: ...
    async def revoke_key(self, key_id: str) -> None: ...
    async def add_session(self, session: SessionRecord) -> None: ...
    async def get_session(self, token_sha256: str) -> SessionRecord | None: ...
    async def session_user(
        self, token_sha256: str
    ) -> tuple[SessionRecord, UserRecord | None] | None: ...
    async def drop_session(self, token_sha256: str) -> None: ...
    def credentials_epoch(self) -> bytes | None:
        """Changes whenever credentials change, in any process (vna.index.epoch);
        None where the backend has no such value: nothing may be remembered."""
        ...

    async def login_failures(self, client: str) -> tuple[int, float]: ...
    async def add_login_failure(self, client: str) -> int: ...
    async def clear_login_failures(self, client: str) -> None: ...
    async def append_audit(
        self, records: list[AuditRecord], keys: list[str | None] | None = None
    ) -> list[AuditRecord]: ...
    async def find_audit(self, query: AuditQuery) -> list[AuditRecord]: ...


class SecurityMixin:
    """The async face of the functions above, for an index with _read/_write.

    Every change to users, API keys or sessions other than a new session is
    followed, once committed, by ``_credentials_changed`` (vna.index.epoch):
    credentials remembered by the route guard stop counting, in every process."""

    _read: Callable[..., Any]
    _write: Callable[..., Any]
    _credentials_changed: Callable[[], None]

    async def _write_credentials(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return await self._write(fn, *args)
        finally:  # also after a failure: whether it committed is not known here
            self._credentials_changed()

    async def add_user(self, user: UserRecord) -> None:
        await self._write_credentials(add_user, user)

    async def put_external_user(self, user: UserRecord) -> None:
        await self._write_credentials(put_external_user, user)

    async def get_user(self, name: str) -> UserRecord:
        user = await self._read(get_user, name)
        if user is None:
            raise NotFound(f"no such user: {name}")
        return user

    async def list_users(self) -> list[UserRecord]:
        return await self._read(list_users)

    async def remove_user(self, name: str) -> None:
        if not await self._write_credentials(remove_user, name):
            raise NotFound(f"no such user: {name}")

    async def set_password(self, name: str, password_hash: str) -> None:
        if not await self._write_credentials(set_password, name, password_hash):
            raise NotFound(f"no such user: {name}")

    async def add_key(self, key: ApiKeyRecord) -> None:
        await self._write_credentials(add_key, key)

    async def get_key(self, key_id: str) -> ApiKeyRecord:
        key = await self._read(get_key, key_id)
        if key is None:
            raise NotFound(f"no such API key: {key_id}")
        return key

    async def list_keys(self) -> list[ApiKeyRecord]:
        return await self._read(list_keys)

    async def revoke_key(self, key_id: str) -> None:
        if not await self._write_credentials(revoke_key, key_id, time.time()):
            raise NotFound(f"no such unrevoked API key: {key_id}")

    async def add_session(self, session: SessionRecord) -> None:
        await self._write(add_session, session)

    async def get_session(self, token_sha256: str) -> SessionRecord | None:
        return await self._read(get_session, token_sha256, time.time())

    async def session_user(
        self, token_sha256: str
    ) -> tuple[SessionRecord, UserRecord | None] | None:
        return await self._read(session_user, token_sha256, time.time())

    async def drop_session(self, token_sha256: str) -> None:
        await self._write_credentials(drop_session, token_sha256)

    async def login_failures(self, client: str) -> tuple[int, float]:
        return await self._read(login_failures, client)

    async def add_login_failure(self, client: str) -> int:
        return await self._write(add_login_failure, client, time.time())

    async def clear_login_failures(self, client: str) -> None:
        await self._write(clear_login_failures, client)

    async def append_audit(
        self, records: list[AuditRecord], keys: list[str | None] | None = None
    ) -> list[AuditRecord]:
        if not records:
            return []
        return await self._write(append_audit, list(records), keys)

    async def find_audit(self, query: AuditQuery) -> list[AuditRecord]:
        return await self._read(find_audit, query)
