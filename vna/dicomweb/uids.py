"""UID checks at the edge: a UID in a URL becomes part of a blob key."""

from __future__ import annotations

import re

from vna.errors import BadRequest

def check_uid(uid: str) -> str:
    # strict form (PS3.5 9.1) so '/', '..' and other path tricks never reach storage;
    # leading zeros are tolerated in components since some vendors emit them
    if not uid or len(uid) > 64 or not re.fullmatch(r"[0-9]+(\.[0-9]+)*", uid):
        raise BadRequest(f"invalid UID {uid!r}")
    return uid
