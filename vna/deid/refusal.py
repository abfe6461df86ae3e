"""Which instances must not leave de-identified at all.

The Basic Profile cleans the header only (PS3.15 E.1.1): it says nothing of
text burned into the pixels, nor of free text a whole document consists of.
So vna refuses, rather than ships, what the header itself says (or its kind
makes likely) carries identity outside the attributes the table lists:

- BurnedInAnnotation = YES, on any SOP class;
- RecognizableVisualFeatures = YES (a face, a photograph of the patient);
- Secondary Capture without BurnedInAnnotation = NO: screenshots and scanned
  paper, which usually show the name, and the attribute is only Type 3 there;
- encapsulated documents (PDF, CDA, STL...) and structured reports: their
  content is free text or documents the profile cannot clean (Content
  Sequence and Encapsulated Document would be emptied, leaving nothing);
- whole-slide LABEL and OVERVIEW images: the slide label, with the patient's
  name or barcode, photographed (the issue's "slide labels and macros").

Works on a pydicom Dataset and on DICOM JSON alike, so a share can filter
from index rows (no blob read) and get the same answer as from the file.
"""

from __future__ import annotations

from typing import Any

from pydicom import Dataset
from pydicom.multival import MultiValue

SECONDARY_CAPTURE = {
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image
    "1.2.840.10008.5.1.4.1.1.7.1",  # Multi-frame Single Bit SC
    "1.2.840.10008.5.1.4.1.1.7.2",  # Multi-frame Grayscale Byte SC
    "1.2.840.10008.5.1.4.1.1.7.3",  # Multi-frame Grayscale Word SC
    "1.2.840.10008.5.1.4.1.1.7.4",  # Multi-frame True Color SC
}
ENCAPSULATED_DOCUMENT_PREFIX = "1.2.840.10008.5.1.4.1.1.104."
STRUCTURED_REPORT_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
VL_WHOLE_SLIDE = "1.2.840.10008.5.1.4.1.1.77.1.6"
LABEL_IMAGE_TYPES = {"LABEL", "OVERVIEW"}

_TAGS = {
    "SOPClassUID": "00080016",
    "ImageType": "00080008",
    "BurnedInAnnotation": "00280301",
    "RecognizableVisualFeatures": "00280302",
}


def _values(obj: dict[str, Any] | Dataset, keyword: str) -> list[str]:
    if isinstance(obj, Dataset):
        value = obj.get(keyword)
        if value is None:
            return []
        items = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
        return [str(v).strip().upper() for v in items]
    element = obj.get(_TAGS[keyword]) or {}
    return [str(v).strip().upper() for v in element.get("Value") or [] if v is not None]


def _first(obj: dict[str, Any] | Dataset, keyword: str) -> str:
    values = _values(obj, keyword)
    return values[0] if values else ""


def refusal(obj: dict[str, Any] | Dataset) -> str | None:
    """Why this instance must not be shared de-identified, or None."""
    burned = _first(obj, "BurnedInAnnotation")
    if burned == "YES":
        return "burned-in annotation (BurnedInAnnotation is YES)"
    if _first(obj, "RecognizableVisualFeatures") == "YES":
        return "recognizable visual features (RecognizableVisualFeatures is YES)"
    sop_class = _first(obj, "SOPClassUID")
    if sop_class in SECONDARY_CAPTURE and burned != "NO":
        return "secondary capture not marked free of burned-in annotation"
    if sop_class.startswith(ENCAPSULATED_DOCUMENT_PREFIX):
        return "encapsulated document: its content is not covered by the profile"
    if sop_class.startswith(STRUCTURED_REPORT_PREFIX):
        return "structured report: its free text is not covered by the profile"
    if sop_class == VL_WHOLE_SLIDE:
        image_type = _values(obj, "ImageType")
        if len(image_type) > 2 and image_type[2] in LABEL_IMAGE_TYPES:
            return f"slide {image_type[2].lower()} image: shows the slide label"
    return None
