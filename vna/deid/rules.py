"""From the profile's action codes to what vna does to one element.

The combined codes (X/Z, X/D, Z/D, X/Z/D, X/Z/U*) leave the choice to the
de-identifier depending on whether the attribute is Type 1, 2 or 3 in the IOD.
vna does not carry the IOD tables, so it takes the choice that keeps every IOD
conformant and still discloses nothing: a dummy value wherever D is allowed
(a dummy is valid at every Type), an empty value wherever Z is the strongest
allowed, and removal only where X is the sole code.  Sequences cannot hold a
meaningful dummy, so D on a sequence empties it (its items could carry
identifying codes or text the table does not list one by one).

Both walkers (pydicom datasets and DICOM JSON) use these rules, so a file and
its metadata are de-identified the same way.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from vna.deid.profile import Action

PATIENT_NAME = 0x00100010
PATIENT_ID = 0x00100020
ISSUER_OF_PATIENT_ID = 0x00100021

DUMMY_TEXT = "ANONYMIZED"  # fits every text VR: CS, SH and AE allow 16 characters

# Coded values of the method: PS3.16 CID 7050 "De-identification Method"
METHOD_CODE = ("113100", "DCM", "Basic Application Confidentiality Profile")
METHOD_TEXT = "PS3.15 E.1 Basic Application Confidentiality Profile (vna)"  # LO: <= 64

_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+")

_TEXT_VRS = {"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT"}
_BINARY_NUMBER_VRS = {"FL", "FD", "SL", "SS", "SV", "UL", "US", "UV"}


class Op(enum.StrEnum):
    KEEP = "keep"
    RECURSE = "recurse"  # keep the sequence, de-identify its items
    REMOVE = "remove"
    EMPTY = "empty"
    DUMMY = "dummy"
    REMAP = "remap"  # UIDs through Deidentifier.uid
    URL = "url"  # a URL kept, the UIDs in its path and query remapped
    PATIENT = "patient"  # PatientName / PatientID: the share's pseudonym


# Z attributes that are Type 1 keys of the STUDY directory record (PS3.3 F.5):
# media tools (dcmtk's dcmmkdir) refuse a file where they are empty, and Z allows
# "a non-zero length value that may be a dummy", so these get the dummy.
MEDIA_KEYS = {0x00080020, 0x00080030, 0x00200010}  # Study Date, Study Time, Study ID


def resolve(action: Action | None, vr: str, tag: int = 0) -> Op:
    """What to do with an element of this VR that the profile gives ``action``."""
    seq = vr == "SQ"
    if action is None or action is Action.K:
        return Op.RECURSE if seq else Op.URL if vr == "UR" else Op.KEEP
    if action is Action.X:
        return Op.REMOVE
    if action in (Action.Z, Action.XZ):
        return Op.DUMMY if tag in MEDIA_KEYS else Op.EMPTY
    if vr == "UI":  # any replacement of a UID is the consistent remap
        return Op.REMAP
    if action is Action.U:
        return Op.REMOVE  # a U entry under another VR: nothing sensible to map
    if action is Action.XZU:
        return Op.RECURSE if seq else Op.EMPTY
    if action is Action.XD:
        return Op.REMOVE if seq else Op.DUMMY
    # D, Z/D, X/Z/D, C
    return Op.EMPTY if seq else Op.DUMMY


def dummy_value(vr: str) -> str | int | None:
    """A dummy of this VR, as pydicom takes it; None where only empty makes sense
    (bulk VRs, AT, UR, UN)."""
    if vr == "DA":
        return "19000101"
    if vr == "DT":
        return "19000101000000"
    if vr == "TM":
        return "000000"
    if vr == "AS":
        return "000D"
    if vr in ("IS", "DS"):
        return "0"
    if vr in _TEXT_VRS:
        return DUMMY_TEXT
    if vr in _BINARY_NUMBER_VRS:
        return 0
    return None


def dummy_json(vr: str) -> object | None:
    """The same dummy as a DICOM JSON Value item (PS3.18 F.2.3)."""
    value = dummy_value(vr)
    if value is None:
        return None
    if vr in ("IS", "DS"):
        return 0
    if vr == "PN":
        return {"Alphabetic": value}
    return value


def is_uid(text: str) -> bool:
    return len(text) <= 64 and _UID.fullmatch(text) is not None


def remap_url(url: str, remap: Callable[[str], str]) -> str:
    """``url`` with every path segment and query value that is a UID remapped, so
    a BulkDataURI or RetrieveURL names the de-identified study / series / instance.
    The host is left alone (an IPv4 address looks like a UID)."""
    parts = urlsplit(url)
    path = "/".join(remap(s) if is_uid(s) else s for s in parts.path.split("/"))
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, remap(v) if is_uid(v) else v) for k, v in pairs])
    return urlunsplit((parts.scheme, parts.netloc, path, query, parts.fragment))
