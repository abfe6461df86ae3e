"""The profile applied to DICOM JSON (PS3.18 F.2), as QIDO rows and instance
metadata carry it, by the same rules as the pydicom walker.

Keys are 8 hex digits; each element is ``{"vr": ..., "Value" | "BulkDataURI" |
"InlineBinary": ...}``.  Output keys are sorted, as PS3.18 F.2 orders them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vna.deid.rules import (
    METHOD_CODE,
    METHOD_TEXT,
    Op,
    dummy_json,
    remap_url,
    resolve,
)

if TYPE_CHECKING:
    from vna.deid.deidentifier import Deidentifier

PATIENT_NAME = "00100010"
PATIENT_ID = "00100020"
ISSUER_OF_PATIENT_ID = "00100021"
SOP_INSTANCE_UID = "00080018"


def _first(obj: dict[str, Any], key: str) -> str:
    values = (obj.get(key) or {}).get("Value") or []
    return str(values[0]) if values and values[0] is not None else ""


def _is_private_or_length(key: str) -> bool:
    group, element = int(key[:4], 16), int(key[4:], 16)
    return bool(group & 1) or element == 0 or group == 0  # as the dataset walker


def deidentify(deid: Deidentifier, obj: dict[str, Any]) -> dict[str, Any]:
    patient = deid.pseudonym(_first(obj, PATIENT_ID), _first(obj, ISSUER_OF_PATIENT_ID) or None)
    out = _walk(deid, obj, patient)
    if SOP_INSTANCE_UID in obj:  # instance metadata: what the file will say too
        out[PATIENT_NAME] = {"vr": "PN", "Value": [{"Alphabetic": patient[0]}]}
        out[PATIENT_ID] = {"vr": "LO", "Value": [patient[1]]}
        out.update(_marks())
    return dict(sorted(out.items()))


def _walk(deid: Deidentifier, obj: dict[str, Any], patient: tuple[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, element in obj.items():
        if _is_private_or_length(key):
            continue
        vr = element.get("vr", "UN")
        if key == PATIENT_NAME:
            out[key] = {"vr": vr, "Value": [{"Alphabetic": patient[0]}]}
            continue
        if key == PATIENT_ID:
            out[key] = {"vr": vr, "Value": [patient[1]]}
            continue
        tag = int(key, 16)
        op = resolve(deid.profile.action(tag), vr, tag)
        new = _element(deid, element, vr, op, patient)
        if new is not None:
            out[key] = new
    return out


def _element(
    deid: Deidentifier, element: dict[str, Any], vr: str, op: Op, patient: tuple[str, str]
) -> dict[str, Any] | None:
    if op is Op.REMOVE:
        return None
    if op is Op.EMPTY:
        return {"vr": vr}
    if op is Op.DUMMY:
        value = dummy_json(vr)
        return {"vr": vr} if value is None else {"vr": vr, "Value": [value]}
    values = element.get("Value")
    if op is Op.REMAP:
        mapped = [deid.uid(v) if isinstance(v, str) else v for v in values or []]
        return {"vr": vr, "Value": mapped} if values else {"vr": vr}
    if op is Op.RECURSE and values:
        items = [_walk(deid, item, patient) if item else item for item in values]
        return {"vr": vr, "Value": [dict(sorted(i.items())) if i else i for i in items]}
    new = dict(element)
    if op is Op.URL and values:
        new["Value"] = [remap_url(v, deid.uid) if isinstance(v, str) else v for v in values]
    if isinstance(new.get("BulkDataURI"), str):
        new["BulkDataURI"] = remap_url(new["BulkDataURI"], deid.uid)
    return new


def _marks() -> dict[str, Any]:
    code, scheme, meaning = METHOD_CODE
    return {
        "00120062": {"vr": "CS", "Value": ["YES"]},
        "00120063": {"vr": "LO", "Value": [METHOD_TEXT]},
        "00120064": {
            "vr": "SQ",
            "Value": [
                {
                    "00080100": {"vr": "SH", "Value": [code]},
                    "00080102": {"vr": "SH", "Value": [scheme]},
                    "00080104": {"vr": "LO", "Value": [meaning]},
                }
            ],
        },
        "00280303": {"vr": "CS", "Value": ["REMOVED"]},
    }
