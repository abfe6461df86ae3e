"""``make_index(url)``: the one place an index URL becomes an ``Index``.

``sqlite:///relative/index.db`` and ``sqlite:////absolute/index.db`` (the
SQLAlchemy convention: the path is whatever follows ``sqlite:///``).
PostgreSQL will slot in here behind the same interface; the write/read SQL in
vna.index.writes / reads is kept portable for it.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from vna.errors import BadRequest
from vna.index.base import Index
from vna.index.sqlite import SqliteIndex

_POSTGRES = ("postgresql", "postgres", "postgresql+psycopg", "postgresql+asyncpg")


def sqlite_path(url: str) -> Path:
    if not url.startswith("sqlite:///"):
        raise BadRequest(f"index URL {url!r}: expected sqlite:///path/to/index.db")
    path = unquote(url[len("sqlite:///") :].split("?", 1)[0])
    if not path or path == ":memory:":
        raise BadRequest(f"index URL {url!r}: a database file path is required")
    return Path(path)


def make_index(url: str) -> Index:
    scheme = urlsplit(url).scheme.lower()
    if scheme == "sqlite":
        return SqliteIndex(url, sqlite_path(url))
    if scheme in _POSTGRES:
        raise BadRequest(f"index URL {url!r}: PostgreSQL is not yet supported")
    raise BadRequest(f"index URL {url!r}: unsupported scheme {scheme!r} (use sqlite:///...)")
