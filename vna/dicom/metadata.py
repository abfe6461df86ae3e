"""DICOM JSON (PS3.18 F.2) of a stored dataset, bulk values as relative BulkDataURIs.

A bulk value (Pixel Data, or another OB/OD/OF/OL/OV/OW/UN value over
``BULK_THRESHOLD`` bytes) is replaced by ``{"vr": ..., "BulkDataURI": URI}`` with
``URI = BULK_PREFIX + path``, where ``path`` is the element's tag, and for nested
ones the chain ``SEQTAG/ITEMINDEX/.../TAG`` (hex tags, 0-based items):

    bulk/7FE00010                 top-level Pixel Data
    bulk/00540016/0/00181234      nested element (not that it is usual)

The web layer prefixes the URI with the instance URL; ``read_bulk`` gives back the
bytes.  Names are decoded per Specific Character Set.

Two converters give the same dict: ``dataset_json_fast`` decodes the raw bytes of
a little-endian dataset (``vna.dicom.fastjson``; several times faster, see
benchmarks/parse_speed.py) and raises ``Unsupported`` for anything outside its
copied rules; ``dataset_json`` (alias ``dataset_json_pydicom``) converts a pydicom
Dataset and handles everything.
"""

from __future__ import annotations

import base64
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset

from vna.dicom.fastjson import BULK_VRS, FastDecoder
from vna.dicom.walk import Element

BULK_PREFIX = "bulk/"
BULK_THRESHOLD = 1024
PIXEL_TAGS = (0x7FE00008, 0x7FE00009, 0x7FE00010)


def bulk_uri(path: list[str]) -> str:
    return BULK_PREFIX + "/".join(path)


def _vr_of(raw: RawDataElement | DataElement) -> str:
    """The VR without converting the value (implicit VR: from the dictionary)."""
    if raw.VR:
        return str(raw.VR)
    try:
        vr = dictionary_VR(raw.tag)
    except KeyError:
        return "UN"
    return vr.split(" or ")[0] if " or " in vr else vr


def _fallback(elem: DataElement) -> dict[str, Any]:
    """JSON for an element pydicom cannot convert (bad IS/DS, odd bytes...)."""
    value = elem.value
    if isinstance(value, bytes):
        return {"vr": elem.VR, "InlineBinary": base64.b64encode(value).decode()}
    values = value if isinstance(value, list | tuple) else [value]
    return (
        {"vr": elem.VR, "Value": [str(v) for v in values if v is not None]}
        if values
        else {"vr": elem.VR}
    )


def _element_json(ds: Dataset, tag: int, path: list[str], threshold: int) -> dict[str, Any] | None:
    raw = ds.get_item(tag)
    vr = _vr_of(raw)
    length = raw.length if isinstance(raw, RawDataElement) else None
    if vr in BULK_VRS:
        size = length if length is not None else len(ds[tag].value or b"")
        if size > threshold:
            return {"vr": vr, "BulkDataURI": bulk_uri([*path, f"{tag:08X}"])}
    elem = ds[tag]  # converts (and loads a deferred value, which is small here)
    if elem.VR == "SQ":
        items = [
            dataset_json(item, [*path, f"{tag:08X}", str(i)], threshold)
            for i, item in enumerate(elem.value)
        ]
        return {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
    try:
        return elem.to_json_dict(None, threshold)
    except Exception:  # noqa: BLE001 -- pydicom raises many types on bad values
        try:
            return _fallback(elem)
        except Exception:  # noqa: BLE001
            return {"vr": elem.VR}


def dataset_json(
    ds: Dataset, path: list[str] | None = None, threshold: int = BULK_THRESHOLD
) -> dict[str, Any]:
    """DICOM JSON of ``ds`` (no group lengths, no file meta, no pixel data)."""
    out: dict[str, Any] = {}
    # top-level pixel data is described from the walker's map (see pixel_json)
    skip = (0xFFFCFFFC, *PIXEL_TAGS) if not path else (0xFFFCFFFC,)
    for tag in sorted(ds.keys()):
        if tag & 0xFFFF == 0 or tag >> 16 == 0x0002 or tag in skip:
            continue
        found = _element_json(ds, tag, path or [], threshold)
        if found is not None:
            out[f"{tag:08X}"] = found
    return out


dataset_json_pydicom = dataset_json


def dataset_json_fast(
    buf: bytes, implicit: bool, threshold: int = BULK_THRESHOLD
) -> dict[str, Any]:
    """What ``dataset_json(dcmread(..., stop_before_pixels=True))`` gives, from the
    encoded little-endian dataset ``buf``; ``Unsupported`` when pydicom must do it."""
    return FastDecoder(buf, implicit, threshold, BULK_PREFIX).top()


def pixel_json(pixel: Element, implicit: bool, bits_allocated: int) -> dict[str, Any]:
    """The BulkDataURI entry of top-level pixel data (from the walker's map)."""
    if pixel.vr:
        vr = pixel.vr
    elif pixel.tag == 0x7FE00008:
        vr = "OF"
    elif pixel.tag == 0x7FE00009:
        vr = "OD"
    else:
        vr = "OB" if pixel.undefined or bits_allocated <= 8 else "OW"
    return {"vr": vr, "BulkDataURI": bulk_uri([f"{pixel.tag:08X}"])}
