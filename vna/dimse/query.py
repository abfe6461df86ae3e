"""Query SCP (C-FIND), Patient Root and Study Root, answered from the index.

The identifier becomes a ``vna.index.base.Query`` -- the same one QIDO-RS builds,
so both edges match alike: non-empty values are filters (in QIDO string form),
empty ones are return keys.  Each match (DICOM JSON from the index) comes back
as a pydicom Dataset holding exactly the requested keys, empty when unknown.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pynetdicom import events as evt
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
)

from vna.dimse.audit import dimse_record, record
from vna.dimse.context import HandlerContext, authorize, peer_sites, status
from vna.errors import BadRequest, VnaError, dimse_status
from vna.index.base import Level, Query

log = logging.getLogger(__name__)

IDENTIFIER_DOES_NOT_MATCH = 0xA900
UNABLE_TO_PROCESS = 0xC000
PENDING, CANCEL = 0xFF00, 0xFE00
PENDING_KEYS_NOT_SUPPORTED = 0xFF01  # "one or more Optional Keys were not supported"

LEVELS: dict[str, Level] = {
    "PATIENT": "patient",
    "STUDY": "study",
    "SERIES": "series",
    "IMAGE": "instance",
}
PATIENT_ROOT = {
    str(PatientRootQueryRetrieveInformationModelFind),
    str(PatientRootQueryRetrieveInformationModelGet),
    str(PatientRootQueryRetrieveInformationModelMove),
}
# Attributes of the request that are not matching keys (RetrieveAETitle: we answer it).
NOT_KEYS = {
    "QueryRetrieveLevel",
    "RetrieveAETitle",
    "SpecificCharacterSet",
    "TimezoneOffsetFromUTC",
    "QueryRetrieveView",
}


def query_level(identifier: Dataset, model: str) -> Level:
    raw = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    if raw not in LEVELS:
        raise BadRequest(f"QueryRetrieveLevel must be PATIENT, STUDY, SERIES or IMAGE, not {raw!r}")
    level = LEVELS[raw]
    if level == "patient" and model not in PATIENT_ROOT:
        raise BadRequest("the PATIENT level exists only in the Patient Root information model")
    return level


def match_string(elem: DataElement) -> str:
    """A C-FIND value in QIDO string form: lists joined by backslash, names and
    dates as their DICOM string, wildcards and ranges left as they are."""
    value = elem.value
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v) for v in value)
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    return str(value).strip()


def to_query(identifier: Dataset, model: str) -> tuple[Query, list[DataElement]]:
    """The index query and the requested elements (in the identifier's order)."""
    level = query_level(identifier, model)
    query = Query(level=level)
    requested: list[DataElement] = []
    for elem in identifier:
        keyword = elem.keyword
        if not keyword or keyword in NOT_KEYS or elem.tag.group == 0x0002:
            continue  # private or unknown tags: nothing in the index can match them
        requested.append(elem)
        value = "" if elem.VR == "SQ" or elem.is_empty else match_string(elem)
        if value and value != "*":
            query.filters[keyword] = value
        elif keyword not in query.include:
            query.include.append(keyword)
    return query, requested


def _bulk_uri(tag: str, vr: str, uri: str) -> None:
    return None  # bulk data is never a matching or return key


def to_identifier(
    item: dict[str, Any], requested: list[DataElement], raw_level: str, ae: str
) -> Dataset:
    """One C-FIND response identifier from one DICOM JSON match."""
    found = Dataset.from_json(item, bulk_data_uri_handler=_bulk_uri)
    ds = Dataset()
    ds.QueryRetrieveLevel = raw_level
    for elem in requested:
        if elem.tag in found:
            ds[elem.tag] = found[elem.tag]
        else:
            ds.add_new(elem.tag, elem.VR, [] if elem.VR == "SQ" else None)
    ds.RetrieveAETitle = ae
    if not _is_ascii(ds):
        ds.SpecificCharacterSet = "ISO_IR 192"  # values from DICOM JSON are Unicode
    return ds


def _is_ascii(ds: Dataset) -> bool:
    text_vrs = ("PN", "LO", "SH", "ST", "LT", "UT", "UC")
    return all(
        str(elem.value).isascii() for elem in ds if elem.VR in text_vrs and not elem.is_empty
    )


def _audit(event: evt.Event, ctx: HandlerContext, query: Query, outcome: str, code: int) -> None:
    detail = f"{query.level}: " + " ".join(f"{k}={v}" for k, v in query.filters.items())
    rec = dimse_record(
        event.assoc, "C-FIND", "query", outcome, code,
        patient_id=query.filters.get("PatientID"),
        study_uid=query.filters.get("StudyInstanceUID"),
        detail=detail[:1000],
    )  # fmt: skip
    record(ctx.audit, rec)


def handle_find(
    event: evt.Event, ctx: HandlerContext
) -> Iterator[tuple[int | Dataset, Dataset | None]]:
    model = str(event.request.AffectedSOPClassUID)
    try:
        identifier = event.identifier
        query, requested = to_query(identifier, model)
    except BadRequest as exc:
        log.info("C-FIND refused: %s", exc)
        yield status(IDENTIFIER_DOES_NOT_MATCH, str(exc)), None
        return
    except Exception as exc:  # an identifier pydicom cannot decode
        yield status(UNABLE_TO_PROCESS, f"cannot decode the identifier: {exc}"), None
        return
    peer, refused = authorize(ctx, event, "find")
    if refused is not None:
        yield refused, None
        return
    query.sites = peer_sites(peer)  # a scoped peer sees only its site
    try:
        result = ctx.bridge(ctx.archive.find(query))
    except VnaError as exc:
        _audit(event, ctx, query, "failure", dimse_status(exc))
        yield status(dimse_status(exc), str(exc)), None
        return
    _audit(event, ctx, query, "success", 0x0000)
    raw_level = str(identifier.QueryRetrieveLevel).strip().upper()
    pending = PENDING
    if result.warnings:  # keys the index could not match on were ignored
        log.info("C-FIND: %s", "; ".join(result.warnings))
        pending = PENDING_KEYS_NOT_SUPPORTED
    for item in result.items:
        if event.is_cancelled:
            yield CANCEL, None
            return
        yield pending, to_identifier(item, requested, raw_level, ctx.settings.ae_title)
