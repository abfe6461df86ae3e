"""UID checks at the edge: a UID in a URL becomes part of a blob key."""

from __future__ import annotations

from vna.dicom import valid_uid
from vna.errors import BadRequest


def check_uid(uid: str) -> str:
    # the same rule the parser applies to stored UIDs, so '/', '..' and other
    # path tricks never reach storage
    if not valid_uid(uid):
        raise BadRequest(f"invalid UID {uid!r}")
    return uid
