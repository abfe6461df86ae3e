"""Slide rows: plain CRUD, ``properties`` kept as JSON text."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from vna.errors import BadRequest
from vna.index.attrs import dumps
from vna.index.base import SlideRecord, SlideStatus

Conn = Any
FIELDS = [f.name for f in dataclasses.fields(SlideRecord)]


def _to_db(name: str, value: Any) -> Any:
    if name == "properties":
        return dumps(value or {})
    if name == "status":
        return SlideStatus(value).value
    return value


def from_row(row: Any) -> SlideRecord:
    values = {name: row[name] for name in FIELDS}
    values["status"] = SlideStatus(values["status"])
    values["properties"] = json.loads(values["properties"] or "{}")
    return SlideRecord(**values)


def put(conn: Conn, slide: SlideRecord) -> None:
    values = [_to_db(n, getattr(slide, n)) for n in FIELDS]
    updates = ", ".join(f"{n} = excluded.{n}" for n in FIELDS if n != "id")
    conn.execute(
        f"INSERT INTO slides ({', '.join(FIELDS)}) VALUES ({', '.join('?' for _ in FIELDS)}) "
        f"ON CONFLICT (id) DO UPDATE SET {updates}",
        values,
    )


def get(conn: Conn, slide_id: str) -> SlideRecord | None:
    row = conn.execute("SELECT * FROM slides WHERE id = ?", (slide_id,)).fetchone()
    return None if row is None else from_row(row)


def list_all(
    conn: Conn, sites: list[str] | None, statuses: list[str] | None = None
) -> list[SlideRecord]:
    where, params = [], []
    for col, values in (("site", sites), ("status", statuses)):
        if values is None:
            continue
        if not values:
            return []
        where.append(f"{col} IN ({', '.join('?' for _ in values)})")
        params += list(values)
    sql = "SELECT * FROM slides" + (" WHERE " + " AND ".join(where) if where else "")
    sql += " ORDER BY created_at DESC, id"
    return [from_row(r) for r in conn.execute(sql, params).fetchall()]


def update(conn: Conn, slide_id: str, fields: dict[str, Any]) -> bool:
    """False when no such slide."""
    unknown = sorted(set(fields) - set(FIELDS) | ({"id"} & set(fields)))
    if unknown:
        raise BadRequest(f"cannot update slide field(s) {', '.join(unknown)}")
    if not fields:
        return conn.execute("SELECT 1 FROM slides WHERE id = ?", (slide_id,)).fetchone() is not None
    sets = ", ".join(f"{n} = ?" for n in fields)
    values = [_to_db(n, v) for n, v in fields.items()]
    cur = conn.execute(f"UPDATE slides SET {sets} WHERE id = ?", (*values, slide_id))
    return cur.rowcount > 0


def delete(conn: Conn, slide_id: str) -> bool:
    return conn.execute("DELETE FROM slides WHERE id = ?", (slide_id,)).rowcount > 0


def arrivals(conn: Conn, sop_class_uid: str, after: int, limit: int) -> list[tuple]:
    """Current instances of one SOP class stored after instances row ``after``, in
    row order: rows only grow, so a watcher keeps the last pk as its cursor and each
    poll reads what is new (by the sop_class_uid index), not the whole archive."""
    return conn.execute(
        "SELECT i.pk, st.study_uid, se.series_uid, i.stored_at FROM instances i "
        "JOIN series se ON se.pk = i.series_pk JOIN studies st ON st.pk = i.study_pk "
        "WHERE i.sop_class_uid = ? AND i.pk > ? AND i.is_current = 1 ORDER BY i.pk LIMIT ?",
        (sop_class_uid, after, limit),
    ).fetchall()
