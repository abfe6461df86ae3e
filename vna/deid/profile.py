"""PS3.15 Annex E Table E.1-1: the Basic Application Level Confidentiality Profile.

pydicom does not ship the table.  The ``dicom-anonymizer`` package (Kitware,
BSD) does: one module per edition of the standard, scraped from Table E.1-1 by
the maintainers' script, with the Basic Profile column's action for every
attribute.  We read the newest edition it carries and only its table: the
actions themselves are applied by vna (``vna.deid.deidentifier``), because
that package's own anonymizer makes choices (random UIDs, no pseudonyms) a
share cannot use.

An entry is either an exact tag or a masked range such as Overlay Data
(60xx,3000) and Curve Data (50xx,xxxx).
"""

from __future__ import annotations

import enum
import importlib
import pkgutil
from dataclasses import dataclass
from functools import cache

from vna.errors import VnaError

_TABLES_PACKAGE = "dicomanonymizer.dicom_anonymization_databases"


class Action(enum.StrEnum):
    """The Basic Profile column's codes (PS3.15 E.1.1, Table E.1-1a)."""

    D = "D"  # replace with a non-zero length dummy value consistent with the VR
    Z = "Z"  # replace with a zero length value (or a dummy)
    X = "X"  # remove
    K = "K"  # keep (not in the Basic column; used by options)
    C = "C"  # clean (not in the Basic column; used by options)
    U = "U"  # replace the UID with one that is consistent within the set
    ZD = "Z/D"  # Z unless D is needed for IOD conformance (Type 1)
    XZ = "X/Z"  # X unless Z is needed (Type 2)
    XD = "X/D"  # X unless D is needed (Type 1)
    XZD = "X/Z/D"  # X unless Z or D is needed
    XZU = "X/Z/U*"  # X unless Z, or U of the contained instance UIDs, is needed


# dicom-anonymizer's list names -> the profile's codes
_CATEGORIES = {
    "D_TAGS": Action.D,
    "Z_TAGS": Action.Z,
    "X_TAGS": Action.X,
    "U_TAGS": Action.U,
    "Z_D_TAGS": Action.ZD,
    "X_Z_TAGS": Action.XZ,
    "X_D_TAGS": Action.XD,
    "X_Z_D_TAGS": Action.XZD,
    "X_Z_U_STAR_TAGS": Action.XZU,
}


@dataclass(frozen=True, slots=True)
class MaskedEntry:
    """A range of tags: those with ``tag & mask == value``."""

    value: int
    mask: int
    action: Action

    def matches(self, tag: int) -> bool:
        return tag & self.mask == self.value


@dataclass(frozen=True, slots=True)
class Profile:
    edition: str  # the module the table came from, e.g. "dicomfields_2026c"
    exact: dict[int, Action]
    masked: tuple[MaskedEntry, ...]

    def action(self, tag: int) -> Action | None:
        """The profile's action for ``tag``, or None when the table does not list it."""
        found = self.exact.get(tag)
        if found is not None:
            return found
        for entry in self.masked:
            if entry.matches(tag):
                return entry.action
        return None

    def __len__(self) -> int:
        return len(self.exact) + len(self.masked)


def _editions() -> list[str]:
    try:
        package = importlib.import_module(_TABLES_PACKAGE)
    except ImportError as exc:  # a broken install must not look like "nothing to remove"
        raise VnaError(f"the PS3.15 attribute table is not installed: {exc}") from exc
    names = [m.name for m in pkgutil.iter_modules(package.__path__)]
    # editions are named by year and letter (2023, 2024b, 2026c): they sort as text
    return sorted(n for n in names if n.startswith("dicomfields_"))


def _build(edition: str) -> Profile:
    module = importlib.import_module(f"{_TABLES_PACKAGE}.{edition}")
    exact: dict[int, Action] = {}
    masked: list[MaskedEntry] = []
    for name, action in _CATEGORIES.items():
        for entry in getattr(module, name):
            if len(entry) == 2:
                exact[(entry[0] << 16) | entry[1]] = action
            else:
                group, elem, gmask, emask = entry
                mask = (gmask << 16) | emask
                masked.append(MaskedEntry((group << 16) | elem, mask, action))
    if len(exact) < 500:  # Table E.1-1 lists over 600 attributes since 2020
        raise VnaError(f"the PS3.15 attribute table {edition} looks truncated ({len(exact)})")
    return Profile(edition, exact, tuple(masked))


@cache
def basic_profile(edition: str | None = None) -> Profile:
    """The Basic Profile table, of the newest edition installed unless one is named."""
    editions = _editions()
    if not editions:
        raise VnaError("the PS3.15 attribute table is not installed")
    if edition is None:
        edition = editions[-1]
    elif edition not in editions:
        raise VnaError(f"no PS3.15 attribute table {edition}; installed: {', '.join(editions)}")
    return _build(edition)
