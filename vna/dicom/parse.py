"""Parse a stored Part-10 instance: identity, checksums, frame map, DICOM JSON.

``parse_part10`` is synchronous (the archive runs it in a thread) and reads large
values never: the structural walker (``vna.dicom.walk``) maps and checks the file,
and the small values before the pixel data become DICOM JSON straight from the
bytes (``vna.dicom.fastjson``), or, for what that decoder declines (escape
sequences, big endian, ambiguous implicit VRs...), through pydicom (``defer_size``,
``stop_before_pixels``); both give the same result (tests/test_dicom_fastjson.py,
``parse_part10_pydicom``).  Every failure is an ``InvalidDicom`` with a message a
human can act on.
"""

from __future__ import annotations

import hashlib
import io
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import pydicom
from pydicom.dataset import Dataset

from vna.dicom import frames as _frames
from vna.dicom.fastjson import PIXEL_TAGS, FastDecoder, Unsupported
from vna.dicom.metadata import (
    BULK_PREFIX,
    BULK_THRESHOLD,
    dataset_json,
    dataset_json_fast,
    pixel_json,
)
from vna.dicom.walk import (
    DEFLATED,
    EXPLICIT_BE,
    IMPLICIT_LE,
    Element,
    Walker,
    detect_implicit,
    read_file_meta,
)
from vna.errors import InvalidDicom
from vna.index.base import FrameSegments, InstanceRecord

_T = TypeVar("_T")
_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_CHUNK = 1 << 20
MAX_INFLATED = 256 << 20  # deflated datasets are inflated in memory
DEFER_SIZE = 1024  # values above this stay on disk while parsing
FAST_LIMIT = 8 << 20  # the fast path reads the dataset before the pixels into memory
HEAD_BYTES = 1 << 20  # read at once: all of a small instance, the headers of a big one
NATIVE_TS = frozenset({IMPLICIT_LE, "1.2.840.10008.1.2.1"})
REQUIRED_UIDS = ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID")


def valid_uid(value: str) -> bool:
    """A UID per PS3.5 9.1: at most 64 characters, digits separated by single dots."""
    return 0 < len(value) <= 64 and _UID_RE.match(value) is not None


def check_uid(name: str, value: object) -> str:
    """``value`` as a str UID, or InvalidDicom naming the attribute."""
    text = str(value).strip("\0 ") if value is not None else ""
    if not text:
        raise InvalidDicom(f"{name} is missing or empty")
    if not valid_uid(text):
        raise InvalidDicom(
            f"{name} {text[:80]!r} is not a valid UID (at most 64 digits and single dots)"
        )
    return text


@dataclass(slots=True)
class ParsedInstance:
    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    size: int
    sha256: str
    identity: str
    meta_end: int
    num_frames: int
    frames: list[FrameSegments] | None
    metadata: dict[str, Any]

    def to_record(self, blob_key: str, **extra: Any) -> InstanceRecord:
        """The index record for this instance stored under ``blob_key``."""
        return InstanceRecord(
            sop_instance_uid=self.sop_instance_uid,
            sop_class_uid=self.sop_class_uid,
            study_instance_uid=self.study_instance_uid,
            series_instance_uid=self.series_instance_uid,
            transfer_syntax_uid=self.transfer_syntax_uid,
            blob_key=blob_key,
            size=self.size,
            sha256=self.sha256,
            identity=self.identity,
            num_frames=self.num_frames,
            frames=self.frames,
            metadata=self.metadata,
            **extra,
        )


def _hashes(fp: BinaryIO, meta_end: int, head: bytes, size: int) -> tuple[str, str]:
    """SHA-256 of the whole file and of the dataset after the file meta group."""
    if len(head) == size:  # the whole file is in memory already
        view = memoryview(head)
        return hashlib.sha256(view).hexdigest(), hashlib.sha256(view[meta_end:]).hexdigest()
    whole, identity = hashlib.sha256(), hashlib.sha256()
    fp.seek(0)
    head = fp.read(meta_end)
    whole.update(head)
    while chunk := fp.read(_CHUNK):
        whole.update(chunk)
        identity.update(chunk)
    return whole.hexdigest(), identity.hexdigest()


def _inflate(fp: BinaryIO, meta_end: int) -> bytes:
    fp.seek(meta_end)
    try:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        # bounded, so a small hostile file cannot inflate into all of memory
        data = inflater.decompress(fp.read(), MAX_INFLATED)
    except zlib.error as exc:
        raise InvalidDicom(f"deflated dataset cannot be inflated: {exc}") from None
    if inflater.unconsumed_tail:
        raise InvalidDicom(f"deflated dataset inflates beyond {MAX_INFLATED >> 20} MiB")
    if not inflater.eof:
        raise InvalidDicom("truncated file: the deflated dataset ends before its end marker")
    return data


def _walker(
    fp: BinaryIO, size: int, meta_end: int, ts: str, head: bytes
) -> tuple[Walker, int, bytes | None]:
    """The walker over the dataset and the offset it starts at; a deflated dataset
    is inflated (and walked in memory)."""
    inflated = None
    if ts in DEFLATED:
        inflated = _inflate(fp, meta_end)
        fp, size, meta_end, head = io.BytesIO(inflated), len(inflated), 0, inflated
    implicit = detect_implicit(fp, meta_end, size, ts == IMPLICIT_LE, head)
    walker = Walker(fp, size, implicit=implicit, little=ts != EXPLICIT_BE, head=head)
    return walker, meta_end, inflated


def _decode_head(walker: Walker, start: int) -> tuple[dict[str, Any], list[Element]]:
    """DICOM JSON and the element map in one pass over the bytes in memory: the fast
    decoder maps the elements before the pixel data (checking them at least as
    strictly as the walker), the walker the rest.  Unsupported otherwise."""
    if not walker.little:
        raise Unsupported("big endian")
    decoder = FastDecoder(walker.head, walker.implicit, BULK_THRESHOLD, BULK_PREFIX)
    metadata = decoder.top(start)
    if not decoder.at_pixels and len(walker.head) < walker.size:
        raise Unsupported("the dataset goes on beyond the bytes read")
    rest, _ = walker.elements(decoder.stop) if decoder.at_pixels else ([], 0)
    return metadata, decoder.elements + rest


def _read_values(source: str | BinaryIO, deflated: bool) -> Dataset:
    """The dataset's values up to the pixel data, large ones left on disk (from a
    path) or in the caller's memory (from a file object)."""
    if not isinstance(source, str):
        source.seek(0)
    try:
        return pydicom.dcmread(
            source,
            defer_size=None if deflated else DEFER_SIZE,
            stop_before_pixels=True,
            force=True,
        )
    except Exception as exc:  # noqa: BLE001 -- pydicom raises many types
        raise InvalidDicom(f"unreadable DICOM dataset: {exc}") from None


# keyword -> (JSON key, VR) of the values parse needs besides the JSON
_TAGS = {
    "SOPInstanceUID": ("00080018", "UI"),
    "SOPClassUID": ("00080016", "UI"),
    "StudyInstanceUID": ("0020000D", "UI"),
    "SeriesInstanceUID": ("0020000E", "UI"),
    "SamplesPerPixel": ("00280002", "US"),
    "PhotometricInterpretation": ("00280004", "CS"),
    "NumberOfFrames": ("00280008", "IS"),
    "Rows": ("00280010", "US"),
    "Columns": ("00280011", "US"),
    "BitsAllocated": ("00280100", "US"),
}
_MULTIPLE = object()  # a value of VM > 1 (pydicom: a MultiValue)


class _Values:
    """The dataset's small values, from pydicom or from the fast JSON, read the way
    the pydicom path always read them (``ds.get``)."""

    def __init__(self, ds: Dataset | None = None, fast: dict[str, Any] | None = None) -> None:
        self.ds, self.fast = ds, fast
        if fast is not None:
            for keyword, (key, vr) in _TAGS.items():
                found = fast.get(key)
                if found is not None and found["vr"] != vr:
                    raise Unsupported(f"{keyword} encoded as {found['vr']}")
            if any(self._fast_get(k) is _MULTIPLE for k in REQUIRED_UIDS):
                # the error would quote pydicom's MultiValue repr: let pydicom answer
                raise Unsupported("multi-valued identifying UID")

    def _fast_get(self, keyword: str) -> object:
        found = self.fast.get(_TAGS[keyword][0]) if self.fast is not None else None
        if found is None:
            return None
        value = found.get("Value")
        if not value:
            return ""
        return value[0] if len(value) == 1 else _MULTIPLE

    def get(self, keyword: str) -> object:
        if self.ds is not None:
            return self.ds.get(keyword)
        return self._fast_get(keyword)

    def int(self, keyword: str, default: int) -> int:
        try:
            value = self.get(keyword)
            return int(value) if value not in (None, "") else default  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return default

    def text(self, keyword: str) -> str:
        value = self.get(keyword)
        if value is _MULTIPLE:
            return "[...]"  # like str(MultiValue): never a photometric name
        return str(value) if value is not None else ""

    def metadata(self) -> dict[str, Any]:
        if self.fast is not None:
            return self.fast
        try:
            return dataset_json(self.ds)
        except Exception as exc:  # noqa: BLE001 -- pydicom conversion errors
            raise InvalidDicom(f"cannot convert the dataset to DICOM JSON: {exc}") from None


def _frame_map(
    fp: BinaryIO, walker: Walker, top: dict[int, Element], values: _Values, ts: str
) -> tuple[int, list[FrameSegments] | None]:
    pixel = top.get(0x7FE00010)
    if pixel is None:
        return 0, None
    n = max(1, values.int("NumberOfFrames", 1))
    if ts in DEFLATED:
        return n, None
    if pixel.undefined:
        bot, frags = _frames.fragments(walker, pixel)
        eot = None
        if (el := top.get(0x7FE00001)) is not None and not el.undefined:
            fp.seek(el.offset)
            eot = fp.read(el.length)
        return n, _frames.encapsulated_frames(fp, bot, frags, n, eot)
    if ts == EXPLICIT_BE:  # raw bytes would be big-endian: serve decoded frames
        return n, None
    if ts not in NATIVE_TS:  # a compressed syntax with a native-looking value: unusable
        return n, None
    rows, cols, samples, bits = (
        values.int(k, 0) for k in ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated")
    )
    photometric = values.text("PhotometricInterpretation")
    if photometric.startswith("YBR_") and "422" in photometric:
        samples = 2  # native 4:2:2 stores two samples per pixel (PS3.5 8.2.1)
    return n, _frames.native_frames(pixel, n, rows, cols, samples, bits)


def _fast_values(
    fp: BinaryIO, walker: Walker, elements: list[Element], meta_end: int, inflated: bytes | None
) -> _Values:
    """The values decoded from the bytes before the pixel data (no pydicom), or
    Unsupported."""
    if not walker.little:
        raise Unsupported("big endian")
    start = 0 if inflated is not None else meta_end
    end = next((el.header for el in elements if el.tag in PIXEL_TAGS), walker.size)
    if end - start > FAST_LIMIT:
        raise Unsupported("large dataset: pydicom leaves big values on disk")
    if inflated is not None:
        buf = inflated[:end]
    elif end <= len(walker.head):
        buf = walker.head[start:end]
    else:
        fp.seek(start)
        buf = fp.read(end - start)
    return _Values(fast=dataset_json_fast(buf, walker.implicit))


@dataclass(slots=True)
class _Mapped:
    ts: str
    meta_end: int
    head: bytes  # the first HEAD_BYTES of the file (all of a small one)
    walker: Walker
    top: dict[int, Element]
    values: _Values


def _map(fp: BinaryIO, path: str | None, size: int, fast: bool = True) -> _Mapped:
    """Read the file meta, walk and check the dataset, decode its small values
    (from the bytes when the fast decoder can, else with pydicom)."""
    fp.seek(0)
    head = fp.read(min(size, HEAD_BYTES))  # one read: headers, values, hashes
    meta, meta_end = read_file_meta(fp, size, head)
    if 0x00020010 not in meta:
        raise InvalidDicom("the file meta group has no TransferSyntaxUID (0002,0010)")
    ts = check_uid("TransferSyntaxUID", meta[0x00020010].decode("ascii", "replace"))
    walker, start, inflated = _walker(fp, size, meta_end, ts, head)
    values: _Values | None = None
    elements: list[Element] | None = None
    if fast:
        try:
            metadata, elements = _decode_head(walker, start)
            values = _Values(fast=metadata)
        except Unsupported:
            pass
    if elements is None:
        elements, _ = walker.elements(start)
    if values is None:
        try:
            if not fast:
                raise Unsupported("pydicom asked for")
            values = _fast_values(fp, walker, elements, meta_end, inflated)
        except Unsupported:
            values = _Values(ds=_read_values(fp if path is None else path, ts in DEFLATED))
    return _Mapped(ts, meta_end, head, walker, {el.tag: el for el in elements}, values)


def _parse_open(fp: BinaryIO, path: str | None, size: int, fast: bool = True) -> ParsedInstance:
    m = _map(fp, path, size, fast)
    uids = {name: check_uid(name, m.values.get(name)) for name in REQUIRED_UIDS}
    num_frames, frame_map = _frame_map(fp, m.walker, m.top, m.values, m.ts)
    metadata = m.values.metadata()
    top = m.top
    if (pixel := top.get(0x7FE00010) or top.get(0x7FE00008) or top.get(0x7FE00009)) is not None:
        metadata[f"{pixel.tag:08X}"] = pixel_json(
            pixel, m.walker.implicit, m.values.int("BitsAllocated", 16)
        )
    whole, identity = _hashes(fp, m.meta_end, m.head, size)
    return ParsedInstance(
        sop_instance_uid=uids["SOPInstanceUID"],
        sop_class_uid=uids["SOPClassUID"],
        study_instance_uid=uids["StudyInstanceUID"],
        series_instance_uid=uids["SeriesInstanceUID"],
        transfer_syntax_uid=m.ts,
        size=size,
        sha256=whole,
        identity=identity,
        meta_end=m.meta_end,
        num_frames=num_frames,
        frames=frame_map,
        metadata=metadata,
    )


def parse_part10(path: str | Path) -> ParsedInstance:
    """Parse the Part-10 file at ``path``; InvalidDicom when it is not a complete,
    readable instance with valid identifying UIDs."""
    return _guarded(path, _parse_open)


def parse_part10_pydicom(path: str | Path) -> ParsedInstance:
    """``parse_part10`` with every value decoded by pydicom: the reference the fast
    decoder is tested against (and a way to rule it out when in doubt)."""
    return _guarded(path, lambda fp, p, size: _parse_open(fp, p, size, fast=False))


def fast_path_reason(path: str | Path) -> str | None:
    """None when ``parse_part10`` decodes this file without pydicom, else why not
    (for tests and for finding out why an ingest is slow)."""

    def reason(fp: BinaryIO, p: str, size: int) -> str | None:
        head = fp.read(min(size, HEAD_BYTES))
        meta, meta_end = read_file_meta(fp, size, head)
        ts = check_uid("TransferSyntaxUID", meta.get(0x00020010, b"").decode("ascii", "replace"))
        walker, start, inflated = _walker(fp, size, meta_end, ts, head)
        try:  # the one-pass decoder, else walker + decoder (as _map tries them)
            _Values(fast=_decode_head(walker, start)[0])
            return None
        except Unsupported:
            pass
        elements, _ = walker.elements(start)
        try:
            _fast_values(fp, walker, elements, meta_end, inflated)
        except Unsupported as exc:
            return str(exc)
        return None

    return _guarded(path, reason)


def _locate(fp: BinaryIO, path: str, size: int) -> tuple[str, int, list[FrameSegments] | None]:
    m = _map(fp, path, size)
    return (m.ts, *_frame_map(fp, m.walker, m.top, m.values, m.ts))


def locate_frames(path: str | Path) -> tuple[str, int, list[FrameSegments] | None]:
    """(transfer syntax, number of frames, frame segments or None) of a stored file,
    without the JSON and hashing work of ``parse_part10``."""
    return _guarded(path, _locate)


def parse_part10_bytes(data: bytes) -> ParsedInstance:
    """``parse_part10`` of a Part-10 file held in memory (what a store has just
    received and spooled, parsed without reading the spool file back)."""
    try:
        return _parse_open(io.BytesIO(data), None, len(data))
    except (InvalidDicom, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 -- never let a library error escape
        raise InvalidDicom(f"unreadable DICOM: {type(exc).__name__}: {exc}") from None


def _guarded(path: str | Path, work: Callable[[BinaryIO, str, int], _T]) -> _T:
    """Run ``work`` on the open file; every failure becomes InvalidDicom."""
    path = str(path)
    try:
        with open(path, "rb") as fp:
            size = fp.seek(0, 2)
            return work(fp, path, size)
    except (InvalidDicom, MemoryError):
        raise
    except OSError as exc:
        raise InvalidDicom(f"cannot read {Path(path).name}: {exc.strerror or exc}") from None
    except Exception as exc:  # noqa: BLE001 -- never let a library error escape
        raise InvalidDicom(f"unreadable DICOM: {type(exc).__name__}: {exc}") from None
