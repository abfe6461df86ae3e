"""``GET /api/audit``: the audit trail for auditors, filtered and paged.

Filters: ``patient``, ``study``, ``user``, ``action``, ``since`` and ``until``
(ISO 8601, naive times are UTC, or epoch seconds); ``limit`` (at most 1000) and
``offset`` page through the rows in time order.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from aiohttp import web

from vna.auth.roles import AUDIT
from vna.errors import BadRequest
from vna.index.security import AuditQuery, AuditRecord
from vna.keys import INDEX
from vna.web import Route

MAX_LIMIT = 1000


def parse_time(name: str, value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{name} must be ISO 8601 or epoch seconds, got {value!r}") from None
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()


def _int(params, name: str, default: int) -> int:
    raw = params.get(name, "")
    if not raw:
        return default
    if not raw.isdigit():
        raise BadRequest(f"{name} must be a non-negative integer")
    return int(raw)


def parse_audit_query(params) -> AuditQuery:
    return AuditQuery(
        patient_id=params.get("patient") or None,
        study_uid=params.get("study") or None,
        who=params.get("user") or None,
        action=params.get("action") or None,
        since=parse_time("since", params.get("since")),
        until=parse_time("until", params.get("until")),
        limit=min(_int(params, "limit", 100), MAX_LIMIT),
        offset=_int(params, "offset", 0),
    )


def record_json(rec: AuditRecord) -> dict:
    out = dataclasses.asdict(rec)
    out["time"] = datetime.fromtimestamp(rec.at, UTC).isoformat(timespec="milliseconds")
    return out


async def list_audit(request: web.Request) -> web.Response:
    query = parse_audit_query(request.query)
    rows = await request.app[INDEX].find_audit(query)
    nxt = query.offset + len(rows) if query.limit and len(rows) == query.limit else None
    body = {"items": [record_json(r) for r in rows], "offset": query.offset, "next": nxt}
    return web.json_response(body, headers={"Cache-Control": "no-store"})


def audit_routes() -> list[Route]:
    return [Route("GET", "/api/audit", list_audit, AUDIT)]
