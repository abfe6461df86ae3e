"""DICOMDIR directory records (PS3.3 F.5) made from an instance's DICOM JSON.

PATIENT, STUDY, SERIES and IMAGE records (nearly every instance) are made here
from the few attributes they hold, which costs microseconds; other leaf types
(SR DOCUMENT, PRESENTATION, RT DOSE, ENCAP DOC...) go through pydicom's own
record definitions on a dataset made from the JSON.  Type 1 keys an instance
lacks, or that de-identification emptied (Study Date and Study ID are Z in
the profile), get placeholders that carry no information.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydicom import Dataset
from pydicom import fileset as pydicom_fileset

from vna.index.base import InstanceRecord

PLACEHOLDERS = {
    "PatientID": "UNKNOWN",
    "StudyDate": "19000101",
    "StudyTime": "000000",
    "StudyID": "0",
    "Modality": "OT",
    "SeriesNumber": "0",
}

# pydicom chooses the record type of a leaf in two private helpers; without them
# (another pydicom) every instance is listed as an IMAGE, which readers accept.
_four_level: Callable[[Dataset], str] = getattr(
    pydicom_fileset, "_four_level_record_type", lambda ds: "IMAGE"
)
_single_level: Callable[[Dataset], str] = getattr(
    pydicom_fileset, "_single_level_record_type", lambda ds: "PATIENT"
)


def values(md: dict[str, Any], key: str) -> list[Any]:
    return (md.get(key) or {}).get("Value") or []


def _pn(value: Any) -> str:
    if isinstance(value, dict):
        groups = [value.get(g, "") for g in ("Alphabetic", "Ideographic", "Phonetic")]
        return "=".join(groups).rstrip("=")
    return str(value)


def text(md: dict[str, Any], key: str) -> str:
    found = values(md, key)
    if not found or found[0] is None:
        return ""
    return _pn(found[0]) if md[key].get("vr") == "PN" else str(found[0])


def _record(kind: str, md: dict[str, Any]) -> Dataset:
    record = Dataset()
    charset = values(md, "00080005")
    if charset:  # Type 1C: the records hold the instance's names and descriptions
        record.SpecificCharacterSet = charset if len(charset) > 1 else charset[0]
    record.DirectoryRecordType = kind
    record.RecordInUseFlag = 0xFFFF
    return record


def _or(value: str, keyword: str) -> str:
    return value or PLACEHOLDERS[keyword]


def patient_key(md: dict[str, Any]) -> str:
    return _or(text(md, "00100020"), "PatientID")


def study_key(md: dict[str, Any], rec: InstanceRecord) -> str:
    return text(md, "0020000D") or rec.study_instance_uid


def series_key(md: dict[str, Any], rec: InstanceRecord) -> str:
    return text(md, "0020000E") or rec.series_instance_uid


def patient(md: dict[str, Any]) -> Dataset:
    record = _record("PATIENT", md)
    record.PatientName = text(md, "00100010")
    record.PatientID = patient_key(md)
    return record


def study(md: dict[str, Any], rec: InstanceRecord) -> Dataset:
    record = _record("STUDY", md)
    record.StudyDate = _or(text(md, "00080020"), "StudyDate")
    record.StudyTime = _or(text(md, "00080030"), "StudyTime")
    record.StudyDescription = text(md, "00081030")
    record.StudyInstanceUID = study_key(md, rec)
    record.StudyID = _or(text(md, "00200010"), "StudyID")
    record.AccessionNumber = text(md, "00080050")
    return record


def series(md: dict[str, Any], rec: InstanceRecord) -> Dataset:
    record = _record("SERIES", md)
    record.Modality = _or(text(md, "00080060"), "Modality")
    record.SeriesInstanceUID = series_key(md, rec)
    record.SeriesNumber = _or(text(md, "00200011"), "SeriesNumber")
    return record


def _kind_probe(md: dict[str, Any]) -> Dataset:
    """Just what pydicom's record type choice looks at."""
    probe = Dataset()
    probe.SOPClassUID = text(md, "00080016")
    probe.Modality = text(md, "00080060")
    if "00420011" in md:
        probe.EncapsulatedDocument = b""
    if "300A0002" in md:
        probe.RTPlanLabel = text(md, "300A0002")
    return probe


def _no_bulk(tag: str, vr: str, uri: str) -> bytes:
    return b""  # records need no bulk value


def _full(md: dict[str, Any]) -> Dataset:
    """The instance's attributes as a dataset, for pydicom's record definitions."""
    kept = {k: v for k, v in md.items() if not k.startswith("7FE0") and not int(k[:4], 16) & 1}
    return Dataset.from_json(kept, bulk_data_uri_handler=_no_bulk)


def leaf(md: dict[str, Any], rec: InstanceRecord, number: int) -> Dataset:
    """The instance's own record; ValueError when its record type cannot be made."""
    probe = _kind_probe(md)
    if _single_level(probe) != "PATIENT":
        raise ValueError(f"{_single_level(probe)} is not a patient's instance")
    kind = _four_level(probe)
    if kind == "IMAGE":
        record = _record(kind, md)
        record.InstanceNumber = text(md, "00200013") or str(number)
    else:
        body = pydicom_fileset.DIRECTORY_RECORDERS[kind](_full(md))
        record = _record(kind, md)
        record.update(body)
    record.ReferencedSOPClassUIDInFile = text(md, "00080016") or rec.sop_class_uid
    record.ReferencedSOPInstanceUIDInFile = text(md, "00080018") or rec.sop_instance_uid
    record.ReferencedTransferSyntaxUIDInFile = rec.transfer_syntax_uid
    return record
