"""The metadata index: records and the one interface every backend implements.

SQLite (embedded default) and PostgreSQL sit behind ``Index``; ``make_index(url)``
chooses.  The index never reads blobs: everything QIDO-RS, C-FIND and the
metadata routes need is in the rows, including each instance's DICOM JSON.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from vna.errors import VnaError
from vna.index.security import SecurityIndex

Level = Literal["patient", "study", "series", "instance"]

# One frame's bytes inside the blob: a list of (offset, length) segments.  Native
# frames and single-fragment frames have one segment; a frame split over several
# fragments has one per fragment, concatenated in order.
FrameSegments = list[tuple[int, int]]


class DuplicatePolicy(enum.StrEnum):
    """What to do with different content under an existing SOP Instance UID."""

    KEEP = "keep"  # the original stays current, the new one is kept as superseded
    REJECT = "reject"  # refuse the new one (failure 0x0111)
    REPLACE = "replace"  # the new one becomes current, the original is superseded


class AddOutcome(enum.StrEnum):
    STORED = "stored"  # new SOP instance
    DUPLICATE = "duplicate"  # same identity already stored: nothing changed
    SUPERSEDED = "superseded"  # kept, but the existing version stays current
    REPLACED = "replaced"  # kept and made current; the old one is superseded
    CONFLICT = "conflict"  # refused by the REJECT policy; nothing written


@dataclass(slots=True)
class InstanceRecord:
    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    blob_key: str
    size: int  # bytes of the blob (the Part-10 file as stored)
    sha256: str  # hex digest of the whole blob
    identity: str  # hex SHA-256 of the dataset without the file meta group (0002)
    num_frames: int
    # Where each frame lies in the blob; None when frames cannot be located by
    # offsets (deflated transfer syntax, no pixel data): then frames are decoded.
    frames: list[FrameSegments] | None
    # DICOM JSON (PS3.18 F.2) of the dataset, bulk values replaced by relative
    # BulkDataURIs (see vna.dicom.BULK_PREFIX); names decoded per Specific Character Set.
    metadata: dict[str, Any]
    stored_at: float = 0.0  # epoch seconds
    source: str = ""  # who sent it: "STOW-RS 10.0.0.5", "C-STORE MODALITY1", "import"
    current: bool = True
    site: str | None = None


@dataclass(frozen=True, slots=True)
class BlobCheck:
    """How a store makes sure the blob it is about to index survived any DELETE
    that ran meanwhile.  A DELETE removes the rows, then their blobs, holding the
    index's writers' lock throughout, and counts itself in the deletion epoch:
    odd from when its rows go until their blobs are gone, even again after.  A
    store reads the epoch before writing its blob; when it commits (under the
    same lock, so never while a live DELETE is under way), an epoch that changed
    or was odd sends it to ``exists`` for each of its blobs, and a blob that is
    gone fails its record, unacknowledged, instead of leaving a row pointing at
    nothing.  Odd covers a DELETE whose process died with its blobs half removed
    (the lock is let go, the second count never made): stores check until the
    next DELETE ends."""

    epoch: int
    exists: Callable[[str], bool]  # blocking: called on the index's writer


# runs after the DELETE's commit, under the writers' lock (see BlobCheck)
DeleteBlobs = Callable[[Sequence["InstanceRecord"]], None]


@dataclass(slots=True)
class Query:
    """A QIDO-RS / C-FIND request, already parsed and validated by the edge."""

    level: Level
    # attribute keyword -> match value exactly as received (QIDO string form; for
    # C-FIND, the identifier's value converted to the same string form).  Ranges are
    # "A-B", lists are "\\"-separated, wildcards are * and ?.
    filters: dict[str, str] = field(default_factory=dict)
    fuzzy: bool = False
    limit: int | None = None
    offset: int = 0
    include_all: bool = False
    include: list[str] = field(default_factory=list)  # extra keywords to return
    sites: list[str] | None = None  # None: no tenant restriction


@dataclass(slots=True)
class FindResult:
    items: list[dict[str, Any]]  # DICOM JSON datasets, one per match
    warnings: list[str] = field(default_factory=list)  # e.g. ignored / unindexed keys


class SlideStatus(enum.StrEnum):
    QUEUED = "queued"
    BUILDING = "building"
    READY = "ready"
    FAILED = "failed"


@dataclass(slots=True)
class SlideRecord:
    id: str
    name: str
    source: str  # original file name, or "dicom:SERIES_UID"
    status: SlideStatus = SlideStatus.QUEUED
    progress: float = 0.0  # 0..1 while building
    reason: str = ""  # why it failed
    width: int = 0
    height: int = 0
    levels: int = 0
    tile_size: int = 0
    mpp: float | None = None
    prefix: str = ""  # blob-store prefix of the zarr group
    build_id: str = ""  # changes every rebuild; part of tile ETags
    properties: dict[str, Any] = field(default_factory=dict)
    patient_id: str | None = None
    patient_name: str | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    accession_number: str | None = None
    specimen: str | None = None
    created_at: float = 0.0
    site: str | None = None


class Index(SecurityIndex, Protocol):
    """Also users, API keys, sessions and the audit trail: see vna.index.security."""

    url: str

    async def open(self) -> None:
        """Connect and apply pending schema migrations."""

    async def close(self) -> None: ...

    # -- instances -------------------------------------------------------------
    async def add(
        self,
        rec: InstanceRecord,
        policy: DuplicatePolicy,
        check: BlobCheck | None = None,
        *,
        refresh: bool = False,
    ) -> AddOutcome:
        """Record a stored blob.  Committed (durable) when this returns.
        Concurrent calls may be committed together (group commit).  ``refresh``
        (reindex): a version already indexed from this blob key is derived again
        from ``rec`` (DUPLICATE all the same)."""

    async def add_batch(
        self,
        recs: list[InstanceRecord],
        policy: DuplicatePolicy,
        check: BlobCheck | None = None,
        *,
        refresh: bool = False,
    ) -> list[AddOutcome | VnaError]:
        """``add`` for each record, committed together, each failing alone: the
        answers are the outcomes, or each record's error."""

    async def deletion_epoch(self) -> int:
        """How many deletions of instance rows there have been (see BlobCheck)."""

    async def get(self, sop_instance_uid: str) -> InstanceRecord:
        """The current version; NotFound if absent."""

    async def versions(self, sop_instance_uid: str) -> list[InstanceRecord]:
        """Every version, current first."""

    async def instances(
        self, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None
    ) -> list[InstanceRecord]:
        """Current instances of a study / series / one instance, ordered by series
        then InstanceNumber; [] when nothing matches."""

    async def find(self, query: Query) -> FindResult: ...

    async def delete(
        self,
        study_uid: str,
        series_uid: str | None = None,
        sop_uid: str | None = None,
        *,
        delete_blobs: DeleteBlobs | None = None,
    ) -> list[InstanceRecord]:
        """Remove rows (all versions) and return them.  ``delete_blobs`` is called
        with them once the removal is committed, before any store can commit."""

    def blob_keys(self) -> AsyncIterator[tuple[str, str, int]]:
        """(blob_key, sha256, size) of every version, for fsck."""

    async def drop_dangling(self, keys: list[str], exists: Callable[[str], bool]) -> int:
        """Remove the rows of each blob key ``exists`` says is gone, asked under the
        writers' lock, so that no store of the same dataset commits in between;
        returns how many rows went (reindex: rows no blob backs any more)."""

    # -- slides ----------------------------------------------------------------
    async def put_slide(self, slide: SlideRecord) -> None: ...

    async def get_slide(self, slide_id: str) -> SlideRecord: ...

    async def list_slides(
        self, sites: list[str] | None = None, statuses: list[SlideStatus] | None = None
    ) -> list[SlideRecord]: ...

    async def update_slide(self, slide_id: str, **fields: Any) -> None: ...

    async def delete_slide(self, slide_id: str) -> None: ...

    async def arrivals(
        self, sop_class_uid: str, after: int = 0, limit: int = 5000
    ) -> list[tuple[int, str, str, float]]:
        """(row, study UID, series UID, stored_at) of current instances of one SOP
        class stored after row ``after``, oldest first: what a watcher has not seen."""
        ...
