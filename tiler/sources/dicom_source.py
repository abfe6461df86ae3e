"""DICOM WSI (VL Whole Slide Microscopy, TILED_FULL and TILED_SPARSE) through wsidicom.

JPEG baseline frames are whole JPEG streams already, so level 0 is passed through
(marked with Adobe APP14 when the photometric interpretation says RGB).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from wsidicom import WsiDicom

from tiler.jpeg import adobe_transform, mark_rgb, set_colour_transform
from tiler.sources.base import WHITE, SourceLevel
from vna.errors import SlideError

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


def _first(ds: Any, attr: str) -> Any:
    try:
        return getattr(ds.OpticalPathSequence[0], attr, None)
    except (AttributeError, IndexError):
        return None


class DicomSource:
    vendor = "dicom"

    def __init__(self, files: list[str]) -> None:
        try:
            self._wsi = WsiDicom.open(files)
            base = self._wsi.levels.base_level
            ds = base.datasets[0]
        except Exception as exc:  # wsidicom raises many kinds (no valid files, bad tags...)
            raise SlideError(f"cannot open DICOM WSI: {exc}") from exc
        if int(ds.get("SamplesPerPixel", 0)) != 3 or int(ds.get("BitsAllocated", 8)) != 8:
            raise SlideError("only brightfield RGB slides are supported (samples per pixel != 3)")
        if len(base.focal_planes) > 1 or len(base.optical_paths) > 1:
            raise SlideError(
                "multiple focal planes or optical paths (fluorescence) are not supported"
            )
        self._levels = list(self._wsi.levels)
        self.levels = [
            SourceLevel(lv.size.width, lv.size.height, float(2**lv.level)) for lv in self._levels
        ]
        self.dimensions = (self._wsi.size.width, self._wsi.size.height)
        ts = self._wsi.tile_size
        self.tile_size = ts.width if ts.width == ts.height else None
        mpp = self._wsi.mpp
        self.mpp = (float(mpp.width), float(mpp.height)) if mpp is not None else (None, None)
        power = _first(ds, "ObjectiveLensPower")
        self.objective_power = float(power) if power not in (None, "") else None
        self.background = WHITE
        icc = _first(ds, "ICCProfile")
        self.icc_profile = bytes(icc) if icc else None
        self.properties = self._properties(ds)
        image_data = base.default_instance.image_data
        self._jpeg = str(image_data.transfer_syntax) == JPEG_BASELINE
        self._rgb = str(image_data.photometric_interpretation) == "RGB"

    @staticmethod
    def _properties(ds: Any) -> dict[str, str]:
        keys = (
            "Manufacturer",
            "ManufacturerModelName",
            "DeviceSerialNumber",
            "SoftwareVersions",
            "StudyInstanceUID",
            "SeriesInstanceUID",
            "ContainerIdentifier",
            "PhotometricInterpretation",
            "DimensionOrganizationType",
        )
        return {f"dicom.{k}": str(ds.get(k)) for k in keys if ds.get(k) not in (None, "")}

    def associated_names(self) -> list[str]:
        names = ["thumbnail"]
        if self._wsi.labels:
            names.append("label")
        if self._wsi.overviews:
            names.append("macro")
        return names

    def associated_image(self, name: str) -> np.ndarray:
        try:
            if name == "label":
                img = self._wsi.read_label()
            elif name == "macro":
                img = self._wsi.read_overview()
            elif name == "thumbnail":
                img = self._wsi.read_thumbnail((768, 768))
            else:
                raise SlideError(f"no associated image {name!r}")
        except SlideError:
            raise
        except Exception as exc:
            raise SlideError(f"cannot read {name} image: {exc}") from exc
        return np.asarray(img.convert("RGB"))

    def read_region(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        try:
            img = self._wsi.read_region((x, y), self._levels[level].level, (width, height))
        except Exception as exc:
            raise SlideError(f"cannot read DICOM WSI region: {exc}") from exc
        return np.asarray(img.convert("RGB"))

    def raw_tile(self, level: int, col: int, row: int) -> bytes | None:
        if level != 0 or not self._jpeg:
            return None
        try:
            data = self._wsi.read_encoded_tile(0, (col, row), crop_to_image_boundary=False)
        except Exception:  # absent in a TILED_SPARSE instance: read_region fills it
            return None
        if self._rgb:
            return mark_rgb(data)
        if adobe_transform(data) == 0:
            # YBR frames claiming RGB: opentile (under wsidicomizer) adds that marker to every
            # SVS tile, YCbCr ones too; DICOM's PhotometricInterpretation is the truth.
            return set_colour_transform(data, 1)
        return data

    def close(self) -> None:
        self._wsi.close()
