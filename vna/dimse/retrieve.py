"""Retrieve SCP: C-GET (back over the same association) and C-MOVE (to a known peer).

Both resolve the identifier to stored instances through the index, then feed
pynetdicom's retrieve loop one ``Outgoing`` placeholder per instance; the stored
bytes are read just before each sub-operation, so one instance is in memory at a
time.  pynetdicom keeps the sub-operation counts and sends the pending and final
responses (0x0000; 0xB000 when some failed; 0xA702 when all failed; 0xFE00 on
C-CANCEL).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import events as evt
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import Verification

from vna.dimse.audit import dimse_record, record
from vna.dimse.context import HandlerContext, authorize, peer_sites, status
from vna.dimse.net import peer_tls_args, set_nodelay
from vna.dimse.query import CANCEL, PENDING, match_string, query_level
from vna.dimse.send import Outgoing, contexts_for, enable_raw_store
from vna.errors import BadRequest, NotFound, VnaError, dimse_status
from vna.index.base import InstanceRecord, Query

log = logging.getLogger(__name__)

IDENTIFIER_DOES_NOT_MATCH = 0xA900
MATCH_KEYS = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
REQUIRED = {
    "patient": "PatientID",
    "study": "StudyInstanceUID",
    "series": "SeriesInstanceUID",
    "instance": "SOPInstanceUID",
}
TAGS = {"study": "0020000D", "series": "0020000E", "instance": "00080018"}


def _first(item: dict[str, Any], tag: str) -> str | None:
    values = item.get(tag, {}).get("Value") or [None]
    return values[0]


def retrieve_query(identifier: Dataset, model: str) -> Query:
    """The index query naming what to retrieve: the unique keys of the identifier."""
    level = query_level(identifier, model)
    filters = {
        kw: match_string(identifier[kw])
        for kw in MATCH_KEYS
        if kw in identifier and not identifier[kw].is_empty
    }
    if REQUIRED[level] not in filters:
        raise BadRequest(f"{REQUIRED[level]} is required to retrieve at this level")
    if any(c in value for value in filters.values() for c in "*?"):
        # PS3.4 C.4.2.2.1: retrieve keys are single values or lists, never wildcards
        raise BadRequest("wildcards are not allowed in the keys of a retrieve")
    include = ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"]
    # a patient is retrieved study by study
    return Query(
        level="study" if level == "patient" else level, filters=filters, include=include, limit=None
    )


def resolve(ctx: HandlerContext, query: Query) -> list[InstanceRecord]:
    """Every current instance the query names, each once."""
    found = ctx.bridge(ctx.archive.find(query))
    records: dict[str, InstanceRecord] = {}
    for item in found.items:
        study = _first(item, TAGS["study"])
        series = _first(item, TAGS["series"]) if query.level in ("series", "instance") else None
        sop = _first(item, TAGS["instance"]) if query.level == "instance" else None
        if not study:
            continue
        try:
            for rec in ctx.bridge(ctx.archive.instances(study, series, sop, sites=query.sites)):
                records.setdefault(rec.sop_instance_uid, rec)
        except NotFound:  # deleted between the find and now
            continue
    return list(records.values())


def _load(ctx: HandlerContext, rec: InstanceRecord) -> Outgoing:
    try:
        return Outgoing(rec, ctx.bridge(ctx.archive.read_instance(rec)))
    except VnaError as exc:
        log.error("cannot read %s for a retrieve: %s", rec.sop_instance_uid, exc)
        return Outgoing(rec, None, str(exc))


def _sub_operations(
    event: evt.Event, ctx: HandlerContext, records: list[InstanceRecord]
) -> Iterator[Any]:
    yield len(records)
    for rec in records:
        if event.is_cancelled:
            yield CANCEL, None
            return
        yield PENDING, _load(ctx, rec)


def _records(event: evt.Event, ctx: HandlerContext) -> list[InstanceRecord] | Dataset:
    """The instances to send, or the failure status to answer with."""
    peer, refused = authorize(ctx, event, "retrieve")
    if refused is not None:
        return refused
    try:
        query = retrieve_query(event.identifier, str(event.request.AffectedSOPClassUID))
        query.sites = peer_sites(peer)  # a scoped peer retrieves only its site's
        return resolve(ctx, query)
    except BadRequest as exc:
        return status(IDENTIFIER_DOES_NOT_MATCH, str(exc))
    except VnaError as exc:
        return status(dimse_status(exc), str(exc))
    except Exception as exc:  # an identifier pydicom cannot decode
        return status(0xC000, f"cannot process the identifier: {exc}")


def _audit(event: evt.Event, ctx: HandlerContext, service: str, records: Any, detail: str) -> None:
    """One record per retrieve: what was asked for, how many instances it named."""
    ok = isinstance(records, list)
    studies = sorted({r.study_instance_uid for r in records}) if ok else []
    rec = dimse_record(
        event.assoc, service, "retrieve", "success" if ok else "failure",
        0x0000 if ok else int(records.Status),
        study_uid=studies[0] if len(studies) == 1 else None,
        detail=(f"{len(records)} instance(s) of {len(studies)} study(ies); " if ok else "")
        + detail,
    )  # fmt: skip
    record(ctx.audit, rec)


def handle_get(event: evt.Event, ctx: HandlerContext) -> Iterator[Any]:
    records = _records(event, ctx)
    _audit(event, ctx, "C-GET", records, "back to the requestor")
    if isinstance(records, Dataset):
        # pynetdicom wants a count before any status: one failed "sub-operation"
        yield 1
        yield records, None
        return
    enable_raw_store(event.assoc, ctx.archive.spool_path)
    yield from _sub_operations(event, ctx, records)


def handle_move(event: evt.Event, ctx: HandlerContext) -> Iterator[Any]:
    destination = (event.move_destination or "").strip()
    peer = ctx.peers.get(destination)
    if peer is None:
        log.info("C-MOVE to unknown destination %r refused", destination)
        refused = status(0xA801, f"unknown move destination {destination}")
        _audit(event, ctx, "C-MOVE", refused, f"to unknown destination {destination}")
        yield None, None  # pynetdicom answers 0xA801 Move Destination unknown
        return
    records = _records(event, ctx)
    _audit(event, ctx, "C-MOVE", records, f"to {destination}")
    originator = event.assoc.requestor.ae_title.strip()

    def on_established(ev: evt.Event) -> None:
        enable_raw_store(ev.assoc, ctx.archive.spool_path, originator)

    # on a failure pynetdicom still associates before it sends the status: propose
    # Verification then, which every SCP accepts
    contexts = contexts_for(records) if isinstance(records, list) else [build_context(Verification)]
    yield (
        peer.host,
        peer.port,
        {
            "contexts": contexts,
            "tls_args": peer_tls_args(ctx.settings, peer),
            "evt_handlers": [
                (evt.EVT_CONN_OPEN, set_nodelay),
                (evt.EVT_ESTABLISHED, on_established),
            ],
        },
    )
    if isinstance(records, Dataset):
        yield 1
        yield records, None
        return
    yield from _sub_operations(event, ctx, records)
