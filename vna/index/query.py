"""QIDO-RS / C-FIND matching (PS3.4 C.2.2.2), compiled into SQL.

Pure functions: ``compile_query`` turns a ``Query`` into a WHERE clause with
parameters, the keys left for a Python post-filter, and the returned keywords.
``parse_match`` turns one value into a ``Match`` that both the SQL emitter and the
Python matcher (``matches``) understand, so both paths agree.

Attributes the index does not extract are matched in Python against the level's
stored DICOM JSON (post-filter, only on the candidate rows); attributes of a
lower level than the query's are ignored with a warning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import tag_for_keyword

from vna.errors import BadRequest
from vna.index import attrs
from vna.index.attrs import CATALOG, DEFAULTS, LEVEL_RANK, Attr
from vna.index.base import Level, Query

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_DATE = re.compile(r"^\d{8}$")
_TIME = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")
_DT = re.compile(r"^\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?)?)?([+-]\d{4})?$")
_DT_TZ_SINGLE = re.compile(r"^\d{10}(\d{2}(\d{2}(\.\d{1,6})?)?)?[+-]\d{4}$")
_TOP = "\U0010ffff"  # sorts after every string with a given prefix (UTF-8 / binary order)


@dataclass(slots=True)
class Match:
    """One parsed match value.  kind: any | exact | wild | range | fuzzy.

    ``items`` holds exact values or wildcard patterns (a \\-list matches any);
    ``ranges`` holds (low, high) normalized bounds, '' meaning open."""

    kind: str
    items: list[str] = field(default_factory=list)
    ranges: list[tuple[str, str]] = field(default_factory=list)


@dataclass(slots=True)
class Cond:
    level: Level  # whose table the condition is on (aliases p, s, se, i)
    sql: str
    params: list[Any]


@dataclass(slots=True)
class Compiled:
    conds: list[Cond] = field(default_factory=list)
    post: list[tuple[str, Match]] = field(default_factory=list)  # Python post-filter
    returned: list[str] = field(default_factory=list)  # keywords to return, in request order
    warnings: list[str] = field(default_factory=list)

    @property
    def where(self) -> list[str]:
        return [c.sql for c in self.conds]

    @property
    def params(self) -> list[Any]:
        return [p for c in self.conds for p in c.params]

    def add(self, level: Level, sql: str, params: list[Any]) -> None:
        self.conds.append(Cond(level, sql, params))


# -- parsing -------------------------------------------------------------------


def parse_match(keyword: str, kind: str, value: str, fuzzy: bool = False) -> Match:
    """Parse one QIDO value for an attribute of ``kind``; BadRequest if malformed."""
    value = value.strip()
    if value in ("", "*"):
        return Match("any")
    items = value.split("\\")
    if kind == "uid":
        for uid in items:
            if not _UID.match(uid) or len(uid) > 64:
                raise BadRequest(f"{keyword}: {uid!r} is not a valid UID")
        return Match("exact", items)
    if kind in ("date", "time", "datetime"):
        return Match("range", ranges=[_parse_range(keyword, kind, it) for it in items])
    if kind in ("int", "count"):
        for it in items:
            if not re.fullmatch(r"[+-]?\d+", it.strip()):
                raise BadRequest(f"{keyword}: {it!r} is not an integer")
        return Match("exact", [str(int(it)) for it in items])
    if kind == "pn":
        if fuzzy:
            return Match("fuzzy", [value])
        items = [attrs.fold_pn(it) for it in items]
    if any(_is_wild(it) for it in items):
        return Match("wild", items)
    return Match("exact", items)


def _is_wild(text: str) -> bool:
    return "*" in text or "?" in text


def _parse_range(keyword: str, kind: str, item: str) -> tuple[str, str]:
    pattern = {"date": _DATE, "time": _TIME, "datetime": _DT}[kind]
    item = item.replace(".", "") if kind == "date" else item.replace(":", "")
    tz = _DT_TZ_SINGLE.match(item) if kind == "datetime" else None
    if tz:  # '2020010110-0500' is one value with a UTC offset, not a range
        return _norm(kind, item, False), _norm(kind, item, True)
    for pos in [i for i, ch in enumerate(item) if ch == "-"] or [-1]:
        low, high = (item[:pos], item[pos + 1 :]) if pos >= 0 else (item, item)
        if pos >= 0 and not low and not high:
            continue
        if all(
            not side or (pattern.match(side) and _plausible(kind, side)) for side in (low, high)
        ):
            lo, hi = _norm(kind, low, False), _norm(kind, high, True)
            if lo and hi and lo > hi:
                raise BadRequest(f"{keyword}: range {item!r} ends before it starts")
            return lo, hi
    raise BadRequest(f"{keyword}: {item!r} is not a valid {kind.upper()} value or range")


def _plausible(kind: str, value: str) -> bool:
    """Field limits the patterns cannot express: month 01-12, day 01-31, hour 00-23,
    minute 00-59, second 00-60 (leap second)."""
    digits = re.split(r"[.+-]", value)[0]
    if kind == "time":
        fields, widths = [(0, 23), (0, 59), (0, 60)], [2, 2, 2]
    else:
        fields = [(0, 9999), (1, 12), (1, 31), (0, 23), (0, 59), (0, 60)]
        widths = [4, 2, 2, 2, 2, 2]
    pos = 0
    for (lo, hi), width in zip(fields, widths, strict=True):
        part = digits[pos : pos + width]
        if len(part) < width:
            break
        if not lo <= int(part) <= hi:
            return False
        pos += width
    return True


def _norm(kind: str, value: str, high: bool) -> str:
    if not value:
        return ""
    if kind == "date":
        return value
    if kind == "time":
        return attrs.norm_time(value, high=high)
    return attrs.norm_datetime(value, high=high)


def resolve_keyword(key: str) -> str:
    """A keyword, or an 8-digit hex tag, to a keyword; BadRequest otherwise."""
    if tag_for_keyword(key) is not None:
        return key
    if re.fullmatch(r"[xX]?[0-9a-fA-F]{8}", key):
        keyword = attrs.keyword_of_tag(key[-8:])
        if keyword:
            return keyword
    raise BadRequest(f"unknown attribute {key!r} in query")


# -- SQL -----------------------------------------------------------------------


def glob_pattern(pattern: str) -> str:
    """DICOM wildcard (* ?) to SQLite GLOB; '[' is GLOB's only other metacharacter."""
    return pattern.replace("[", "[[]")


def like_pattern(pattern: str) -> str:
    """DICOM wildcard to SQL LIKE ... ESCAPE '\\' (for PostgreSQL later)."""
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def literal_prefix(pattern: str) -> str:
    return re.split(r"[*?]", pattern, maxsplit=1)[0]


def _text_sql(col: str, m: Match, params: list[Any]) -> str:
    """Exact / wildcard / list match on one text column."""
    ors = []
    for it in m.items:
        if m.kind == "wild" and _is_wild(it):
            prefix = literal_prefix(it)
            if it == prefix + "*" and prefix:  # pure prefix: an index range is enough
                ors.append(f"({col} >= ? AND {col} < ?)")
                params += [prefix, prefix + _TOP]
            elif prefix:  # range narrows the index scan, GLOB decides
                ors.append(f"({col} >= ? AND {col} < ? AND {col} GLOB ?)")
                params += [prefix, prefix + _TOP, glob_pattern(it)]
            else:
                ors.append(f"{col} GLOB ?")
                params.append(glob_pattern(it))
        else:
            ors.append(f"{col} = ?")
            params.append(it)
    return ors[0] if len(ors) == 1 else "(" + " OR ".join(ors) + ")"


def _pn_sql(attr: Attr, m: Match, params: list[Any], owner: str) -> str:
    if m.kind == "fuzzy":
        # fuzzy matching is already a prefix match per word, so a wildcard adds
        # nothing: drop the wildcard characters, never the word they were in
        tokens = attrs.name_tokens(re.sub(r"[*?]", "", m.items[0]))
        if not tokens:
            return "1 = 1"
        parts = []
        for tok in tokens:
            parts.append(
                f"{owner} IN (SELECT owner FROM name_tokens "
                "WHERE attr = ? AND token >= ? AND token < ?)"
            )
            params += [attr.keyword, tok, tok + _TOP]
        return "(" + " AND ".join(parts) + ")"
    ors = []
    for it in m.items:
        sub = Match("wild" if _is_wild(it) else "exact", [it])
        if "=" in it:  # groups given explicitly: each non-empty group must match
            ands = []
            for suffix, group in zip("aip", (it.split("=") + ["", ""])[:3], strict=True):
                group = group.rstrip("^ ")
                if group:
                    g = Match("wild" if _is_wild(group) else "exact", [group])
                    ands.append(_text_sql(f"{attr.ref}_{suffix}", g, params))
            ors.append("(" + " AND ".join(ands or ["1 = 1"]) + ")")
        else:  # one value: any group may match (a Korean name searched in Hangul)
            groups = [_text_sql(f"{attr.ref}_{s}", sub, params) for s in "aip"]
            ors.append("(" + " OR ".join(groups) + ")")
    return ors[0] if len(ors) == 1 else "(" + " OR ".join(ors) + ")"


def _range_sql(col: str, m: Match, params: list[Any]) -> str:
    ors = []
    for low, high in m.ranges:
        conds = [f"{col} <> ''"]
        if low:
            conds.append(f"{col} >= ?")
            params.append(low)
        if high:
            conds.append(f"{col} <= ?")
            params.append(high)
        ors.append("(" + " AND ".join(conds) + ")")
    return ors[0] if len(ors) == 1 else "(" + " OR ".join(ors) + ")"


def _modalities_sql(m: Match, params: list[Any]) -> str:
    cond = _text_sql("x.modality", m, params)
    return (
        "EXISTS (SELECT 1 FROM series x WHERE x.study_pk = s.pk "
        f"AND x.num_instances > 0 AND {cond})"
    )


def attr_sql(attr: Attr, m: Match, params: list[Any]) -> str:
    """SQL condition for one catalogue attribute (m.kind != 'any')."""
    if attr.kind == "pn":
        return _pn_sql(attr, m, params, owner=f"{attrs.ALIAS[attr.level]}.pk")
    if attr.kind == "modalities":
        return _modalities_sql(m, params)
    if attr.kind in ("date", "time", "datetime"):
        return _range_sql(attr.ref, m, params)
    if attr.kind in ("int", "count"):
        marks = ", ".join("?" for _ in m.items)
        params += [int(it) for it in m.items]
        return f"{attr.ref} IN ({marks})"
    return _text_sql(attr.ref, m, params)


def compile_query(query: Query) -> Compiled:
    """WHERE conditions and params for ``query`` (tables aliased p, s, se, i)."""
    level = query.level
    out = Compiled()
    for raw_key, value in query.filters.items():
        keyword = resolve_keyword(raw_key)
        if level == "study" and keyword == "Modality":
            keyword = "ModalitiesInStudy"  # what viewers mean by it at study level
        if keyword not in out.returned:
            out.returned.append(keyword)
        _compile_one(keyword, value, query, out)
    for raw_key in query.include:
        keyword = resolve_keyword(raw_key)
        if keyword not in out.returned:
            out.returned.append(keyword)
    _compile_sites(query, out)
    return out


def _compile_one(keyword: str, value: str, query: Query, out: Compiled) -> None:
    attr = CATALOG.get(keyword)
    level_rank = LEVEL_RANK[query.level]
    if attr is not None and LEVEL_RANK[attr.level] <= level_rank:
        m = parse_match(keyword, attr.kind, value, query.fuzzy)
        if m.kind != "any":
            params: list[Any] = []
            out.add(attr.level, attr_sql(attr, m, params), params)
        return
    if attr is not None or keyword in attrs.COMPUTED:
        if value.strip():
            out.warnings.append(
                f"{keyword} is not an attribute of the {query.level} level: ignored"
            )
        return
    if attrs.vr_of(keyword) == "SQ":
        if value.strip():
            out.warnings.append(f"{keyword}: matching inside sequences is not supported: ignored")
        return
    m = parse_match(keyword, _post_kind(keyword), value, query.fuzzy)
    if m.kind != "any":
        out.post.append((keyword, m))


def _post_kind(keyword: str) -> str:
    vr = attrs.vr_of(keyword)
    return {
        "UI": "uid",
        "PN": "pn",
        "DA": "date",
        "TM": "time",
        "DT": "datetime",
        "IS": "int",
        "US": "int",
        "UL": "int",
        "SS": "int",
        "SL": "int",
    }.get(vr, "text")


def _compile_sites(query: Query, out: Compiled) -> None:
    if query.sites is None:
        return
    if not query.sites:
        out.add(query.level, "1 = 0", [])
        return
    marks = ", ".join("?" for _ in query.sites)
    if query.level == "patient":
        sql = f"EXISTS (SELECT 1 FROM studies y WHERE y.patient_pk = p.pk AND y.site IN ({marks}))"
    else:
        sql = f"{attrs.ALIAS[query.level]}.site IN ({marks})"
    out.add(query.level, sql, list(query.sites))


# -- the key query: which rows, in which order ----------------------------------

TABLE: dict[Level, str] = {
    "patient": "patients",
    "study": "studies",
    "series": "series",
    "instance": "instances",
}
_PARENT: dict[Level, tuple[Level, str]] = {
    "study": ("patient", "s.patient_pk"),
    "series": ("study", "se.study_pk"),
    "instance": ("series", "i.series_pk"),
}
_VISIBLE: dict[Level, str] = {
    "patient": "p.num_studies > 0",
    "study": "s.num_instances > 0",
    "series": "se.num_instances > 0",
    "instance": "i.is_current = 1",
}
ORDER: dict[Level, str] = {
    "patient": "p.patient_id, p.issuer",
    "study": "s.study_date DESC, s.study_uid DESC",
    "series": "se.study_pk, se.series_number, se.pk",
    "instance": "i.series_pk, i.instance_number, i.pk",
}


def _scoped(level: Level, conds: list[Cond]) -> tuple[list[str], list[Any]]:
    """Conditions on ``level``'s table; those on upper levels become one nested
    ``fk IN (SELECT pk FROM parent ...)``, so each query reads a single table and
    the planner picks between the filter's index and the order's index."""
    where = [c.sql for c in conds if c.level == level]
    params = [p for c in conds if c.level == level for p in c.params]
    upper = [c for c in conds if LEVEL_RANK[c.level] < LEVEL_RANK[level]]
    if upper:
        parent, fk = _PARENT[level]
        sub_where, sub_params = _scoped(parent, upper)
        alias = attrs.ALIAS[parent]
        where.append(
            f"{fk} IN (SELECT {alias}.pk FROM {TABLE[parent]} {alias} "
            f"WHERE {' AND '.join(sub_where)})"
        )
        params += sub_params
    return where, params


def key_sql(query: Query, compiled: Compiled) -> tuple[str, list[Any]]:
    """SELECT of the matching rows' primary keys, in result order (no LIMIT)."""
    level = query.level
    alias = attrs.ALIAS[level]
    where, params = _scoped(level, compiled.conds)
    sql = (
        f"SELECT {alias}.pk FROM {TABLE[level]} {alias} "
        f"WHERE {' AND '.join([_VISIBLE[level], *where])} ORDER BY {ORDER[level]}"
    )
    return sql, params


def returned_keywords(query: Query, compiled: Compiled) -> list[str]:
    """Defaults of the level, then what was matched on or asked for."""
    keys = list(DEFAULTS[query.level])
    if query.level in ("series", "instance") and "StudyInstanceUID" not in query.filters:
        keys += [k for k in DEFAULTS["study"] if k not in keys]
    if query.level == "instance" and "SeriesInstanceUID" not in query.filters:
        keys += [k for k in DEFAULTS["series"] if k not in keys]
    keys += [k for k in compiled.returned if k not in keys]
    return keys


# -- Python matching (post-filter) ---------------------------------------------


def _wild_regex(pattern: str) -> re.Pattern[str]:
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(body + r"\Z", re.DOTALL)


def _value_strings(kind: str, element: dict[str, Any] | None) -> list[str]:
    values = (element or {}).get("Value") or []
    if kind == "pn":
        return [attrs.fold_pn(g) for v in values for g in attrs.pn_groups(v) if g]
    if kind == "int":
        return [str(int(v)) for v in values if str(v).strip().lstrip("+-").isdigit()]
    if kind == "date":
        return [attrs.norm_date(str(v)) for v in values]
    if kind == "time":
        return [attrs.norm_time(str(v)) for v in values]
    if kind == "datetime":
        return [attrs.norm_datetime(str(v)) for v in values]
    return [str(v).strip() for v in values if not isinstance(v, dict)]


def matches(keyword: str, m: Match, element: dict[str, Any] | None) -> bool:
    """Does a DICOM JSON element satisfy the match?  Same rules as the SQL."""
    if m.kind == "any":
        return True
    kind = _post_kind(keyword)
    values = _value_strings(kind, element)
    if m.kind == "fuzzy":
        words = {w for v in values for w in attrs.name_tokens(v)}
        wanted = attrs.name_tokens(m.items[0].replace("*", "").replace("?", ""))
        return all(any(w.startswith(t) for w in words) for t in wanted)
    if m.kind == "range":
        return any(
            v and (not lo or v >= lo) and (not hi or v <= hi) for v in values for lo, hi in m.ranges
        )
    for it in m.items:
        if _is_wild(it):
            rx = _wild_regex(it)
            if any(rx.match(v) for v in values):
                return True
        elif it in values:
            return True
    return False
