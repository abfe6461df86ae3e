"""PS3.15 de-identification for shares (Basic Application Level Confidentiality
Profile, Annex E), of files, datasets and DICOM JSON alike.

    deid = Deidentifier(key)                 # one per share
    deid.part10(data) -> bytes               # a stored file, de-identified
    deid.json(metadata) -> dict              # QIDO rows / instance metadata
    deid.refusal(metadata) -> str | None     # must this one stay out of the share?

Synchronous: async callers run these in a thread.
"""

from vna.deid.deidentifier import Deidentifier, Refused
from vna.deid.profile import Action, Profile, basic_profile
from vna.deid.refusal import refusal

__all__ = ["Action", "Deidentifier", "Profile", "Refused", "basic_profile", "refusal"]
