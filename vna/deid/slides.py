"""De-identified views of whole-slide images that are not DICOM (SVS, NDPI...,
pyramids the tiler built): their index row and which of their images may show.

The slide label and the macro (overview) image photograph the glass slide's
label, with the patient's name or barcode on it: a de-identified share never
serves them.  Vendor properties (scanner metadata, often with file paths,
operator names, barcodes and dates) are dropped whole; what a viewer needs
(size, levels, tile size, microns per pixel) are fields of their own and stay.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from vna.index.base import SlideRecord

if TYPE_CHECKING:
    from vna.deid.deidentifier import Deidentifier

# associated images (vna.slides.views.ASSOCIATED) a de-identified share refuses
HIDDEN_ASSOCIATED_IMAGES = frozenset({"label", "macro"})


def deidentify_slide(deid: Deidentifier, rec: SlideRecord) -> SlideRecord:
    """A copy of ``rec`` as a de-identified share shows it."""
    patient = None, None
    if rec.patient_id or rec.patient_name:
        patient = deid.pseudonym(rec.patient_id or "")
    code = deid.pseudonym(f"slide:{rec.id}")[1][4:]  # a keyed tag for the name
    return dataclasses.replace(
        rec,
        name=f"Slide {code}",
        source="",
        reason="",
        properties={},
        patient_name=patient[0],
        patient_id=patient[1],
        study_instance_uid=deid.uid(rec.study_instance_uid) if rec.study_instance_uid else None,
        series_instance_uid=deid.uid(rec.series_instance_uid) if rec.series_instance_uid else None,
        accession_number=None,
        specimen=None,
        created_at=0.0,
        site=None,
    )
