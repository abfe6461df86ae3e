"""QIDO-RS (PS3.18 10.6): the six search resources, parsed into one Query."""

from __future__ import annotations

import json

from aiohttp import web
from multidict import MultiMapping
from pydicom.datadict import dictionary_keyword, keyword_for_tag, tag_for_keyword

from vna.auth import scope_sites
from vna.dicomweb.uids import check_uid
from vna.errors import BadRequest
from vna.index.base import Level, Query
from vna.keys import ARCHIVE
from vna.web import dicom_json

RESERVED = {"limit", "offset", "fuzzymatching", "includefield", "orderby"}
MAX_LIMIT = 10_000  # asked for explicitly
DEFAULT_LIMIT = 1_000  # when no limit is given: a page a viewer can use, not a table scan


def keyword_of(key: str) -> str:
    """'PatientName', '00100010' or 'x00100010' -> 'PatientName'; else BadRequest."""
    if tag_for_keyword(key) is not None:
        return key
    hexdigits = key[1:] if key[:1] in ("x", "X") else key
    if len(hexdigits) == 8:
        try:
            tag = int(hexdigits, 16)
        except ValueError:
            pass
        else:
            keyword = keyword_for_tag(tag) or _safe_keyword(tag)
            if keyword:
                return keyword
    raise BadRequest(f"unknown attribute {key!r} in query")


def _safe_keyword(tag: int) -> str:
    try:
        return dictionary_keyword(tag)
    except KeyError:
        return ""


def _int_param(params: MultiMapping[str], name: str, default: int | None) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit():
        raise BadRequest(f"{name} must be a non-negative integer, got {raw!r}")
    return int(raw)


def parse_query(level: Level, params: MultiMapping[str], path: dict[str, str]) -> Query:
    query = Query(level=level)
    for key, value in params.items():
        if key.lower() in RESERVED:
            continue
        keyword = keyword_of(key.split(".")[0])  # sequence-path keys match their top item
        if keyword in query.filters and query.filters[keyword] != value:
            raise BadRequest(f"attribute {key} given twice with different values")
        query.filters[keyword] = value
    for keyword, uid in path.items():
        query.filters[keyword] = check_uid(uid)
    for raw in params.getall("includefield", []):
        for item in raw.split(","):
            item = item.strip()
            if item.lower() == "all":
                query.include_all = True
            elif item:
                query.include.append(keyword_of(item))
    fuzzy = params.get("fuzzymatching", "false").lower()
    if fuzzy not in ("true", "false"):
        raise BadRequest("fuzzymatching must be true or false")
    query.fuzzy = fuzzy == "true"
    limit = _int_param(params, "limit", None)
    query.limit = min(limit, MAX_LIMIT) if limit is not None else DEFAULT_LIMIT
    query.offset = _int_param(params, "offset", 0) or 0
    return query


def _encoded(items: list[dict]) -> bytes:
    return json.dumps(items).encode()


def _search(level: Level, path_keys: dict[str, str]):
    async def handler(request: web.Request) -> web.Response:
        path = {kw: request.match_info[name] for name, kw in path_keys.items()}
        query = parse_query(level, request.query, path)
        query.sites = scope_sites(request)  # a caller sees only its granted sites
        result = await request.app[ARCHIVE].find(query)
        # up to thousands of results: encode off the event loop
        resp = dicom_json(await request.app[ARCHIVE].run(_encoded, result.items))
        if result.warnings:
            resp.headers["Warning"] = ", ".join(
                f'299 vna "{w.replace(chr(34), chr(39))}"' for w in result.warnings
            )
        return resp

    return handler


STUDY = {"study": "StudyInstanceUID"}
SERIES = {"study": "StudyInstanceUID", "series": "SeriesInstanceUID"}

search_studies = _search("study", {})
search_series = _search("series", {})
search_study_series = _search("series", STUDY)
search_instances = _search("instance", {})
search_study_instances = _search("instance", STUDY)
search_series_instances = _search("instance", SERIES)
