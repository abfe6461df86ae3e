"""The synthetic test-data module: deterministic, valid, realistic enough."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from vna.dicom import valid_uid
from vna.testdata import dicom as td


def test_generators_are_deterministic() -> None:
    for make in (td.make_ct, td.make_mr, td.make_us_multiframe):
        assert td.to_bytes(make(seed=3)) == td.to_bytes(make(seed=3))
        assert td.to_bytes(make(seed=3)) != td.to_bytes(make(seed=4))


def test_study_structure() -> None:
    study = td.make_study(seed=5, modalities=("CT", "MR", "US"), n_instances=3)
    assert len(study) == 3 + 3 + 1
    assert len({ds.StudyInstanceUID for ds in study}) == 1
    assert len({ds.SeriesInstanceUID for ds in study}) == 3
    assert len({ds.SOPInstanceUID for ds in study}) == len(study)
    for ds in study:
        for uid in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.SOPClassUID):
            assert valid_uid(uid)
        assert ds.AccessionNumber and ds.StudyDate and ds.InstitutionName
        back = pydicom.dcmread(io.BytesIO(td.to_bytes(ds)))
        assert back.PatientName == ds.PatientName
    assert [ds.Modality for ds in study] == ["CT"] * 3 + ["MR"] * 3 + ["US"]


@pytest.mark.parametrize("ts", [JPEGLosslessSV1, JPEGLSLossless, JPEG2000Lossless, RLELossless])
def test_compressed_variants_keep_the_pixels(ts: str) -> None:
    for native in (td.make_ct(seed=6), td.make_us_multiframe(seed=6, frames=3)):
        ds = td.compressed(native, ts)
        back = pydicom.dcmread(io.BytesIO(td.to_bytes(ds)))
        assert back.file_meta.TransferSyntaxUID == ts
        assert np.array_equal(back.pixel_array, native.pixel_array)


def test_ct_phantom_has_realistic_hounsfield_units() -> None:
    ds = td.make_ct(seed=0, rows=128, cols=128)
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert hu.min() < -950  # air
    assert ((hu > -900) & (hu < -700)).mean() > 0.05  # lungs
    assert hu.max() > 600  # bone


def test_demo_study(tmp_path: Path) -> None:
    paths = td.demo_study(tmp_path, ct_slices=4, mr_slices=3, size=64)
    assert len(paths) == 7 and all(p.is_file() for p in paths)
    series = {pydicom.dcmread(p).SeriesInstanceUID for p in paths}
    assert len(series) == 2


def test_bad_input_helpers() -> None:
    data = td.to_bytes(td.make_ct())
    cut = td.truncated(data)
    assert len(data) // 2 < len(cut) < len(data)
    assert td.not_dicom()[128:132] != b"DICM"
    bad = td.with_value(td.make_ct(), "SOPInstanceUID", "1.2/3")
    assert bad.SOPInstanceUID == "1.2/3" and bad.file_meta.MediaStorageSOPInstanceUID == "1.2/3"
    assert "StudyInstanceUID" not in td.with_value(td.make_ct(), "StudyInstanceUID", None)
    assert td.without_file_meta(td.make_ct())[128:132] != b"DICM"


def test_pydicom_corpus_is_available() -> None:
    files = td.pydicom_test_files()
    assert len(files) > 100 and all(Path(f).is_file() for f in files)


def test_jpeg_baseline_variants_stay_close() -> None:
    for native in (td.make_sc(seed=7), td.make_us_multiframe(seed=7, frames=2)):
        ds = td.compressed(native, JPEGBaseline8Bit)
        back = pydicom.dcmread(io.BytesIO(td.to_bytes(ds)))
        error = np.abs(back.pixel_array.astype(float) - native.pixel_array).mean()
        assert back.LossyImageCompression == "01" and error < 10
    with pytest.raises(ValueError):
        td.compressed(td.make_ct(), JPEGBaseline8Bit)  # 16-bit: no baseline
