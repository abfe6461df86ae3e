"""The read path: records by UID, and QIDO-RS / C-FIND searches (``find_sync``).

Runs on reader connections (never the writer), so searches do not wait for
commits.  Results are built from the per-level DICOM JSON kept in the rows:
values are returned exactly as stored.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from vna.index import attrs
from vna.index.attrs import COMPUTED, LEVEL_KEYS, LEVEL_RANK, LEVELS, tag_hex
from vna.index.base import FindResult, InstanceRecord, Level, Query
from vna.index.query import Compiled, compile_query, key_sql, matches, returned_keywords

Conn = Any
# Rows a Python post-filter may examine before giving up (with a warning), so an
# unindexed key alone cannot turn a search into a scan of the whole archive.
MAX_POST_SCAN = 50_000

_RECORD_SQL = (
    "SELECT i.*, se.series_uid, s.study_uid FROM instances i "
    "JOIN series se ON se.pk = i.series_pk JOIN studies s ON s.pk = i.study_pk "
)


def frames_from_json(text: str | None) -> list[list[tuple[int, int]]] | None:
    if text is None:
        return None
    return [[(int(o), int(n)) for o, n in frame] for frame in json.loads(text)]


def record_from_row(row: Any) -> InstanceRecord:
    return InstanceRecord(
        sop_instance_uid=row["sop_uid"],
        sop_class_uid=row["sop_class_uid"],
        study_instance_uid=row["study_uid"],
        series_instance_uid=row["series_uid"],
        transfer_syntax_uid=row["transfer_syntax"],
        blob_key=row["blob_key"],
        size=row["size"],
        sha256=row["sha256"],
        identity=row["identity"],
        num_frames=row["num_frames"],
        frames=frames_from_json(row["frames"]),
        metadata=json.loads(row["metadata"]),
        stored_at=row["stored_at"],
        source=row["source"],
        current=bool(row["is_current"]),
        site=row["site"],
    )


def get_current(conn: Conn, sop_uid: str) -> InstanceRecord | None:
    row = conn.execute(
        _RECORD_SQL + "WHERE i.sop_uid = ? AND i.is_current = 1", (sop_uid,)
    ).fetchone()
    return None if row is None else record_from_row(row)


def all_versions(conn: Conn, sop_uid: str) -> list[InstanceRecord]:
    rows = conn.execute(
        _RECORD_SQL + "WHERE i.sop_uid = ? ORDER BY i.is_current DESC, i.stored_at DESC, i.pk DESC",
        (sop_uid,),
    ).fetchall()
    return [record_from_row(r) for r in rows]


def instance_rows(
    conn: Conn, study: str, series: str | None, sop: str | None, *, current_only: bool
) -> list[Any]:
    conds, params = ["s.study_uid = ?"], [study]
    if series is not None:
        conds.append("se.series_uid = ?")
        params.append(series)
    if sop is not None:
        conds.append("i.sop_uid = ?")
        params.append(sop)
    if current_only:
        conds.append("i.is_current = 1")
    sql = (
        _RECORD_SQL
        + "WHERE "
        + " AND ".join(conds)
        + " ORDER BY se.series_number, se.pk, i.instance_number, i.pk"
    )
    return conn.execute(sql, params).fetchall()


def blob_page(conn: Conn, after: int, size: int) -> list[tuple[int, str, str, int]]:
    return conn.execute(
        "SELECT pk, blob_key, sha256, size FROM instances WHERE pk > ? ORDER BY pk LIMIT ?",
        (after, size),
    ).fetchall()


# -- find ----------------------------------------------------------------------

# Row fetch for the keys a search selected (at most one page at a time).
_FROM: dict[Level, str] = {
    "patient": "FROM patients p",
    "study": "FROM studies s JOIN patients p ON p.pk = s.patient_pk",
    "series": (
        "FROM series se JOIN studies s ON s.pk = se.study_pk JOIN patients p ON p.pk = s.patient_pk"
    ),
    "instance": (
        "FROM instances i JOIN series se ON se.pk = i.series_pk "
        "JOIN studies s ON s.pk = i.study_pk JOIN patients p ON p.pk = s.patient_pk"
    ),
}
_SELECT: dict[Level, str] = {
    "patient": "p.pk AS patient_pk, p.attrs AS p_attrs, p.num_studies AS p_studies",
    "study": (
        "p.pk AS patient_pk, p.attrs AS p_attrs, p.num_studies AS p_studies, s.pk AS study_pk, "
        "s.attrs AS s_attrs, s.modalities, s.num_series AS s_series, s.num_instances AS s_instances"
    ),
}
_SELECT["series"] = (
    _SELECT["study"]
    + ", se.pk AS series_pk, se.attrs AS se_attrs, se.num_instances AS se_instances"
)
_SELECT["instance"] = _SELECT["series"] + ", i.pk AS instance_pk, i.attrs AS i_attrs"
_PAGE = 500


def _fetch(conn: Conn, level: Level, pks: list[int]) -> list[Any]:
    """Full rows for ``pks``, in the order given."""
    alias = attrs.ALIAS[level]
    marks = ", ".join("?" for _ in pks)
    sql = f"SELECT {_SELECT[level]}, {alias}.pk AS key_pk {_FROM[level]} WHERE {alias}.pk IN ({marks})"
    by_pk = {row["key_pk"]: row for row in conn.execute(sql, pks)}
    return [by_pk[pk] for pk in pks if pk in by_pk]


def find_sync(conn: Conn, query: Query) -> FindResult:
    """Two steps: the matching keys in order (narrow, index-driven, LIMIT in SQL
    unless a Python post-filter must see the rows), then full rows for one page."""
    compiled = compile_query(query)
    sql, params = key_sql(query, compiled)
    if not compiled.post:
        sql += " LIMIT ? OFFSET ?"
        params += [query.limit if query.limit is not None else -1, query.offset]
    builder = _Builder(query, compiled)
    warnings = list(compiled.warnings)
    items: list[dict[str, Any]] = []
    skipped = scanned = 0
    cursor = conn.execute(sql, params)
    while page := [r[0] for r in cursor.fetchmany(_PAGE)]:
        for row in _fetch(conn, query.level, page):
            ctx = _Row(conn, query.level, row)
            if compiled.post:
                scanned += 1
                if scanned > MAX_POST_SCAN:
                    warnings.append(
                        f"stopped after {MAX_POST_SCAN} candidates for the unindexed key(s) "
                        f"{', '.join(k for k, _ in compiled.post)}: add an indexed key to narrow"
                    )
                    return FindResult(items=items, warnings=warnings)
                if not all(matches(k, m, ctx.element(k)) for k, m in compiled.post):
                    continue
                if skipped < query.offset:
                    skipped += 1
                    continue
            items.append(builder.build(ctx))
            if compiled.post and query.limit is not None and len(items) >= query.limit:
                return FindResult(items=items, warnings=warnings)
    return FindResult(items=items, warnings=warnings)


class _Row:
    """One result row's DICOM JSON sources, parsed lazily."""

    def __init__(self, conn: Conn, level: Level, row: Any) -> None:
        self.conn, self.level, self.row = conn, level, row
        self._sources: list[dict[str, Any]] | None = None
        self._rep: dict[str, Any] | None = None

    @property
    def sources(self) -> list[dict[str, Any]]:
        if self._sources is None:
            cols = ("p_attrs", "s_attrs", "se_attrs", "i_attrs")[: LEVEL_RANK[self.level] + 1]
            self._sources = [json.loads(self.row[c]) for c in cols if self.row[c] is not None]
            if self.level == "instance" and self.row["i_attrs"] is None:
                self._sources.append(self.representative())  # written before migration 3
        return self._sources

    def representative(self) -> dict[str, Any]:
        """Any current instance below a study / series row, for attributes the
        level rows do not keep (e.g. includefield=StationName at study level)."""
        if self._rep is None:
            if self.level == "instance":
                got = self.conn.execute(
                    "SELECT metadata FROM instances WHERE pk = ?", (self.row["instance_pk"],)
                ).fetchone()
                self._rep = json.loads(got[0])
            elif self.level == "patient":
                self._rep = {}
            else:
                col, pk = (
                    ("series_pk", self.row["series_pk"])
                    if self.level == "series"
                    else ("study_pk", self.row["study_pk"])
                )
                got = self.conn.execute(
                    f"SELECT metadata FROM instances WHERE {col} = ? AND is_current = 1 LIMIT 1",
                    (pk,),
                ).fetchone()
                self._rep = json.loads(got[0]) if got else {}
        return self._rep

    def element(self, keyword: str) -> dict[str, Any] | None:
        tag = tag_hex(keyword)
        for src in self.sources:
            if tag in src:
                return src[tag]
        if _kept_at(keyword, self.level):
            return None
        return self.representative().get(tag)

    def count(self, sql: str) -> int:
        return int(self.conn.execute(sql, (self.row["patient_pk"],)).fetchone()[0])


@functools.cache
def _kept_at(keyword: str, level: Level) -> bool:
    """Is the attribute kept in the level rows (so absence there means absent)?"""
    rank = LEVEL_RANK[level]
    return any(keyword in LEVEL_KEYS[lvl] for lvl in LEVELS[: rank + 1])


class _Builder:
    def __init__(self, query: Query, compiled: Compiled) -> None:
        self.query = query
        self.keywords = returned_keywords(query, compiled)

    def build(self, ctx: _Row) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.query.include_all:
            extra = [ctx.representative()] if ctx.level == "instance" else []
            for src in [*ctx.sources, *extra]:
                for tag, elem in src.items():
                    if "BulkDataURI" not in elem and "InlineBinary" not in elem:
                        out[tag] = elem
        for keyword in self.keywords:
            tag = tag_hex(keyword)
            if keyword in COMPUTED:
                out[tag] = _computed(keyword, ctx)
            elif tag not in out:
                out[tag] = ctx.element(keyword) or {"vr": attrs.vr_of(keyword)}
        return dict(sorted(out.items()))


def _computed(keyword: str, ctx: _Row) -> dict[str, Any]:
    row, level = ctx.row, ctx.level
    if keyword == "InstanceAvailability":
        return {"vr": "CS", "Value": ["ONLINE"]}
    if keyword == "ModalitiesInStudy":
        if level == "patient":
            return {"vr": "CS"}
        mods = [m for m in row["modalities"].split("\\") if m]
        return {"vr": "CS", "Value": mods} if mods else {"vr": "CS"}
    value: int | None = None
    if keyword == "NumberOfPatientRelatedStudies":
        value = row["p_studies"]
    elif keyword == "NumberOfPatientRelatedSeries":
        value = ctx.count("SELECT COALESCE(SUM(num_series), 0) FROM studies WHERE patient_pk = ?")
    elif keyword == "NumberOfPatientRelatedInstances":
        value = ctx.count(
            "SELECT COALESCE(SUM(num_instances), 0) FROM studies WHERE patient_pk = ?"
        )
    elif keyword == "NumberOfStudyRelatedSeries" and level != "patient":
        value = row["s_series"]
    elif keyword == "NumberOfStudyRelatedInstances" and level != "patient":
        value = row["s_instances"]
    elif keyword == "NumberOfSeriesRelatedInstances" and LEVEL_RANK[level] >= 2:
        value = row["se_instances"]
    return {"vr": "IS"} if value is None else {"vr": "IS", "Value": [value]}
