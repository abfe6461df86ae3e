"""A streamed ZIP of DICOM instances with a DICOMDIR: the CD a share replaces.

The ZIP is produced as it is sent: never whole in memory or on disk.  At most
one member's bytes are held at once, and only when the member is small enough
(``buffer_limit``) or de-identified (the de-identified file is made in memory).

Members are stored, not deflated: DICOM pixel data is mostly compressed
already, deflate would cost the CPU a busy 2-core archive needs elsewhere, and
a stored member is the stored file byte for byte.  ``stream-zip`` writes a
stored member only with its CRC-32 known up front (stored members with a
trailing data descriptor cannot be read by streaming unzippers), so a large
member is read twice: once for its CRC, once to send it.  Every member is
ZIP64, so no size limit applies.

Layout: ``DICOMDIR`` and the files under the File IDs it lists
(``DICOM/PT000001/ST000001/SE000001/IM000001``), ``README.TXT`` when anything was left
out or the export is de-identified, and ``EXTRA/`` for instances the DICOMDIR
cannot describe (they are still the patient's images).
"""

from __future__ import annotations

import logging
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from stream_zip import NO_COMPRESSION_64, ZipError, async_stream_zip

from vna.errors import IntegrityError
from vna.export.dicomdir import Directory, Entry, build
from vna.index.base import InstanceRecord

if TYPE_CHECKING:
    from vna.archive.service import Archive
    from vna.deid import Deidentifier

log = logging.getLogger(__name__)

BUFFER_LIMIT = 32 << 20  # members up to this size are read once, into memory
CHUNK_SIZE = 1 << 20  # ZIP output chunks: fewer thread hops than stream-zip's 64 KiB
# A de-identified ZIP must not tell when the images were stored
_EPOCH = datetime(1980, 1, 1, tzinfo=UTC)
_MODE = 0o100644  # a regular file, readable


class _Plan:
    """What goes in the ZIP, decided from the index rows before a byte is sent."""

    def __init__(self) -> None:
        self.directory = Directory()
        self.refused: list[tuple[InstanceRecord, str]] = []
        self.readme: bytes | None = None

    def make_readme(self, deidentified: bool) -> bytes | None:
        lines = []
        if deidentified:
            lines.append(
                "These images were de-identified following the DICOM PS3.15 Basic "
                "Application Level Confidentiality Profile: names are pseudonyms, "
                "identifying attributes and dates removed or replaced, UIDs remapped."
            )
        if self.refused:
            lines.append(f"{len(self.refused)} instance(s) were left out:")
            for reason, n in sorted(Counter(r for _, r in self.refused).items()):
                lines.append(f"  {n} x {reason}")
        if self.directory.unlisted:
            lines.append(
                f"{len(self.directory.unlisted)} instance(s) are in EXTRA/, "
                "not listed in the DICOMDIR (their kind has no DICOMDIR record)."
            )
        return ("\r\n".join(lines) + "\r\n").encode() if lines else None


def _plan(instances: Sequence[InstanceRecord], deid: Deidentifier | None) -> _Plan:
    """Refusals, de-identified descriptions and the DICOMDIR (sync, in a thread)."""
    plan = _Plan()
    entries = []
    for rec in instances:
        reason = deid.refusal(rec.metadata) if deid else None
        if reason:
            plan.refused.append((rec, reason))
            continue
        metadata = deid.json(rec.metadata) if deid else rec.metadata
        entries.append(Entry(rec, metadata))
    plan.directory = build(entries)
    plan.readme = plan.make_readme(deid is not None)
    return plan


def _stored(data: bytes) -> tuple[bytes, Any]:
    return data, NO_COMPRESSION_64(len(data), zlib.crc32(data))


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _crc(archive: Archive, rec: InstanceRecord) -> int:
    crc = 0
    async for chunk in archive.stream_instance(rec):
        crc = await archive.run(zlib.crc32, chunk, crc)
    return crc


async def _member(
    archive: Archive, rec: InstanceRecord, deid: Deidentifier | None, buffer_limit: int
) -> tuple[Any, AsyncIterator[bytes]]:
    """The ZIP method and the bytes of one instance."""
    if deid is not None:
        data = await archive.read_instance(rec)
        data, method = await archive.run(lambda: _stored(deid.part10(data)))
        return method, _one(data)
    if rec.size <= buffer_limit:
        data, method = await archive.run(_stored, await archive.read_instance(rec))
        return method, _one(data)
    crc = await _crc(archive, rec)
    return NO_COMPRESSION_64(rec.size, crc), archive.stream_instance(rec)


async def _members(
    archive: Archive, plan: _Plan, deid: Deidentifier | None, buffer_limit: int
) -> AsyncIterator[tuple[str, datetime, int, Any, AsyncIterator[bytes]]]:
    now = _EPOCH if deid else datetime.now(UTC)
    for name, data in (("README.TXT", plan.readme), ("DICOMDIR", plan.directory.dicomdir)):
        if data:
            data, method = await archive.run(_stored, data)
            yield name, now, _MODE, method, _one(data)
    directory = plan.directory
    placed = [(e, e.file_id) for e in directory.listed]
    placed += [(e, f"EXTRA/F{i:07d}") for i, (e, _) in enumerate(directory.unlisted, 1)]
    for entry, name in placed:
        rec = entry.rec
        stamp = _EPOCH if deid else datetime.fromtimestamp(rec.stored_at or 0, UTC)
        method, chunks = await _member(archive, rec, deid, buffer_limit)
        yield name, max(stamp, _EPOCH), _MODE, method, chunks


async def dicom_zip(
    archive: Archive,
    instances: Sequence[InstanceRecord],
    deid: Deidentifier | None = None,
    *,
    buffer_limit: int = BUFFER_LIMIT,
) -> AsyncIterator[bytes]:
    """The instances' files as a ZIP with a DICOMDIR, streamed.  With ``deid``,
    every file and the DICOMDIR are de-identified and refused instances left out
    (README.TXT says how many and why).  A blob failing its checksum aborts the
    stream with IntegrityError: the caller must abort the response, not end it."""
    plan = await archive.run(_plan, list(instances), deid)
    members = _members(archive, plan, deid, buffer_limit)
    try:
        async for chunk in async_stream_zip(members, chunk_size=CHUNK_SIZE):
            yield chunk
    except ZipError as exc:  # a size or CRC that changed between two reads
        raise IntegrityError(f"ZIP export failed: {exc}") from exc
