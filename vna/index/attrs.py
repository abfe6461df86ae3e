"""The attribute catalogue: which DICOM attributes the index extracts, where they
live (table, column, level), and how values are normalized for matching.

Shared by the write path (extraction from an instance's DICOM JSON) and the
query compiler, so a value is normalized the same way when stored and when matched.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

import orjson
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from vna.index.base import Level

LEVELS: tuple[Level, ...] = ("patient", "study", "series", "instance")
LEVEL_RANK = {lvl: i for i, lvl in enumerate(LEVELS)}
ALIAS = {"patient": "p", "study": "s", "series": "se", "instance": "i"}


@dataclass(frozen=True, slots=True)
class Attr:
    """One indexed (matchable) attribute.

    kind: text | uid | pn | date | time | datetime | int | count | modalities
    column: column name in the level's table; for pn the prefix of the _a/_i/_p
    group columns; for count/modalities the counter column.
    """

    keyword: str
    level: Level
    kind: str
    column: str

    @property
    def tag(self) -> str:
        return tag_hex(self.keyword)

    @property
    def ref(self) -> str:
        return f"{ALIAS[self.level]}.{self.column}"


def _a(keyword: str, level: Level, kind: str, column: str) -> Attr:
    return Attr(keyword, level, kind, column)


CATALOG: dict[str, Attr] = {
    a.keyword: a
    for a in (
        _a("PatientName", "patient", "pn", "name"),
        _a("PatientID", "patient", "text", "patient_id"),
        _a("IssuerOfPatientID", "patient", "text", "issuer"),
        _a("PatientBirthDate", "patient", "date", "birth_date"),
        _a("PatientSex", "patient", "text", "sex"),
        _a("NumberOfPatientRelatedStudies", "patient", "count", "num_studies"),
        _a("StudyInstanceUID", "study", "uid", "study_uid"),
        _a("StudyDate", "study", "date", "study_date"),
        _a("StudyTime", "study", "time", "study_time"),
        _a("AccessionNumber", "study", "text", "accession"),
        _a("ReferringPhysicianName", "study", "pn", "ref"),
        _a("StudyID", "study", "text", "study_id"),
        _a("StudyDescription", "study", "text", "description"),
        _a("ModalitiesInStudy", "study", "modalities", "modalities"),
        _a("NumberOfStudyRelatedSeries", "study", "count", "num_series"),
        _a("NumberOfStudyRelatedInstances", "study", "count", "num_instances"),
        _a("SeriesInstanceUID", "series", "uid", "series_uid"),
        _a("Modality", "series", "text", "modality"),
        _a("SeriesNumber", "series", "int", "series_number"),
        _a("SeriesDescription", "series", "text", "description"),
        _a("SeriesDate", "series", "date", "series_date"),
        _a("SeriesTime", "series", "time", "series_time"),
        _a("PerformedProcedureStepStartDate", "series", "date", "pps_date"),
        _a("PerformedProcedureStepStartTime", "series", "time", "pps_time"),
        _a("BodyPartExamined", "series", "text", "body_part"),
        _a("InstitutionName", "series", "text", "institution"),
        _a("NumberOfSeriesRelatedInstances", "series", "count", "num_instances"),
        _a("SOPInstanceUID", "instance", "uid", "sop_uid"),
        _a("SOPClassUID", "instance", "uid", "sop_class_uid"),
        _a("InstanceNumber", "instance", "int", "instance_number"),
        _a("Rows", "instance", "int", "num_rows"),
        _a("Columns", "instance", "int", "num_columns"),
        _a("BitsAllocated", "instance", "int", "bits_allocated"),
        _a("NumberOfFrames", "instance", "int", "number_of_frames"),
        _a("ContentDate", "instance", "date", "content_date"),
        _a("ContentTime", "instance", "time", "content_time"),
        _a("AcquisitionDateTime", "instance", "datetime", "acquisition_dt"),
    )
}


def _words(text: str) -> list[str]:
    return text.split()


# Attributes kept in each level's JSON (returned "as stored"; post-filterable).
PATIENT_KEYS = _words(
    "PatientName PatientID IssuerOfPatientID IssuerOfPatientIDQualifiersSequence TypeOfPatientID "
    "PatientBirthDate PatientBirthTime PatientSex OtherPatientIDsSequence OtherPatientNames "
    "EthnicGroup PatientComments PatientSpeciesDescription PatientBreedDescription "
    "ResponsiblePerson PatientIdentityRemoved DeidentificationMethod"
)
STUDY_KEYS = _words(
    "StudyInstanceUID StudyDate StudyTime AccessionNumber IssuerOfAccessionNumberSequence "
    "ReferringPhysicianName ReferringPhysicianIdentificationSequence StudyID StudyDescription "
    "ProcedureCodeSequence PhysiciansOfRecord NameOfPhysiciansReadingStudy "
    "AdmittingDiagnosesDescription PatientAge PatientSize PatientWeight Occupation "
    "AdditionalPatientHistory TimezoneOffsetFromUTC RequestingPhysician"
)
SERIES_KEYS = _words(
    "Modality SeriesInstanceUID SeriesNumber SeriesDescription SeriesDate SeriesTime Laterality "
    "BodyPartExamined ProtocolName OperatorsName PerformingPhysicianName PatientPosition "
    "PerformedProcedureStepStartDate PerformedProcedureStepStartTime PerformedProcedureStepID "
    "PerformedProcedureStepDescription RequestAttributesSequence Manufacturer InstitutionName "
    "InstitutionAddress InstitutionalDepartmentName StationName ManufacturerModelName "
    "DeviceSerialNumber SoftwareVersions FrameOfReferenceUID"
)
INSTANCE_KEYS = _words(
    "SOPClassUID SOPInstanceUID InstanceNumber Rows Columns BitsAllocated NumberOfFrames "
    "TimezoneOffsetFromUTC ContentDate ContentTime AcquisitionDateTime AcquisitionDate "
    "AcquisitionTime AcquisitionNumber ImageType SamplesPerPixel PhotometricInterpretation "
    "InstanceCreationDate InstanceCreationTime ContentLabel ContentDescription "
    "PresentationCreationDate ObservationDateTime CompletionFlag VerificationFlag "
    "ContainerIdentifier TotalPixelMatrixColumns TotalPixelMatrixRows "
    "TotalPixelMatrixFocalPlanes ImagedVolumeWidth ImagedVolumeHeight ImagedVolumeDepth "
    "DimensionOrganizationType NumberOfOpticalPaths SeriesInstanceUID StudyInstanceUID"
)
LEVEL_KEYS: dict[Level, list[str]] = {
    "patient": PATIENT_KEYS,
    "study": STUDY_KEYS,
    "series": SERIES_KEYS,
    "instance": INSTANCE_KEYS,
}

# Default returned attributes (PS3.18 Table 6.7.1-2), before the matched keys.
DEFAULTS: dict[Level, list[str]] = {
    "patient": _words(
        "PatientName PatientID IssuerOfPatientID PatientBirthDate PatientSex "
        "NumberOfPatientRelatedStudies NumberOfPatientRelatedSeries NumberOfPatientRelatedInstances"
    ),
    "study": _words(
        "StudyDate StudyTime AccessionNumber InstanceAvailability ModalitiesInStudy "
        "ReferringPhysicianName TimezoneOffsetFromUTC PatientName PatientID IssuerOfPatientID "
        "PatientBirthDate PatientSex StudyInstanceUID StudyID NumberOfStudyRelatedSeries "
        "NumberOfStudyRelatedInstances"
    ),
    "series": _words(
        "Modality TimezoneOffsetFromUTC SeriesDescription SeriesInstanceUID SeriesNumber "
        "InstanceAvailability NumberOfSeriesRelatedInstances PerformedProcedureStepStartDate "
        "PerformedProcedureStepStartTime RequestAttributesSequence StudyInstanceUID"
    ),
    "instance": _words(
        "SOPClassUID SOPInstanceUID InstanceAvailability TimezoneOffsetFromUTC InstanceNumber "
        "Rows Columns BitsAllocated NumberOfFrames StudyInstanceUID SeriesInstanceUID"
    ),
}

# Values the index computes rather than copies from an instance.
COMPUTED = {
    "ModalitiesInStudy",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
    "NumberOfSeriesRelatedInstances",
    "NumberOfPatientRelatedStudies",
    "NumberOfPatientRelatedSeries",
    "NumberOfPatientRelatedInstances",
    "InstanceAvailability",
}


@functools.cache
def tag_hex(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(keyword)
    return f"{tag:08X}"


def keyword_of_tag(tag: str) -> str:
    try:
        return keyword_for_tag(int(tag, 16)) or ""
    except ValueError:
        return ""


@functools.cache
def vr_of(keyword: str) -> str:
    try:
        return str(dictionary_VR(tag_for_keyword(keyword)))
    except (KeyError, TypeError):
        return "UN"


LEVEL_TAGS: dict[Level, frozenset[str]] = {
    lvl: frozenset(tag_hex(k) for k in keys) for lvl, keys in LEVEL_KEYS.items()
}


# -- value normalization -------------------------------------------------------

_COMBINING = re.compile(r"[\u0300-\u036f]")
_NAME_SPLIT = re.compile(r"[\^\s=,]+")


def fold(text: str) -> str:
    """Case-insensitive comparison key (case only; accents kept)."""
    return unicodedata.normalize("NFC", text).casefold()


def fold_pn(text: str) -> str:
    """Person-name comparison key: case-folded, empty trailing components dropped
    ('DOE^JANE^^' equals 'doe^jane')."""
    return fold(text).rstrip("^ ")


def fuzzy_key(text: str) -> str:
    """Accent- and case-blind key: 'Müller' -> 'muller'."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return unicodedata.normalize("NFC", _COMBINING.sub("", decomposed))


def name_tokens(text: str) -> list[str]:
    """The words of a person name for fuzzy matching (components split on ^ and spaces)."""
    return [t for t in _NAME_SPLIT.split(fuzzy_key(text)) if t]


def pn_groups(value: Any) -> tuple[str, str, str]:
    """(alphabetic, ideographic, phonetic) of a DICOM JSON PN value."""
    if isinstance(value, dict):
        return (
            str(value.get("Alphabetic") or ""),
            str(value.get("Ideographic") or ""),
            str(value.get("Phonetic") or ""),
        )
    parts = (str(value or "").split("=") + ["", ""])[:3]
    return parts[0], parts[1], parts[2]


def pn_string(value: Any) -> str:
    return "=".join(pn_groups(value)).rstrip("=")


def norm_date(value: str) -> str:
    return value.replace(".", "").strip()


_TIME_FILL_LOW = "000000.000000"
_TIME_FILL_HIGH = "235959.999999"


def norm_time(value: str, *, high: bool = False) -> str:
    """HHMMSS.FFFFFF of a (possibly partial) TM, filled with the lowest or highest
    value so lexicographic comparison is chronological."""
    value = value.replace(":", "").strip()
    if not value:
        return ""
    head, _, frac = value.partition(".")
    fill = _TIME_FILL_HIGH if high else _TIME_FILL_LOW
    head = head + fill[len(head) : 6]
    frac = (frac + fill[7 + len(frac) :]) if frac else fill[7:]
    return f"{head[:6]}.{frac[:6]}"


_DT_FILL_LOW = "00000101000000.000000"
_DT_FILL_HIGH = "99991231235959.999999"
_DT_TZ = re.compile(r"[+-]\d{4}$")


def norm_datetime(value: str, *, high: bool = False) -> str:
    """YYYYMMDDHHMMSS.FFFFFF of a partial DT (timezone offset dropped)."""
    value = _DT_TZ.sub("", value.strip())
    if not value:
        return ""
    head, _, frac = value.partition(".")
    fill = _DT_FILL_HIGH if high else _DT_FILL_LOW
    head = head + fill[len(head) : 14]
    frac = (frac + fill[15 + len(frac) :]) if frac else fill[15:]
    return f"{head[:14]}.{frac[:6]}"


# -- extraction from DICOM JSON ------------------------------------------------


def first(meta: dict[str, Any], keyword: str) -> Any:
    elem = meta.get(tag_hex(keyword))
    if not elem:
        return None
    values = elem.get("Value")
    return values[0] if values else None


def text_of(meta: dict[str, Any], keyword: str) -> str:
    v = first(meta, keyword)
    return "" if v is None else str(v).strip()


def int_of(meta: dict[str, Any], keyword: str) -> int | None:
    v = first(meta, keyword)
    try:
        return int(v) if v is not None and str(v).strip() != "" else None
    except (TypeError, ValueError):
        return None


def level_json(meta: dict[str, Any], level: Level) -> str:
    tags = LEVEL_TAGS[level]
    return dumps({t: meta[t] for t in sorted(tags.intersection(meta))})


def dumps(obj: Any) -> str:
    """Compact JSON text.  Every stored instance is encoded several times (its
    metadata, then each level's attributes): orjson does it about 10x faster than
    the json module, which was a fifth of the STOW-RS path's time under the GIL.
    json remains for what orjson refuses (integers past 64 bits)."""
    try:
        return orjson.dumps(obj).decode()
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def column_values(meta: dict[str, Any], level: Level) -> dict[str, Any]:
    """Column name -> normalized value of every catalogue attribute of ``level``
    (pn attributes yield their three casefolded group columns)."""
    out: dict[str, Any] = {}
    for attr in CATALOG.values():
        if attr.level != level or attr.kind in ("count", "modalities"):
            continue
        if attr.kind == "pn":
            groups = pn_groups(first(meta, attr.keyword))
            for suffix, g in zip("aip", groups, strict=True):
                out[f"{attr.column}_{suffix}"] = fold_pn(g)
        elif attr.kind == "int":
            out[attr.column] = int_of(meta, attr.keyword)
        elif attr.kind == "date":
            out[attr.column] = norm_date(text_of(meta, attr.keyword))
        elif attr.kind == "time":
            out[attr.column] = norm_time(text_of(meta, attr.keyword))
        elif attr.kind == "datetime":
            out[attr.column] = norm_datetime(text_of(meta, attr.keyword))
        else:
            out[attr.column] = text_of(meta, attr.keyword)
    return out


def pn_token_rows(meta: dict[str, Any], keyword: str) -> list[str]:
    """Distinct fuzzy tokens of every value of a PN attribute (all groups)."""
    elem = meta.get(tag_hex(keyword)) or {}
    tokens: set[str] = set()
    for value in elem.get("Value") or []:
        for group in pn_groups(value):
            tokens.update(name_tokens(group))
    return sorted(tokens)
