"""Storage Commitment Push Model SCP (PS3.4 J): N-ACTION in, N-EVENT-REPORT out.

The N-ACTION is acknowledged at once; a worker thread then checks every
referenced instance (indexed, SOP class matching, blob intact against its
checksum) and reports.  The report goes on the same association when it is
still open -- after the N-ACTION response has gone out, never before -- else on
a new association to the requesting peer (which must then be a known peer),
where vna takes the SCP role through SCP/SCU role selection (PS3.4 J.3.3.1.2).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role
from pynetdicom import events as evt
from pynetdicom.association import Association
from pynetdicom.sop_class import StorageCommitmentPushModel

from vna.dimse.context import HandlerContext
from vna.dimse.net import NODELAY_HANDLERS, peer_tls_args
from vna.errors import NotFound, VnaError

log = logging.getLogger(__name__)

STORAGE_COMMITMENT = str(StorageCommitmentPushModel)
WELL_KNOWN_INSTANCE = "1.2.840.10008.1.20.1.1"
NO_SUCH_OBJECT_INSTANCE = 0x0112
PROCESSING_FAILURE = 0x0110
CLASS_INSTANCE_CONFLICT = 0x0119
NO_SUCH_ACTION = 0x0123
MISSING_ATTRIBUTE = 0x0120
EVENT_ALL_COMMITTED, EVENT_FAILURES = 1, 2


@dataclass(slots=True)
class Request:
    transaction_uid: str
    references: list[tuple[str, str]]  # (SOP class, SOP instance)
    calling_ae: str
    response_sent: threading.Event = field(default_factory=threading.Event)


def parse_action(info: Dataset | None) -> tuple[str, list[tuple[str, str]]]:
    if info is None or "TransactionUID" not in info or "ReferencedSOPSequence" not in info:
        raise ValueError("TransactionUID and ReferencedSOPSequence are required")
    refs = [
        (str(item.ReferencedSOPClassUID), str(item.ReferencedSOPInstanceUID))
        for item in info.ReferencedSOPSequence
    ]
    return str(info.TransactionUID), refs


def handle_action(event: evt.Event, ctx: HandlerContext) -> tuple[int, Dataset | None]:
    if event.request.ActionTypeID != 1:
        return NO_SUCH_ACTION, None
    try:
        transaction, refs = parse_action(event.action_information)
    except Exception as exc:  # missing or undecodable attributes
        log.info("storage commitment request refused: %s", exc)
        return MISSING_ATTRIBUTE, None
    req = Request(transaction, refs, event.assoc.requestor.ae_title.strip())
    pending = _pending(event.assoc)
    pending[int(event.request.MessageID)] = req.response_sent
    ctx.workers.submit(_report, ctx, event.assoc, req)
    return 0x0000, None


def _pending(assoc: Association) -> dict[int, threading.Event]:
    if not hasattr(assoc, "_vna_pending_actions"):
        assoc._vna_pending_actions = {}  # type: ignore[attr-defined]
    return assoc._vna_pending_actions  # type: ignore[attr-defined]


def on_dimse_sent(event: evt.Event) -> None:
    """EVT_DIMSE_SENT: note that an N-ACTION response went out (so the report may follow)."""
    msg = event.message
    if type(msg).__name__ != "N_ACTION_RSP":
        return
    sent = _pending(event.assoc).pop(int(msg.command_set.MessageIDBeingRespondedTo), None)
    if sent is not None:
        sent.set()


def failure_reason(ctx: HandlerContext, sop_class: str, sop_uid: str) -> int | None:
    """None when the instance is safely stored, else the FailureReason."""
    if ctx.bridge(ctx.archive.verify(sop_uid, sop_class)):
        return None
    try:
        rec = ctx.bridge(ctx.archive.index.get(sop_uid))
    except NotFound:
        return NO_SUCH_OBJECT_INSTANCE
    return CLASS_INSTANCE_CONFLICT if rec.sop_class_uid != sop_class else PROCESSING_FAILURE


def build_report(ctx: HandlerContext, req: Request) -> tuple[int, Dataset]:
    ds = Dataset()
    ds.TransactionUID = req.transaction_uid
    ok, failed = [], []
    for sop_class, sop_uid in req.references:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_uid
        try:
            reason = failure_reason(ctx, sop_class, sop_uid)
        except (VnaError, TimeoutError, RuntimeError) as exc:
            log.error("storage commitment check of %s failed: %s", sop_uid, exc)
            reason = PROCESSING_FAILURE
        if reason is None:
            item.RetrieveAETitle = ctx.settings.ae_title
            ok.append(item)
        else:
            item.FailureReason = reason
            failed.append(item)
    if ok:
        ds.ReferencedSOPSequence = ok
    if failed:
        ds.FailedSOPSequence = failed
    return (EVENT_FAILURES if failed else EVENT_ALL_COMMITTED), ds


def _send(assoc: Association, event_type: int, ds: Dataset) -> bool:
    status, _ = assoc.send_n_event_report(ds, event_type, STORAGE_COMMITMENT, WELL_KNOWN_INSTANCE)
    return "Status" in status  # empty: no response (timeout, abort)


def _report(ctx: HandlerContext, assoc: Association, req: Request) -> None:
    try:
        event_type, ds = build_report(ctx, req)
        # the N-ACTION response must precede the report on the wire: wait until
        # pynetdicom has handed it over, then a moment for its PDU to be queued
        if req.response_sent.wait(30):
            time.sleep(0.05)
            if assoc.is_established:
                try:
                    if _send(assoc, event_type, ds):
                        return
                except Exception as exc:  # released meanwhile, no context...
                    log.info("report on the same association failed (%s); opening one", exc)
        _send_new_association(ctx, req, event_type, ds)
    except Exception:
        log.exception("storage commitment report for %s failed", req.transaction_uid)


def _send_new_association(ctx: HandlerContext, req: Request, event_type: int, ds: Dataset) -> None:
    peer = ctx.peers.get(req.calling_ae)
    if peer is None:
        log.error(
            "storage commitment %s: %s left and is not a known peer; cannot report",
            req.transaction_uid,
            req.calling_ae,
        )
        return
    ae = AE(ae_title=ctx.settings.ae_title)
    ae.add_requested_context(STORAGE_COMMITMENT)
    role = build_role(STORAGE_COMMITMENT, scp_role=True)  # we invoke N-EVENT-REPORT as SCP
    assoc = ae.associate(
        peer.host,
        peer.port,
        ae_title=peer.ae_title,
        ext_neg=[role],
        evt_handlers=NODELAY_HANDLERS,
        tls_args=peer_tls_args(ctx.settings, peer),
    )
    if not assoc.is_established:
        log.error(
            "storage commitment %s: cannot associate with %s", req.transaction_uid, peer.ae_title
        )
        return
    try:
        if not _send(assoc, event_type, ds):
            log.error(
                "storage commitment %s: %s did not answer the report",
                req.transaction_uid,
                peer.ae_title,
            )
    finally:
        assoc.release()
