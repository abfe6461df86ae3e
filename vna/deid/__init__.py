"""PS3.15 de-identification for shares (Basic Application Level Confidentiality
Profile, Annex E), of files, datasets and DICOM JSON alike.

    deid = Deidentifier(key)                 # one per share: same key, same values
    deid.part10(data) -> bytes               # a stored file, de-identified
    deid.header(head) -> (bytes, offset)     # a large file's header, pixels streamed after
    deid.json(metadata) -> dict              # QIDO rows / instance metadata
    deid.refusal(metadata) -> str | None     # must this one stay out of the share?
    deid.uid(uid) / deid.originals(uids)     # the remap, and the way back for routes
    deid.slide(slide_record) -> SlideRecord  # a non-DICOM slide's row; HIDDEN_ASSOCIATED_IMAGES

Synchronous: async callers run these in a thread.
"""

from vna.deid.deidentifier import Deidentifier, Refused
from vna.deid.profile import Action, Profile, basic_profile
from vna.deid.refusal import refusal
from vna.deid.slides import HIDDEN_ASSOCIATED_IMAGES

__all__ = [
    "HIDDEN_ASSOCIATED_IMAGES",
    "Action",
    "Deidentifier",
    "Profile",
    "Refused",
    "basic_profile",
    "refusal",
]
