"""Audit records for DIMSE, into the same trail as HTTP (``vna.audit``).

Handlers run in pynetdicom's threads, so records go through
``AuditTrail.record_threadsafe``.  Who is the calling AE title (kind
``dicom-ae``), from the peer's address; actions use the HTTP vocabulary (store,
query, retrieve) plus ``associate`` for refused associations.  Successful stores
are recorded once per (calling AE, study) per dedupe window, as a STOW-RS
request is once per study; failures always.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable
from typing import Any, Protocol

from pynetdicom.association import Association

from vna.index.security import AuditRecord

log = logging.getLogger(__name__)


class Trail(Protocol):
    def record_threadsafe(self, rec: AuditRecord, dedupe: Hashable | None = None) -> None: ...


def dimse_record(
    assoc: Association, service: str, action: str, outcome: str, status: int, **fields: Any
) -> AuditRecord:
    calling = assoc.requestor.ae_title.strip()
    rec = AuditRecord(
        at=time.time(),
        who=calling,
        who_kind="dicom-ae",
        ip=str(assoc.requestor.address or ""),
        action=action,
        outcome=outcome,
        method=service,
        route=f"DIMSE {assoc.acceptor.ae_title.strip()}",
        status=status,
    )
    for name, value in fields.items():
        setattr(rec, name, value)
    return rec


def record(trail: Trail | None, rec: AuditRecord, dedupe: Hashable | None = None) -> None:
    """Never lets auditing break a DIMSE operation (the trail logs what it loses)."""
    if trail is None:
        return
    try:
        trail.record_threadsafe(rec, dedupe)
    except RuntimeError as exc:  # the trail is stopped (shutdown in progress)
        log.error("audit event not recorded (%s): %s", exc, rec)
