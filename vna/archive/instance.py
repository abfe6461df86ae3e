"""One instance offered for storage: its result, its blob key, and the spool
file checks shared by the per-instance and the batched store paths."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from dataclasses import dataclass

from vna.dicom import ParsedInstance, parse_part10
from vna.errors import VnaError
from vna.index.base import AddOutcome

BLOB_PREFIX = "dicom/"
# the identity a blob key names: {sop}.{identity}.dcm, or {sop}/{identity}.dcm (older)
_KEY_IDENTITY = re.compile(r"[./]([0-9a-f]{64})\.dcm$")


@dataclass(slots=True)
class StoreResult:
    """What happened to one instance offered for storage."""

    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    outcome: AddOutcome | None = None
    error: VnaError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def warning(self) -> str | None:
        if self.outcome is AddOutcome.DUPLICATE:
            return "duplicate: the same instance is already stored"
        if self.outcome is AddOutcome.SUPERSEDED:
            return (
                "different content under an existing SOP Instance UID: kept as a superseded version"
            )
        if self.outcome is AddOutcome.REPLACED:
            return (
                "different content under an existing SOP Instance UID: replaced the current version"
            )
        return None


def blob_key(parsed: ParsedInstance) -> str:
    """Content-addressed per instance, so versions sit side by side and a retry
    of the same bytes lands on the same key.

    The versions of an instance share its series' folder (``{sop}.{identity}.dcm``),
    not a folder of their own: a folder per instance doubled the inodes created per
    store and took a 4 KiB block beside every small instance.  Archives written with
    the older ``{sop}/{identity}.dcm`` keys keep working: each row names its key."""
    return (
        f"{BLOB_PREFIX}{parsed.study_instance_uid}/{parsed.series_instance_uid}/"
        f"{parsed.sop_instance_uid}.{parsed.identity}.dcm"
    )


def key_identity(key: str) -> str | None:
    """The dataset identity a blob key names (None for a key of another form).
    A blob that does not hash to it was damaged, or cut short by a crash."""
    found = _KEY_IDENTITY.search(key)
    return found.group(1) if found else None


def prepare_file(path: str) -> ParsedInstance:
    """Parse a spooled file, giving it the Part-10 preamble first if it lacks one."""
    add_missing_preamble(path)
    return parse_part10(path)


def add_missing_preamble(path: str) -> None:
    """Give a file that starts straight with its file meta group (what pydicom, and
    so dicomweb-client, writes for a dataset without a preamble) the 128-byte
    preamble and 'DICM' prefix, so every stored blob is a Part-10 file any reader
    opens.  The dataset bytes are untouched: only the receiver's header changes."""
    with open(path, "rb") as f:
        head = f.read(132)
    if head[128:132] == b"DICM" or head[:2] != b"\x02\x00":
        return  # already Part-10, or not DICOM at all: the parser will say which
    fixed = path + ".p10"
    with open(path, "rb") as src, open(fixed, "wb") as dst:
        dst.write(b"\0" * 128 + b"DICM")
        shutil.copyfileobj(src, dst, 1 << 20)
    os.replace(fixed, path)


def unlink_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
