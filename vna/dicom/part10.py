"""Build Part-10 files around received datasets, and read bulk values back.

``part10_header`` / ``write_part10_from_dataset_bytes`` wrap a dataset received
over DIMSE (already encoded in ``ts_uid``) in a preamble and file meta group
without re-encoding it, so the stored dataset bytes -- and therefore the
instance's identity hash -- are exactly what the sender sent.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from vna import __version__
from vna.dicom.metadata import BULK_PREFIX
from vna.dicom.parse import check_uid
from vna.dicom.walk import (
    DEFLATED,
    EXPLICIT_BE,
    IMPLICIT_LE,
    Walker,
    detect_implicit,
    read_file_meta,
)
from vna.errors import InvalidDicom, NotFound

# A fixed UUID-derived root (PS3.5 B.2) identifying this implementation.
IMPLEMENTATION_CLASS_UID = "2.25.200312740593941245843457451322164170117"
IMPLEMENTATION_VERSION_NAME = ("VNA_" + __version__.replace(".", "_"))[:16]


def _element(tag: int, vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:  # every value has even length; UIs pad with NUL, others space
        value += b"\0" if vr in (b"UI", b"OB") else b" "
    g, e = tag >> 16, tag & 0xFFFF
    if vr == b"OB":
        return struct.pack("<HH2s2xL", g, e, vr, len(value)) + value
    return struct.pack("<HH2sH", g, e, vr, len(value)) + value


def part10_header(
    ts_uid: str, sop_class_uid: str, sop_instance_uid: str, source_ae: str = ""
) -> bytes:
    """Preamble, 'DICM' and a file meta group (with its group length) for a dataset."""
    for name, value in (("TransferSyntaxUID", ts_uid), ("SOPClassUID", sop_class_uid)):
        check_uid(name, value)
    check_uid("SOPInstanceUID", sop_instance_uid)
    body = b"".join(
        [
            _element(0x00020001, b"OB", b"\x00\x01"),
            _element(0x00020002, b"UI", sop_class_uid.encode()),
            _element(0x00020003, b"UI", sop_instance_uid.encode()),
            _element(0x00020010, b"UI", ts_uid.encode()),
            _element(0x00020012, b"UI", IMPLEMENTATION_CLASS_UID.encode()),
            _element(0x00020013, b"SH", IMPLEMENTATION_VERSION_NAME.encode()),
        ]
        + (
            [_element(0x00020016, b"AE", source_ae.strip()[:16].encode())]
            if source_ae.strip()
            else []
        )
    )
    group_length = struct.pack("<HH2sHL", 0x0002, 0x0000, b"UL", 4, len(body))
    return b"\0" * 128 + b"DICM" + group_length + body


def write_part10_from_dataset_bytes(
    dataset_bytes: bytes,
    ts_uid: str,
    sop_class_uid: str,
    sop_instance_uid: str,
    out_path: str | Path,
    source_ae: str = "",
) -> int:
    """Write a Part-10 file around ``dataset_bytes`` (encoded in ``ts_uid``) and
    return the file size.  The bytes are written as received."""
    header = part10_header(ts_uid, sop_class_uid, sop_instance_uid, source_ae)
    with open(out_path, "wb") as fp:
        fp.write(header)
        fp.write(dataset_bytes)
    return len(header) + len(dataset_bytes)


# -- bulk data ------------------------------------------------------------------


def _parse_suffix(uri_suffix: str) -> list[str]:
    path = uri_suffix.strip("/")
    path = path.removeprefix(BULK_PREFIX.strip("/")).strip("/")
    parts = path.split("/") if path else []
    ok = len(parts) % 2 == 1 and all(
        (len(p) == 8 and all(c in "0123456789abcdefABCDEF" for c in p))
        if i % 2 == 0
        else p.isdigit()
        for i, p in enumerate(parts)
    )
    if not ok:
        raise NotFound(f"no bulk data at {uri_suffix!r}")
    return parts


def bulk_location(path: str | Path, uri_suffix: str) -> tuple[int, int] | None:
    """(offset, length) of a top-level bulk value in the file, to stream it with a
    ranged read; None for nested values or deflated files (use ``read_bulk``)."""
    parts = _parse_suffix(uri_suffix)
    if len(parts) != 1:
        return None
    tag = int(parts[0], 16)
    try:
        with open(path, "rb") as fp:
            size = fp.seek(0, 2)
            meta, meta_end = read_file_meta(fp, size)
            ts = meta.get(0x00020010, b"").decode("ascii", "replace").strip("\0 ")
            if ts in DEFLATED:
                return None
            implicit = detect_implicit(fp, meta_end, size, ts == IMPLICIT_LE)
            elements, _ = Walker(fp, size, implicit=implicit, little=ts != EXPLICIT_BE).elements(
                meta_end
            )
    except OSError as exc:
        raise InvalidDicom(f"cannot read the stored instance: {exc}") from None
    for el in elements:
        if el.tag == tag:
            return el.offset, el.length
    raise NotFound(f"no element {parts[0]} in the instance")


def read_bulk(path: str | Path, uri_suffix: str) -> bytes:
    """The value bytes of the element a BulkDataURI suffix names ("bulk/7FE00010",
    "bulk/00540016/0/00181234"; the "bulk/" prefix is optional).  For encapsulated
    pixel data this is the whole encapsulated value (items included)."""
    found = bulk_location(path, uri_suffix)
    if found is not None:
        with open(path, "rb") as fp:
            fp.seek(found[0])
            return fp.read(found[1])
    parts = _parse_suffix(uri_suffix)
    try:
        ds: Dataset = pydicom.dcmread(str(path), force=True)
        for i in range(0, len(parts) - 1, 2):
            ds = ds[int(parts[i], 16)].value[int(parts[i + 1])]
        value = ds[int(parts[-1], 16)].value
    except (KeyError, IndexError, TypeError, AttributeError):
        raise NotFound(f"no bulk data at {uri_suffix!r}") from None
    except Exception as exc:  # noqa: BLE001 -- pydicom read errors
        raise InvalidDicom(f"cannot read bulk data: {exc}") from None
    if not isinstance(value, bytes):
        raise NotFound(f"{uri_suffix!r} is not a bulk value")
    return value


def dataset_bytes(path: str | Path) -> tuple[bytes, str]:
    """The raw dataset bytes after the file meta group, and the transfer syntax
    (what a DIMSE C-STORE sub-operation sends)."""
    try:
        with open(path, "rb") as fp:
            size = os.fstat(fp.fileno()).st_size
            meta, meta_end = read_file_meta(fp, size)
            fp.seek(meta_end)
            data = fp.read()
    except OSError as exc:
        raise InvalidDicom(f"cannot read the stored instance: {exc}") from None
    return data, meta.get(0x00020010, b"").decode("ascii", "replace").strip("\0 ")
