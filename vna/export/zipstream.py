"""A streamed ZIP of DICOM instances with a DICOMDIR: the CD a share replaces.

The ZIP is produced as it is sent: never whole in memory or on disk.  At most
one member's bytes are held at once, and only when the member is small
(``buffer_limit``).  A large member to de-identify has its header read and
rewritten and its pixel data streamed as stored after it; only a deflated one,
or one with elements after its pixel data, is de-identified whole in memory.

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
import struct
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydicom.uid import UID, DeflatedExplicitVRLittleEndian
from stream_zip import NO_COMPRESSION_64, ZipError, async_stream_zip

from vna.errors import IntegrityError
from vna.export.dicomdir import Directory, Entry, build
from vna.index.base import InstanceRecord

if TYPE_CHECKING:
    from vna.archive.service import Archive
    from vna.deid import Deidentifier

log = logging.getLogger(__name__)

BUFFER_LIMIT = 32 << 20  # members up to this size are read once, into memory
HEAD_BYTES = 256 << 10  # first read for the header of a large file to de-identify
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


async def _skip(chunks: AsyncIterator[bytes], n: int) -> AsyncIterator[bytes]:
    """``chunks`` without their first ``n`` bytes."""
    async for chunk in chunks:
        if n >= len(chunk):
            n -= len(chunk)
            continue
        yield chunk[n:] if n else chunk
        n = 0


async def _crc(archive: Archive, chunks: AsyncIterator[bytes], crc: int = 0) -> int:
    async for chunk in chunks:
        crc = await archive.run(zlib.crc32, chunk, crc)
    return crc


async def _then(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
        yield chunk


def _element_end(head: bytes, pos: int, rec: InstanceRecord) -> int | None:
    """Where the Pixel Data element starting at ``pos`` ends; None if unknown."""
    syntax = UID(rec.transfer_syntax_uid)
    order = "<" if syntax.is_little_endian else ">"
    if len(head) < pos + 12:
        return None
    if syntax.is_implicit_VR:
        hdr, length = 8, struct.unpack_from(order + "L", head, pos + 4)[0]
    elif head[pos + 4 : pos + 6] in (b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN"):
        hdr, length = 12, struct.unpack_from(order + "L", head, pos + 8)[0]
    else:
        return None
    if length != 0xFFFFFFFF:
        return pos + hdr + length
    if not rec.frames:  # encapsulated: the last fragment, then the delimiter item
        return None
    return max(off + n for frame in rec.frames for off, n in frame) + 8


async def _deid_header(
    archive: Archive, rec: InstanceRecord, deid: Deidentifier
) -> tuple[bytes, int] | None:
    """The de-identified header of a large file and where its pixel data starts,
    read from its first bytes (as many as it takes), when the pixel data is the
    last element of the file; None otherwise (no pixel data, or elements after it
    that must be de-identified too)."""
    if rec.transfer_syntax_uid == DeflatedExplicitVRLittleEndian:
        return None
    n = HEAD_BYTES
    while True:
        head = await archive.store.get(rec.blob_key, 0, min(n, rec.size))
        found = await archive.run(deid.header, head)
        if found is not None and len(head) >= found[1] + 12:
            return found if _element_end(head, found[1], rec) == rec.size else None
        if n >= rec.size:
            return None
        n *= 4


async def _member(
    archive: Archive, rec: InstanceRecord, deid: Deidentifier | None, buffer_limit: int
) -> tuple[Any, AsyncIterator[bytes]]:
    """The ZIP method and the bytes of one instance."""
    large = rec.size > buffer_limit
    if deid is not None and large:
        found = await _deid_header(archive, rec, deid)
        if found is not None:  # a new header, then the stored pixel data as it is
            header, pos = found
            crc = await _crc(archive, _skip(archive.stream_instance(rec), pos), zlib.crc32(header))
            tail = _skip(archive.stream_instance(rec), pos)
            return NO_COMPRESSION_64(len(header) + rec.size - pos, crc), _then(header, tail)
    if deid is not None:
        data = await archive.read_instance(rec)
        data, method = await archive.run(lambda: _stored(deid.part10(data)))
        return method, _one(data)
    if not large:
        data, method = await archive.run(_stored, await archive.read_instance(rec))
        return method, _one(data)
    crc = await _crc(archive, archive.stream_instance(rec))
    return NO_COMPRESSION_64(rec.size, crc), archive.stream_instance(rec)


async def deidentified_chunks(
    archive: Archive, rec: InstanceRecord, deid: Deidentifier, buffer_limit: int = 32 << 20
) -> AsyncIterator[bytes]:
    """One instance de-identified, as a stream: a large file whose pixel data ends
    it gets a new header followed by its stored pixel data (a whole-slide level is
    never held in memory); others are de-identified whole, in a thread.  Raises
    ``vna.deid.Refused`` (before the first byte) for instances the profile refuses."""
    if rec.size > buffer_limit:
        found = await _deid_header(archive, rec, deid)
        if found is not None:
            header, pos = found
            yield header
            async for chunk in _skip(archive.stream_instance(rec), pos):
                yield chunk
            return
    data = await archive.read_instance(rec)
    yield await archive.run(deid.part10, data)


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
