"""Storage SCP (C-STORE): the dataset is archived exactly as it arrived.

pynetdicom, with ``STORE_RECV_CHUNKED_DATASET``, writes the received bytes to a
temporary file as they arrive (a file meta of its own, then the dataset bytes).
The handler writes the Part-10 file into the archive's spool -- vna's file meta,
then those dataset bytes copied untouched -- and archives it from pynetdicom's
own thread (``Archive.store_files_blocking``: no hop through the event loop),
or through ``Archive.store_file`` on backends without a blocking path (S3);
no decode, no re-encode.

Statuses (PS3.4 B.2.3, PS3.7 C):
- 0x0000 once the instance is durable (blob written, index committed).  An
  identical re-send is also 0x0000: the instance *is* stored, which is what a
  retrying SCU needs to hear, and PS3.4 has no warning meaning "already had it"
  (0xB000 means "coercion of data elements", which did not happen).  Different
  content under an existing SOP Instance UID kept as a version is 0x0000 too.
- Failures from the archive's error: 0xA7xx out of resources, 0xC000 cannot
  understand, 0x0111 duplicate refused by the ``reject`` policy, 0x0110 else;
  each with an ErrorComment saying why.
"""

from __future__ import annotations

import logging
import shutil
import struct
from typing import BinaryIO

from pydicom.dataset import Dataset
from pynetdicom import events as evt

from vna.archive.service import StoreResult
from vna.dicom import part10_header
from vna.dimse.audit import dimse_record, record
from vna.dimse.context import HandlerContext, authorize, status
from vna.errors import OUT_OF_RESOURCES, PROCESSING_FAILURE, InvalidDicom, dimse_status

log = logging.getLogger(__name__)
COPY_CHUNK = 1 << 20


def _meta_end(fp: BinaryIO) -> int:
    """Where pynetdicom's file meta ends: it always writes the group length first."""
    head = fp.read(144)
    if len(head) < 144 or head[128:132] != b"DICM" or head[132:136] != b"\x02\x00\x00\x00":
        raise OSError("unexpected temporary file layout")
    return 144 + struct.unpack("<L", head[140:144])[0]


def _spool(ctx: HandlerContext, event: evt.Event, calling: str) -> str:
    """Write the Part-10 file into the archive's spool: vna's file meta (with the
    source AE title), then the received dataset bytes copied untouched."""
    req = event.request
    header = part10_header(
        str(event.context.transfer_syntax),
        str(req.AffectedSOPClassUID),
        str(req.AffectedSOPInstanceUID),
        source_ae=calling,
    )
    spool = ctx.archive.spool_path()
    with open(event.dataset_path, "rb") as src, open(spool, "wb") as dst:
        src.seek(_meta_end(src))
        dst.write(header)
        shutil.copyfileobj(src, dst, COPY_CHUNK)
    return spool


def handle_store(event: evt.Event, ctx: HandlerContext) -> Dataset | int:
    calling = event.assoc.requestor.ae_title.strip()
    peer, refused = authorize(ctx, event, "store")
    if refused is not None:
        log.info("C-STORE from %s refused: %s", calling, refused.ErrorComment)
        return refused
    try:
        path = _spool(ctx, event, calling)
    except InvalidDicom as exc:  # the command's UIDs are not valid UIDs
        return status(dimse_status(exc), str(exc))
    except OSError as exc:
        log.error("C-STORE from %s: cannot spool the dataset: %s", calling, exc)
        return status(OUT_OF_RESOURCES, f"cannot spool the dataset: {exc.strerror or exc}")
    try:
        site = peer.site if peer is not None else None  # the sending peer's site owns it
        result = _archive(ctx, path, f"C-STORE {calling}", site)
    except Exception as exc:  # the loop went away, or a timeout: never a silent success
        log.exception("C-STORE from %s failed", calling)
        return status(PROCESSING_FAILURE, f"archive error: {type(exc).__name__}")
    if not result.ok:
        assert result.error is not None
        code = dimse_status(result.error)
        log.info("C-STORE from %s refused (0x%04X): %s", calling, code, result.error)
        _audit(ctx, event, result, "failure", code, str(result.error))
        return status(code, str(result.error))
    if result.warning:
        log.info("C-STORE %s from %s: %s", result.sop_instance_uid, calling, result.warning)
    _audit(ctx, event, result, "success", 0x0000, result.warning or "")
    return 0x0000


def _archive(ctx: HandlerContext, path: str, source: str, site: str | None) -> StoreResult:
    """Store from this (pynetdicom's) thread when the archive has a blocking path:
    no round trip through the event loop per instance.  Else through the loop."""
    archive = ctx.archive
    if archive.blocking:
        (result,) = archive.store_files_blocking([path], source, None, site)
        return result
    return ctx.bridge(archive.store_file(path, source=source, site=site))


def _audit(
    ctx: HandlerContext, event: evt.Event, result: StoreResult, outcome: str, code: int, why: str
) -> None:
    rec = dimse_record(
        event.assoc, "C-STORE", "store", outcome, code,
        study_uid=result.study_instance_uid or None,
        series_uid=result.series_instance_uid or None,
        sop_uid=result.sop_instance_uid or str(event.request.AffectedSOPInstanceUID),
        detail=why[:1000],
    )  # fmt: skip
    # successes: once per (calling AE, study) per window, as STOW-RS per request
    dedupe = (rec.who, rec.study_uid, "store") if outcome == "success" else None
    record(ctx.audit, rec, dedupe)
