"""Share links and their sessions, in the index (migration 0006).

A share names what it opens (``ShareScope``: whole studies, single series,
slides), resolved once when it is made, so a later study of the same patient is
not silently shared too.  ``ShareMixin`` adds the async methods to an index with
``_read`` / ``_write`` (the SQLite index), like vna.index.security's mixin.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vna.errors import NotFound

Conn = Any
KINDS = ("study", "series", "slide", "patient")


@dataclass(slots=True)
class ShareScope:
    studies: list[str] = field(default_factory=list)  # whole studies
    series: list[tuple[str, str]] = field(default_factory=list)  # (study, series)
    slides: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(
            {
                "studies": self.studies,
                "series": [list(s) for s in self.series],
                "slides": self.slides,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> ShareScope:
        doc = json.loads(text)
        return cls(
            list(doc.get("studies", [])),
            [(a, b) for a, b in doc.get("series", [])],
            list(doc.get("slides", [])),
        )

    def study_uids(self) -> set[str]:
        """Every study with something shared in it."""
        return set(self.studies) | {st for st, _ in self.series}


@dataclass(slots=True)
class ShareRecord:
    id: str
    token_sha256: str
    kind: str
    target: str
    scope: ShareScope
    created_by: str
    created_kind: str
    created_at: float
    expires_at: float
    site: str | None = None
    patient_id: str | None = None
    revoked_at: float | None = None
    pin_hash: str | None = None
    download: bool = False
    deidentify: bool = False
    deid_key: str = ""

    def usable(self, now: float) -> bool:
        return self.revoked_at is None and now < self.expires_at


_COLUMNS = [
    "id", "token_sha256", "kind", "target", "scope", "site", "patient_id", "created_by",
    "created_kind", "created_at", "expires_at", "revoked_at", "pin_hash", "download",
    "deidentify", "deid_key",
]  # fmt: skip


def _share(row: Any) -> ShareRecord:
    return ShareRecord(
        id=row["id"], token_sha256=row["token_sha256"], kind=row["kind"], target=row["target"],
        scope=ShareScope.from_json(row["scope"]), created_by=row["created_by"],
        created_kind=row["created_kind"], created_at=row["created_at"],
        expires_at=row["expires_at"], site=row["site"], patient_id=row["patient_id"],
        revoked_at=row["revoked_at"], pin_hash=row["pin_hash"], download=bool(row["download"]),
        deidentify=bool(row["deidentify"]), deid_key=row["deid_key"],
    )  # fmt: skip


def add_share(conn: Conn, s: ShareRecord) -> None:
    values = [getattr(s, c) for c in _COLUMNS]
    values[_COLUMNS.index("scope")] = s.scope.to_json()
    values[_COLUMNS.index("download")] = int(s.download)
    values[_COLUMNS.index("deidentify")] = int(s.deidentify)
    marks = ", ".join("?" for _ in _COLUMNS)
    conn.execute(f"INSERT INTO shares ({', '.join(_COLUMNS)}) VALUES ({marks})", values)


def get_share(conn: Conn, share_id: str) -> ShareRecord | None:
    row = conn.execute("SELECT * FROM shares WHERE id = ?", (share_id,)).fetchone()
    return None if row is None else _share(row)


def share_by_token(conn: Conn, token_sha256: str) -> ShareRecord | None:
    row = conn.execute("SELECT * FROM shares WHERE token_sha256 = ?", (token_sha256,)).fetchone()
    return None if row is None else _share(row)


def list_shares(conn: Conn, created_by: str | None) -> list[ShareRecord]:
    if created_by is None:
        rows = conn.execute("SELECT * FROM shares ORDER BY created_at, id")
    else:
        rows = conn.execute(
            "SELECT * FROM shares WHERE created_by = ? ORDER BY created_at, id", (created_by,)
        )
    return [_share(r) for r in rows]


def revoke_share(conn: Conn, share_id: str, at: float) -> bool:
    # the sessions go at once too; the share row stays, for the list and the trail
    conn.execute("DELETE FROM share_sessions WHERE share_id = ?", (share_id,))
    cur = conn.execute(
        "UPDATE shares SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (at, share_id)
    )
    return cur.rowcount > 0


def add_share_session(
    conn: Conn, token_sha256: str, share_id: str, created_at: float, expires_at: float
) -> None:
    # expired sessions are swept whenever a new one is made: no separate janitor
    conn.execute("DELETE FROM share_sessions WHERE expires_at < ?", (created_at,))
    conn.execute(
        "INSERT INTO share_sessions (token_sha256, share_id, created_at, expires_at) "
        "VALUES (?, ?, ?, ?)",
        (token_sha256, share_id, created_at, expires_at),
    )


def session_share(conn: Conn, token_sha256: str, now: float) -> ShareRecord | None:
    """The share behind a live session cookie: one query, on every request."""
    row = conn.execute(
        "SELECT s.* FROM share_sessions ss JOIN shares s ON s.id = ss.share_id "
        "WHERE ss.token_sha256 = ? AND ss.expires_at > ?",
        (token_sha256, now),
    ).fetchone()
    return None if row is None else _share(row)


class ShareMixin:
    """The async face of the functions above, for an index with _read/_write."""

    _read: Callable[..., Any]
    _write: Callable[..., Any]

    async def add_share(self, share: ShareRecord) -> None:
        await self._write(add_share, share)

    async def get_share(self, share_id: str) -> ShareRecord:
        share = await self._read(get_share, share_id)
        if share is None:
            raise NotFound(f"no such share: {share_id}")
        return share

    async def share_by_token(self, token_sha256: str) -> ShareRecord | None:
        return await self._read(share_by_token, token_sha256)

    async def list_shares(self, created_by: str | None = None) -> list[ShareRecord]:
        return await self._read(list_shares, created_by)

    async def revoke_share(self, share_id: str) -> bool:
        return await self._write(revoke_share, share_id, time.time())

    async def add_share_session(self, token_sha256: str, share_id: str, expires_at: float) -> None:
        await self._write(add_share_session, token_sha256, share_id, time.time(), expires_at)

    async def session_share(self, token_sha256: str) -> ShareRecord | None:
        return await self._read(session_share, token_sha256, time.time())
