"""C-STORE sub-operations that send the stored bytes, not a re-encoded dataset.

pynetdicom's Q/R service (C-GET, C-MOVE) wants a pydicom Dataset for each
instance and re-encodes it; an archive must send what it stored.  So the
handlers yield an ``Outgoing`` placeholder (a Dataset carrying the stored Part-10
bytes) and the association's ``send_c_store`` is wrapped: for an ``Outgoing`` it
writes the bytes to a spool file and uses pynetdicom's own chunked file sending
(``STORE_SEND_CHUNKED_DATASET``), which sends the dataset bytes after the file
meta as they are.  When the peer accepted no context with the stored transfer
syntax, the instance is transcoded to one it accepted (``vna.dicom.transcode``),
else the sub-operation fails (pynetdicom counts an exception as a failure).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext, build_context

from vna.dicom.transcode import can_transcode, transcode_part10
from vna.dimse.net import MAX_CONTEXTS, UNCOMPRESSED
from vna.index.base import InstanceRecord

log = logging.getLogger(__name__)


class SubOperationFailed(Exception):
    """A C-STORE sub-operation that cannot be attempted (pynetdicom counts it failed)."""


class Outgoing(Dataset):
    """Stands in for one stored instance in pynetdicom's retrieve loop.  It carries
    the UIDs pynetdicom reads (for the failed-instance list) and the stored bytes,
    or why they could not be read."""

    def __init__(self, rec: InstanceRecord, data: bytes | None, error: str = "") -> None:
        super().__init__()
        self.SOPClassUID = rec.sop_class_uid
        self.SOPInstanceUID = rec.sop_instance_uid
        self.vna_record = rec
        self.vna_data = data
        self.vna_error = error


def accepted_syntaxes(assoc: Association, sop_class: str) -> list[str]:
    """Transfer syntaxes the peer accepted for ``sop_class`` with us as the sender."""
    return [
        str(cx.transfer_syntax[0])
        for cx in assoc.accepted_contexts
        if str(cx.abstract_syntax) == sop_class and cx.as_scu
    ]


def choose_syntax(stored: str, accepted: list[str]) -> str:
    """The stored syntax when accepted; else a native one (no lossy step); else
    the first one we can produce."""
    if stored in accepted:
        return stored
    for ts in [*UNCOMPRESSED, *accepted]:
        if ts in accepted and can_transcode(stored, ts):
            return ts
    raise SubOperationFailed(
        f"the peer accepted no transfer syntax vna can send this instance in ({stored})"
    )


def send_outgoing(
    assoc: Association, spool: Callable[[], str], out: Outgoing, **kwargs: Any
) -> Dataset:
    rec = out.vna_record
    if out.vna_data is None:
        raise SubOperationFailed(out.vna_error or "the stored instance could not be read")
    ts = choose_syntax(rec.transfer_syntax_uid, accepted_syntaxes(assoc, rec.sop_class_uid))
    data = out.vna_data
    if ts != rec.transfer_syntax_uid:
        log.info("transcoding %s from %s to %s", rec.sop_instance_uid, rec.transfer_syntax_uid, ts)
        data = transcode_part10(data, ts)  # raises a VnaError when impossible
    path = spool()
    try:
        with open(path, "wb") as fp:
            fp.write(data)
        out.vna_data = None  # the bytes are on disk now; let them go
        return Association.send_c_store(assoc, path, **kwargs)
    finally:
        os.unlink(path)


def enable_raw_store(
    assoc: Association, spool: Callable[[], str], originator: str | None = None
) -> None:
    """Wrap ``assoc.send_c_store`` so ``Outgoing`` placeholders go out as stored.

    ``originator``: the Move Originator AE title (PS3.7 9.1.1.1.9), which is the
    C-MOVE requestor, not this AE as pynetdicom would put."""
    if getattr(assoc, "_vna_raw_store", False):
        return
    original = assoc.send_c_store

    def send_c_store(dataset: Any, *args: Any, **kwargs: Any) -> Dataset:
        if not isinstance(dataset, Outgoing):
            return original(dataset, *args, **kwargs)
        if originator:
            kwargs["originator_aet"] = originator
        return send_outgoing(assoc, spool, dataset, **kwargs)

    assoc.send_c_store = send_c_store  # type: ignore[method-assign]
    assoc._vna_raw_store = True  # type: ignore[attr-defined]


def contexts_for(records: list[InstanceRecord]) -> list[PresentationContext]:
    """Contexts for a C-MOVE association: each (SOP class, stored syntax) on its own,
    so the peer can accept exactly what is stored, then a native fallback per class."""
    exact: dict[tuple[str, str], None] = {}
    classes: dict[str, list[str]] = {}
    for rec in records:
        ts = rec.transfer_syntax_uid
        if ts not in UNCOMPRESSED:
            exact[(rec.sop_class_uid, ts)] = None
        native = classes.setdefault(rec.sop_class_uid, [])
        if ts in UNCOMPRESSED and ts not in native:
            native.append(ts)
    contexts = [
        build_context(cls, [*native, *(t for t in UNCOMPRESSED if t not in native)])
        for cls, native in classes.items()
    ]
    contexts += [build_context(cls, [ts]) for cls, ts in exact]
    if len(contexts) > MAX_CONTEXTS:
        log.warning(
            "C-MOVE needs %d presentation contexts; proposing the first %d",
            len(contexts),
            MAX_CONTEXTS,
        )
    return contexts[:MAX_CONTEXTS]
