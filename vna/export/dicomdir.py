"""A DICOMDIR for a set of stored instances, from their index rows alone.

pydicom's ``FileSet`` knows the directory records of every record type (PATIENT,
STUDY, SERIES, IMAGE, RT DOSE, SR DOCUMENT...), their Type 1 keys and the byte
offsets that link them; writing that by hand would duplicate it.  It wants
datasets, so each instance is given a stub: its DICOM JSON from the index (bulk
values dropped), with a file meta naming its SOP class and transfer syntax.
``FileSet.write`` then lays out stubs and DICOMDIR in a scratch directory; only
the DICOMDIR and the File IDs it assigned are kept, and the stubs are deleted.
The ZIP then carries the real files under those File IDs
(``PT000000/ST000000/SE000000/IM000000``: uppercase, at most 8 characters a
component, as PS3.10 8.2 requires).

Synchronous: the caller runs ``build`` in a thread.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.fileset import FileSet

from vna.dicom import IMPLEMENTATION_CLASS_UID
from vna.errors import StorageError
from vna.index.base import InstanceRecord

log = logging.getLogger(__name__)

# Type 1 keys of the PATIENT / STUDY / SERIES / IMAGE records (PS3.3 F.5) that a
# stored instance may lack, or that de-identification empties (Study Date and
# Study ID are Z in the profile): placeholders carrying no information.
_PLACEHOLDERS: dict[str, Any] = {
    "PatientID": "UNKNOWN",
    "StudyDate": "19000101",
    "StudyTime": "000000",
    "StudyID": "0",
    "Modality": "OT",
    "SeriesNumber": "0",
}


@dataclass(slots=True)
class Entry:
    """One instance to list: its row and the DICOM JSON to describe it by
    (de-identified when the export is)."""

    rec: InstanceRecord
    metadata: dict[str, Any]
    file_id: str = ""  # set by build: "PT000000/ST000000/SE000000/IM000000"


@dataclass(slots=True)
class Directory:
    dicomdir: bytes = b""
    listed: list[Entry] = field(default_factory=list)
    unlisted: list[tuple[Entry, str]] = field(default_factory=list)  # and why


def _no_bulk(tag: str, vr: str, uri: str) -> bytes:
    return b""  # the DICOMDIR needs no bulk value: keep the stub small


def stub(entry: Entry, number: int) -> Dataset:
    """The dataset FileSet makes the instance's records from."""
    ds = Dataset.from_json(entry.metadata, bulk_data_uri_handler=_no_bulk)
    for tag in list(ds.keys()):
        if tag.group == 0x7FE0 or tag.is_private:
            del ds[tag]
    for keyword, value in _PLACEHOLDERS.items():
        if not ds.get(keyword):
            setattr(ds, keyword, value)
    if ds.get("InstanceNumber") in (None, ""):
        ds.InstanceNumber = number
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.get("SOPClassUID") or entry.rec.sop_class_uid
    meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID") or entry.rec.sop_instance_uid
    meta.TransferSyntaxUID = entry.rec.transfer_syntax_uid
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    ds.file_meta = meta
    return ds


def _add(fs: FileSet, entry: Entry, number: int) -> str | None:
    """Add the entry's stub; the reason when FileSet cannot describe it."""
    try:
        fs.add(stub(entry, number))
    except (ValueError, KeyError, TypeError, AttributeError, NotImplementedError) as exc:
        # an instance FileSet cannot describe (unknown SOP class, a Type 1 key of
        # its record type missing) still goes in the ZIP, outside the DICOMDIR
        log.info("not in the DICOMDIR: %s: %s", entry.rec.sop_instance_uid, exc)
        return str(exc) or type(exc).__name__
    return None


def build(entries: list[Entry], scratch: str | Path | None = None) -> Directory:
    """The DICOMDIR listing ``entries``; each listed entry gets its File ID."""
    out = Directory()
    fs = FileSet()
    added: list[Entry] = []
    for number, entry in enumerate(entries, 1):
        problem = _add(fs, entry, number)
        if problem:
            out.unlisted.append((entry, problem))
        else:
            added.append(entry)
    if not added:
        return out
    with tempfile.TemporaryDirectory(dir=scratch, prefix="dicomdir-") as tmp:
        try:
            fs.write(tmp)
        except (OSError, ValueError) as exc:
            raise StorageError(f"could not write the DICOMDIR: {exc}") from exc
        out.dicomdir = (Path(tmp) / "DICOMDIR").read_bytes()
    # File IDs are final only once written (write renumbers the records)
    file_ids = {inst.SOPInstanceUID: Path(inst.FileID).as_posix() for inst in fs}
    for entry in added:
        entry.file_id = file_ids[_sop_uid(entry)]
        out.listed.append(entry)
    return out


def _sop_uid(entry: Entry) -> str:
    values = (entry.metadata.get("00080018") or {}).get("Value") or [entry.rec.sop_instance_uid]
    return str(values[0])
