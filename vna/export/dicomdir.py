"""A DICOMDIR for a set of stored instances, from their index rows alone.

The records (PS3.3 F.5) are made from each instance's DICOM JSON, no blob read.
pydicom's ``FileSet`` can write a DICOMDIR, but only by staging a file per
instance and re-scanning its whole list on every add (quadratic: 40 s for 2,000
instances here), so the directory is encoded here with pydicom's encoder and
pydicom's record definitions (``DIRECTORY_RECORDERS``) for the leaf records
other than IMAGE.  The offsets that link the records are byte positions in
the file: records are encoded once to learn their sizes (the offsets are
fixed-size UL values, so setting them changes no size), then the whole file.

File IDs are ``DICOM/PTnnnnnn/STnnnnnn/SEnnnnnn/IMnnnnnn``: uppercase, at most
8 characters a component and 8 components (PS3.10 8.2 / PS3.12).

Synchronous: the caller runs ``build`` in a thread.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, MediaStorageDirectoryStorage, generate_uid

from vna.dicom import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from vna.errors import VnaError
from vna.export import records
from vna.index.base import InstanceRecord

log = logging.getLogger(__name__)

ROOT = "DICOM"
_ITEM_TAG = b"\xfe\xff\x00\xe0"


@dataclass(slots=True)
class Entry:
    """One instance to list: its row and the DICOM JSON to describe it by
    (de-identified when the export is)."""

    rec: InstanceRecord
    metadata: dict[str, Any]
    file_id: str = ""  # set by build: "DICOM/PT000001/ST000001/SE000001/IM000001"


@dataclass(slots=True)
class Directory:
    dicomdir: bytes = b""
    listed: list[Entry] = field(default_factory=list)
    unlisted: list[tuple[Entry, str]] = field(default_factory=list)  # and why


@dataclass(slots=True)
class _Node:
    record: Dataset
    children: dict[str, _Node] = field(default_factory=dict)
    offset: int = 0


def _child(parent: _Node, key: str, make: Any) -> _Node:
    node = parent.children.get(key)
    if node is None:
        node = parent.children[key] = _Node(make())
    return node


def _place(root: _Node, entry: Entry, leaf: Dataset) -> None:
    """Put the entry's records in the tree and give it its File ID."""
    md = entry.metadata
    patient = _child(root, records.patient_key(md), lambda: records.patient(md))
    study = _child(patient, records.study_key(md, entry.rec), lambda: records.study(md, entry.rec))
    series = _child(study, records.series_key(md, entry.rec), lambda: records.series(md, entry.rec))
    number = len(series.children) + 1
    series.children[f"#{number}"] = _Node(leaf)
    indexes = [
        list(root.children).index(records.patient_key(md)) + 1,
        list(patient.children).index(records.study_key(md, entry.rec)) + 1,
        list(study.children).index(records.series_key(md, entry.rec)) + 1,
        number,
    ]
    parts = [ROOT] + [f"{p}{i:06d}" for p, i in zip(("PT", "ST", "SE", "IM"), indexes, strict=True)]
    entry.file_id = "/".join(parts)
    leaf.ReferencedFileID = parts


def build(entries: list[Entry]) -> Directory:
    """The DICOMDIR listing ``entries``; each listed entry gets its File ID."""
    out = Directory()
    root = _Node(Dataset())
    for number, entry in enumerate(entries, 1):
        try:
            leaf = records.leaf(entry.metadata, entry.rec, number)
            _place(root, entry, leaf)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # an instance no leaf record describes (a Type 1 key of its record type
            # missing): it still goes in the ZIP, outside the DICOMDIR
            log.info("not in the DICOMDIR: %s: %s", entry.rec.sop_instance_uid, exc)
            out.unlisted.append((entry, str(exc) or type(exc).__name__))
            continue
        out.listed.append(entry)
    if out.listed:
        out.dicomdir = encode(root)
    return out


def _walk(node: _Node) -> list[_Node]:
    """Depth first, each record before its children, as the records are stored."""
    order = []
    for child in node.children.values():
        order.append(child)
        order.extend(_walk(child))
    return order


def _link(node: _Node) -> None:
    children = list(node.children.values())
    for i, child in enumerate(children):
        nxt = children[i + 1].offset if i + 1 < len(children) else 0
        child.record.OffsetOfTheNextDirectoryRecord = nxt
        lower = next(iter(child.children.values())).offset if child.children else 0
        child.record.OffsetOfReferencedLowerLevelDirectoryEntity = lower
        _link(child)


def _writer() -> DicomBytesIO:
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    return fp


def _head(ds: Dataset) -> DicomBytesIO:
    fp = _writer()
    fp.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(fp, ds.file_meta, enforce_standard=True)
    return fp


def _dicomdir_dataset() -> Dataset:
    ds = Dataset()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MediaStorageDirectoryStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    ds.file_meta = meta
    ds.FileSetID = ""
    ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity = 0
    ds.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity = 0
    ds.FileSetConsistencyFlag = 0
    return ds


def encode(root: _Node) -> bytes:
    ds = _dicomdir_dataset()
    order = _walk(root)
    for node in order:  # the UL offsets are written as 0 first: same sizes
        node.record.OffsetOfTheNextDirectoryRecord = 0
        node.record.OffsetOfReferencedLowerLevelDirectoryEntity = 0
    fp = _head(ds)
    write_dataset(fp, ds[:0x00041220])
    offset = fp.tell() + 12  # the sequence's tag, VR, reserved bytes and length
    for node in order:
        item = _writer()
        write_dataset(item, node.record)
        node.offset = offset
        offset += 8 + item.tell()  # item tag and length, then the record
    _link(root)
    roots = list(root.children.values())
    ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity = roots[0].offset
    ds.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity = roots[-1].offset
    ds.DirectoryRecordSequence = [node.record for node in order]
    fp = _head(ds)
    write_dataset(fp, ds)
    data = fp.getvalue()
    if any(data[n.offset : n.offset + 4] != _ITEM_TAG for n in order):
        raise VnaError("DICOMDIR record offsets do not match the encoding")
    return data
