"""De-identification of one share's instances: files, datasets and DICOM JSON.

One ``Deidentifier`` per share, made from a secret key.  Everything it derives
is a keyed hash (HMAC-SHA256) of the original value: the same key gives the
same new UIDs and pseudonyms in every worker and on every request, so series
still group, references still resolve, and a ZIP and the viewer of the same
share agree, without a mapping table to store.  A different share (another
key) gets unrelated values, so two shares cannot be linked.

All of it is synchronous CPU work: async callers run it in a thread.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
from collections.abc import Iterable
from io import BytesIO
from typing import Any

from pydicom import Dataset, dcmread
from pydicom.dataelem import DataElement
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

from vna.deid import dicomjson
from vna.deid.profile import Profile, basic_profile
from vna.deid.refusal import refusal
from vna.deid.rules import (
    METHOD_CODE,
    METHOD_TEXT,
    PATIENT_ID,
    PATIENT_NAME,
    Op,
    dummy_value,
    remap_url,
    resolve,
)
from vna.deid.slides import deidentify_slide
from vna.dicom import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from vna.errors import BadRequest, Forbidden, InvalidDicom, VnaError
from vna.index.base import SlideRecord

# File meta attributes that name the systems the file went through
_META_DROPPED = (
    "SourceApplicationEntityTitle",
    "SendingApplicationEntityTitle",
    "ReceivingApplicationEntityTitle",
    "SourcePresentationAddress",
    "SendingPresentationAddress",
    "ReceivingPresentationAddress",
    "PrivateInformationCreatorUID",
    "PrivateInformation",
)


# (7FE0,0010) Pixel Data, (7FE0,0008) Float and (7FE0,0009) Double Float Pixel Data
_PIXEL_TAGS_LE = {b"\xe0\x7f\x10\x00", b"\xe0\x7f\x08\x00", b"\xe0\x7f\x09\x00"}
_PIXEL_TAGS_BE = {b"\x7f\xe0\x00\x10", b"\x7f\xe0\x00\x08", b"\x7f\xe0\x00\x09"}


class Refused(Forbidden):
    """The instance must not be shared de-identified (see vna.deid.refusal)."""


class Deidentifier:
    def __init__(self, key: bytes, *, profile: Profile | None = None) -> None:
        if not key:
            raise BadRequest("a de-identification key must not be empty")
        self._key = bytes(key)
        self.profile = profile or basic_profile()

    # -- derived values ------------------------------------------------------
    def _digest(self, domain: bytes, *parts: str) -> bytes:
        message = domain + b"\0" + "\0".join(parts).encode("utf-8", "surrogateescape")
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def uid(self, uid: str) -> str:
        """The share's UID for ``uid``: '2.25.' and a 128-bit keyed hash laid out
        as a version-8 UUID (PS3.5 B.2), at most 44 characters."""
        uid = uid.strip().rstrip("\0")
        if not uid:
            return uid
        raw = bytearray(self._digest(b"uid", uid)[:16])
        raw[6] = (raw[6] & 0x0F) | 0x80  # version 8: application-defined
        raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 9562 variant
        return "2.25." + str(int.from_bytes(raw, "big"))

    def originals(self, uids: Iterable[str]) -> dict[str, str]:
        """{this share's UID: original UID} for the given originals.  The remap is
        one-way, so a share's routes, handed a remapped UID by a viewer, look it
        up among the UIDs of what was shared."""
        return {self.uid(u): u for u in uids if u}

    def pseudonym(self, patient_id: str, issuer: str | None = None) -> tuple[str, str]:
        """(PatientName, PatientID) standing for that patient in this share."""
        code = self._digest(b"patient", (issuer or "").strip(), patient_id.strip()).hex()
        code = code[:12].upper()
        return f"Anonymous^{code}", f"ANON{code}"

    def slide(self, rec: SlideRecord) -> SlideRecord:
        """A non-DICOM slide's row as a de-identified share shows it (and see
        ``vna.deid.slides.HIDDEN_ASSOCIATED_IMAGES``: no label, no macro)."""
        return deidentify_slide(self, rec)

    def refusal(self, obj: dict[str, Any] | Dataset) -> str | None:
        """Why the instance must not be shared de-identified, or None."""
        return refusal(obj)

    # -- datasets ----------------------------------------------------------------
    def dataset(self, ds: Dataset) -> Dataset:
        """A de-identified copy of ``ds`` (and of its file meta, if it has one).
        Raises Refused for an instance ``refusal`` turns away."""
        return self._apply(copy.deepcopy(ds))

    def part10(self, data: bytes) -> bytes:
        """A stored Part-10 file de-identified: pixel data and transfer syntax as
        they were, header cleaned, file meta matching the new SOP Instance UID."""
        try:
            ds = dcmread(BytesIO(data))
        except (InvalidDicomError, ValueError, EOFError, OSError) as exc:
            raise InvalidDicom(f"not a readable Part-10 file: {exc}") from exc
        return _write(self._guarded(ds))

    def header(self, head: bytes) -> tuple[bytes, int] | None:
        """The de-identified start of a large Part-10 file, for streaming it: with
        ``head``, the file's first bytes, returns the new file's bytes up to its
        pixel data and the offset where the original's Pixel Data element starts;
        the new file is those bytes followed by the original's from that offset,
        untouched.  None when ``head`` does not reach the pixel data (read more,
        or the file has none).  Only for files whose Pixel Data is the last
        top-level element, and not deflated (one compressed stream)."""
        fp = BytesIO(head)
        try:
            ds = dcmread(fp, stop_before_pixels=True)
        except (InvalidDicomError, ValueError, EOFError, OSError) as exc:
            raise InvalidDicom(f"not a readable Part-10 file: {exc}") from exc
        syntax = ds.file_meta.get("TransferSyntaxUID")
        if syntax is not None and syntax.is_deflated:
            raise InvalidDicom("a deflated file cannot be de-identified in parts")
        pos = fp.tell()
        tags = (
            _PIXEL_TAGS_BE if syntax is not None and not syntax.is_little_endian else _PIXEL_TAGS_LE
        )
        if syntax is None or head[pos : pos + 4] not in tags:
            return None  # pydicom stopped short of the pixel data: the head ends first
        return _write(self._guarded(ds)), pos

    def json(self, obj: dict[str, Any]) -> dict[str, Any]:
        """A DICOM JSON object (a QIDO row or an instance's metadata) de-identified
        by the same rules; UIDs inside BulkDataURI and URL values remapped.
        Instance metadata (with a SOP Instance UID) also gets the de-identification
        marks and the pseudonym, as the file does."""
        return dicomjson.deidentify(self, obj)

    def _guarded(self, ds: Dataset) -> Dataset:
        """``_apply`` on a dataset read from bytes: a value pydicom cannot convert
        is the file's fault, answered as InvalidDicom."""
        try:
            return self._apply(ds)
        except VnaError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
            raise InvalidDicom(f"cannot de-identify this file: {exc}") from exc

    def _patient(self, ds: Dataset) -> tuple[str, str]:
        return self.pseudonym(str(ds.get("PatientID") or ""), ds.get("IssuerOfPatientID"))

    def _apply(self, ds: Dataset) -> Dataset:
        reason = refusal(ds)
        if reason:
            raise Refused(f"not shared de-identified: {reason}")
        patient = self._patient(ds)
        self._clean(ds, patient)
        ds.PatientName, ds.PatientID = patient
        _mark(ds)
        if getattr(ds, "file_meta", None) is not None:
            self._clean_meta(ds)
        return ds

    def _clean(self, ds: Dataset, patient: tuple[str, str]) -> None:
        for tag in list(ds.keys()):
            elem = ds[tag]
            # private; a retired group length; a command element, not part of a stored
            # dataset (the table lists a few, pydicom refuses to write any)
            if tag.is_private or tag.element == 0 or tag.group == 0:
                del ds[tag]
                continue
            if tag in (PATIENT_NAME, PATIENT_ID):
                elem.value = patient[0] if tag == PATIENT_NAME else patient[1]
                continue
            op = resolve(self.profile.action(tag), elem.VR, tag)
            self._element(ds, elem, op, patient)

    def _element(self, ds: Dataset, elem: DataElement, op: Op, patient: tuple[str, str]) -> None:
        if op is Op.REMOVE:
            del ds[elem.tag]
        elif op is Op.EMPTY:
            elem.value = [] if elem.VR == "SQ" else elem.empty_value
        elif op is Op.DUMMY:
            value = dummy_value(elem.VR)
            elem.value = elem.empty_value if value is None else value
        elif op is Op.REMAP:
            elem.value = _map_values(elem.value, self.uid)
        elif op is Op.URL and isinstance(elem.value, str) and elem.value:
            elem.value = remap_url(elem.value, self.uid)
        elif op is Op.RECURSE:
            for item in elem.value or []:
                self._clean(item, patient)

    def _clean_meta(self, ds: Dataset) -> None:
        meta = ds.file_meta
        for keyword in _META_DROPPED:
            if keyword in meta:
                delattr(meta, keyword)
        if "SOPInstanceUID" in ds:
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        if "SOPClassUID" in ds:
            meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
        meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME


def _write(ds: Dataset) -> bytes:
    out = BytesIO()
    try:
        ds.save_as(out, enforce_file_format=True)
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        # e.g. no SOP Instance UID to name the file by: not a storable instance
        raise InvalidDicom(f"cannot be written as a Part-10 file: {exc}") from exc
    return out.getvalue()


def _map_values(value: Any, remap: Any) -> Any:
    if isinstance(value, MultiValue | list | tuple):
        return [remap(str(v)) for v in value]
    return remap(str(value)) if value else value


def _mark(ds: Dataset) -> None:
    """PS3.15 E.1.1: say the identity was removed, and by which profile."""
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = METHOD_TEXT
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = METHOD_CODE
    ds.DeidentificationMethodCodeSequence = [code]
    # dates and times were emptied or replaced by dummies, not shifted
    ds.LongitudinalTemporalInformationModified = "REMOVED"
