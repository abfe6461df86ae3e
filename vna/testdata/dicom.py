"""Synthetic DICOM instances, deterministic from a seed.

Everything here is built with pydicom and numpy only (plus imagecodecs to make the
compressed variants), independently of ``vna.dicom``, so the tests compare vna's
parser and codecs against data it did not produce itself.

    ds = make_ct(seed=3)                       # one CT slice, Explicit VR LE
    ds = compressed(make_ct(), JPEGLosslessSV1) # same pixels, encapsulated
    study = make_study(seed=1, n_series=2, n_instances=4)
    write(ds, "/tmp/x.dcm"); data = to_bytes(ds)
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import random
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import imagecodecs
import numpy as np
from pydicom import config as _config
from pydicom.data import get_testdata_files
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, encapsulate_extended
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from vna.testdata.phantoms import chest_hu, head_t2

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
US_MULTIFRAME_STORAGE = "1.2.840.10008.5.1.4.1.1.3.1"
SC_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"

# Names in the character sets a VNA meets in practice; the Korean and Japanese
# ones are the examples of PS3.5 Annex H / I, so their decoding is well known.
PATIENTS: list[tuple[str, str, str, str]] = [
    # (PatientID, PatientName, SpecificCharacterSet, sex)
    ("PAT-0001", "Doe^John", "", "M"),
    ("PAT-0002", "Müller^Jürgen", "ISO_IR 100", "M"),
    ("PAT-0003", "Hong^Gildong=洪^吉洞=홍^길동", "\\ISO 2022 IR 149", "M"),
    ("PAT-0004", "Yamada^Tarou=山田^太郎=やまだ^たろう", "\\ISO 2022 IR 87", "M"),
    ("PAT-0005", "Çelik^Ayşe^Zoë", "ISO_IR 192", "F"),
    ("PAT-0006", "Smith^Jane^Q^Dr.", "", "F"),
]

STUDY_DESCRIPTIONS = ["CT CHEST W/O CONTRAST", "MR BRAIN W/WO", "CT ABDOMEN PELVIS", "US ABDOMEN"]
INSTITUTIONS = ["General Hospital", "St. Mary Clinic", "University Medical Center"]


def uid(*parts: object) -> str:
    """A deterministic UID under 2.25 (UUID-derived root, PS3.5 B.2) from parts."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:16]
    return "2.25." + str(int.from_bytes(digest, "big"))


@dataclass(slots=True)
class Context:
    """The patient / study / series attributes shared by the instances of a series."""

    seed: int = 0
    patient_id: str = "PAT-0001"
    patient_name: str = "Doe^John"
    charset: str = ""
    sex: str = "M"
    birth_date: str = "19700101"
    study_uid: str = ""
    study_date: str = "20240102"
    study_time: str = "101500"
    accession: str = "ACC0001"
    study_description: str = "CT CHEST W/O CONTRAST"
    study_id: str = "1"
    institution: str = "General Hospital"
    referring: str = "Referring^Rita"
    series_uid: str = ""
    series_number: int = 1
    series_description: str = "Axial 5mm"


def context(seed: int = 0, *, patient: int | None = None, series_number: int = 1) -> Context:
    """A realistic context for ``seed``; ``patient`` picks an entry of PATIENTS."""
    rnd = random.Random(seed)
    pid, name, charset, sex = PATIENTS[seed % len(PATIENTS) if patient is None else patient]
    day = _dt.date(2020, 1, 1) + _dt.timedelta(days=rnd.randrange(1500))
    return Context(
        seed=seed,
        patient_id=pid,
        patient_name=name,
        charset=charset,
        sex=sex,
        birth_date=f"{rnd.randrange(1930, 2015)}{rnd.randrange(1, 13):02d}{rnd.randrange(1, 29):02d}",
        study_uid=uid("study", seed),
        study_date=day.strftime("%Y%m%d"),
        study_time=f"{rnd.randrange(7, 19):02d}{rnd.randrange(60):02d}00",
        accession=f"ACC{seed:04d}{rnd.randrange(1000):03d}",
        study_description=rnd.choice(STUDY_DESCRIPTIONS),
        study_id=str(seed + 1),
        institution=rnd.choice(INSTITUTIONS),
        series_uid=uid("series", seed, series_number),
        series_number=series_number,
    )


def _base(ctx: Context, sop_class: str, sop_uid: str, modality: str, number: int) -> Dataset:
    ds = Dataset()
    if ctx.charset:
        ds.SpecificCharacterSet = ctx.charset.split("\\") if "\\" in ctx.charset else ctx.charset
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ctx.study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = ctx.study_time
    ds.AccessionNumber = ctx.accession
    ds.Modality = modality
    ds.Manufacturer = "VNA Synthetic"
    ds.InstitutionName = ctx.institution
    ds.ReferringPhysicianName = ctx.referring
    ds.StudyDescription = ctx.study_description
    ds.SeriesDescription = ctx.series_description
    ds.PatientName = ctx.patient_name
    ds.PatientID = ctx.patient_id
    ds.PatientBirthDate = ctx.birth_date
    ds.PatientSex = ctx.sex
    ds.StudyInstanceUID = ctx.study_uid
    ds.SeriesInstanceUID = ctx.series_uid
    ds.StudyID = ctx.study_id
    ds.SeriesNumber = ctx.series_number
    ds.InstanceNumber = number
    return ds


def _set_file_meta(ds: Dataset, ts: str = ExplicitVRLittleEndian) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(ts)
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.8.498.1"
    meta.ImplementationVersionName = "VNA_TESTDATA"
    ds.file_meta = meta
    return ds


def _set_pixels(ds: Dataset, arr: np.ndarray, photometric: str, bits_stored: int) -> None:
    """Set native pixel data from ``arr`` shaped (frames, rows, cols[, 3]) or (rows, cols[, 3])."""
    color = photometric == "RGB"
    if arr.ndim == (3 if color else 2):
        arr = arr[None]
    ds.SamplesPerPixel = 3 if color else 1
    ds.PhotometricInterpretation = photometric
    if color:
        ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = arr.shape[1], arr.shape[2]
    ds.BitsAllocated = arr.dtype.itemsize * 8
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if arr.dtype.kind == "i" else 0
    if arr.shape[0] > 1:
        ds.NumberOfFrames = arr.shape[0]
    data = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
    ds.PixelData = data + (b"\0" if len(data) % 2 else b"")
    ds["PixelData"].VR = "OW" if ds.BitsAllocated > 8 else "OB"


phantom_hu = chest_hu  # kept under its first name


def make_ct(
    seed: int = 0,
    *,
    index: int = 0,
    count: int = 1,
    rows: int = 64,
    cols: int = 64,
    ctx: Context | None = None,
    ts: str = ExplicitVRLittleEndian,
) -> Dataset:
    """One CT slice (signed 16-bit, HU = stored - 1024) of a synthetic chest phantom."""
    ctx = ctx or context(seed)
    ds = _base(
        ctx, CT_IMAGE_STORAGE, uid("ct", ctx.study_uid, ctx.series_uid, index), "CT", index + 1
    )
    z = -0.9 + 1.8 * index / max(1, count - 1) if count > 1 else 0.0
    hu = phantom_hu(rows, cols, z)
    _set_pixels(ds, np.clip(hu + 1024, -1024, 3071).astype("<i2"), "MONOCHROME2", 12)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
    ds.WindowCenter, ds.WindowWidth = [40, -600], [400, 1500]
    ds.SliceThickness = 5
    ds.PixelSpacing = [round(350 / cols, 4), round(350 / rows, 4)]
    ds.ImagePositionPatient = [-175, -175, round(-50 + 5 * index, 2)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceLocation = ds.ImagePositionPatient[2]
    ds.KVP, ds.BodyPartExamined = 120, "CHEST"
    return _set_file_meta(ds, ts)


def make_mr(
    seed: int = 0,
    *,
    index: int = 0,
    count: int = 1,
    rows: int = 64,
    cols: int = 64,
    ctx: Context | None = None,
    ts: str = ExplicitVRLittleEndian,
) -> Dataset:
    """One MR slice (unsigned 16-bit, 12 bits stored) of a head-like phantom."""
    ctx = ctx or context(seed)
    ds = _base(
        ctx, MR_IMAGE_STORAGE, uid("mr", ctx.study_uid, ctx.series_uid, index), "MR", index + 1
    )
    z = -0.8 + 1.6 * index / max(1, count - 1) if count > 1 else 0.0
    img = head_t2(rows, cols, z)
    _set_pixels(ds, img.astype("<u2"), "MONOCHROME2", 12)
    ds.ScanningSequence, ds.SequenceVariant = "SE", "NONE"
    ds.MagneticFieldStrength, ds.EchoTime, ds.RepetitionTime = 3, 90, 4000
    ds.WindowCenter, ds.WindowWidth = 800, 1600
    ds.PixelSpacing = [round(240 / rows, 4), round(240 / cols, 4)]
    ds.SliceThickness = 4
    ds.ImagePositionPatient = [-120, -120, round(-40 + 4 * index, 2)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.BodyPartExamined = "HEAD"
    return _set_file_meta(ds, ts)


def make_us_multiframe(
    seed: int = 0,
    *,
    frames: int = 6,
    rows: int = 48,
    cols: int = 64,
    ctx: Context | None = None,
    ts: str = ExplicitVRLittleEndian,
) -> Dataset:
    """An RGB 8-bit ultrasound cine loop of ``frames`` frames (a moving bright arc)."""
    ctx = ctx or context(seed)
    ds = _base(ctx, US_MULTIFRAME_STORAGE, uid("us", ctx.study_uid, ctx.series_uid, seed), "US", 1)
    y, x = np.mgrid[0:rows, 0:cols]
    r = np.hypot(x - cols / 2, y + rows * 0.2)
    rng = np.random.default_rng(seed)
    out = np.zeros((frames, rows, cols, 3), np.uint8)
    for f in range(frames):
        speckle = rng.gamma(2.0, 30.0, (rows, cols))
        arc = np.exp(-(((r - rows * (0.5 + 0.3 * f / frames)) / 3.0) ** 2)) * 180
        gray = np.clip(speckle * (r < rows * 1.1) + arc, 0, 255)
        out[f] = np.stack([gray, gray * 0.9, gray * 0.7 + 20 * (f % 2)], -1).astype(np.uint8)
    _set_pixels(ds, out, "RGB", 8)
    ds.NumberOfFrames = frames
    ds.FrameTime = 33.3
    ds.FrameIncrementPointer = 0x00181063
    return _set_file_meta(ds, ts)


def make_sc(
    seed: int = 0,
    *,
    rows: int = 64,
    cols: int = 64,
    ctx: Context | None = None,
    ts: str = ExplicitVRLittleEndian,
) -> Dataset:
    """An 8-bit grayscale Secondary Capture (a windowed phantom slice): the
    grayscale source for JPEG Baseline variants."""
    ctx = ctx or context(seed)
    ds = _base(ctx, SC_IMAGE_STORAGE, uid("sc", ctx.study_uid, ctx.series_uid, seed), "OT", 1)
    hu = phantom_hu(rows, cols, 0.0)
    _set_pixels(ds, np.clip((hu + 160) * (255 / 400), 0, 255).astype(np.uint8), "MONOCHROME2", 8)
    ds.ConversionType = "WSD"
    return _set_file_meta(ds, ts)


# -- compressed variants --------------------------------------------------------


def _frames(ds: Dataset) -> list[np.ndarray]:
    arr = ds.pixel_array
    n = int(getattr(ds, "NumberOfFrames", 1) or 1)
    return [arr] if n == 1 else list(arr)


def _encode(frame: np.ndarray, ds: Dataset, ts: str) -> bytes:
    if frame.dtype.kind == "i":  # codecs take the unsigned bit pattern
        frame = frame.view(frame.dtype.str.replace("i", "u"))
    if ts == JPEGBaseline8Bit:
        if frame.dtype.itemsize != 1:
            raise ValueError("JPEG Baseline needs 8-bit samples")
        color = frame.ndim == 3
        return bytes(
            imagecodecs.jpeg8_encode(frame, level=92, subsampling="422" if color else None)
        )
    if ts == JPEGLosslessSV1:
        bits = 8 if frame.dtype.itemsize == 1 else 16
        return bytes(
            imagecodecs.jpeg8_encode(frame, lossless=True, predictor=1, bitspersample=bits)
        )
    if ts == JPEGLSLossless:
        return bytes(imagecodecs.jpegls_encode(frame, level=0))
    if ts == JPEG2000Lossless:
        return bytes(
            imagecodecs.jpeg2k_encode(frame, level=0, codecformat="J2K", reversible=True, mct=False)
        )
    raise ValueError(f"testdata cannot encode {UID(ts).name}")


def compressed(
    ds: Dataset, ts: str, *, fragments_per_frame: int = 1, bot: bool = True, eot: bool = False
) -> Dataset:
    """A copy of native ``ds`` with its frames encoded in ``ts`` and encapsulated.

    ``fragments_per_frame`` > 1 splits each frame's codestream over several fragments;
    ``bot`` fills the Basic Offset Table; ``eot`` adds an Extended Offset Table (and
    leaves the BOT empty, as PS3.5 A.4 requires).
    """
    out = copy.deepcopy(ds)
    if ts == RLELossless:
        out.compress(RLELossless, generate_instance_uid=False)
        frames = _split_fragments(out)
    else:
        frames = [_encode(f, ds, ts) for f in _frames(ds)]
    if eot:
        out.PixelData, out.ExtendedOffsetTable, out.ExtendedOffsetTableLengths = (
            encapsulate_extended(frames)
        )
    else:
        out.PixelData = encapsulate(frames, fragments_per_frame=fragments_per_frame, has_bot=bot)
    out["PixelData"].VR = "OB"
    out["PixelData"].is_undefined_length = True
    out.file_meta.TransferSyntaxUID = UID(ts)
    if ts == JPEGBaseline8Bit:
        out.LossyImageCompression = "01"
        if ds.SamplesPerPixel == 3:
            out.PhotometricInterpretation = "YBR_FULL_422"
    return out


def _split_fragments(ds: Dataset) -> list[bytes]:
    from pydicom.encaps import generate_frames

    n = int(getattr(ds, "NumberOfFrames", 1) or 1)
    return list(generate_frames(ds.PixelData, number_of_frames=n))


# -- studies --------------------------------------------------------------------


def make_study(
    seed: int = 0,
    *,
    modalities: tuple[str, ...] = ("CT", "MR"),
    n_instances: int = 4,
    rows: int = 64,
    cols: int = 64,
    patient: int | None = None,
) -> list[Dataset]:
    """One study: a series per entry of ``modalities`` ("CT", "MR" or "US")."""
    out: list[Dataset] = []
    for number, modality in enumerate(modalities, start=1):
        ctx = context(seed, patient=patient, series_number=number)
        ctx.series_description = {"CT": "Axial 5mm", "MR": "T2 axial", "US": "Cine"}[modality]
        if modality == "US":
            out.append(make_us_multiframe(seed, ctx=ctx))
            continue
        maker = make_ct if modality == "CT" else make_mr
        out += [
            maker(seed, index=i, count=n_instances, rows=rows, cols=cols, ctx=ctx)
            for i in range(n_instances)
        ]
    return out


def write(ds: Dataset, path: str | Path) -> Path:
    """Write ``ds`` as a Part-10 file (preamble, file meta) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(to_bytes(ds))
    return path


def to_bytes(ds: Dataset) -> bytes:
    """``ds`` as Part-10 bytes."""
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def demo_study(
    directory: str | Path, *, ct_slices: int = 20, mr_slices: int = 12, size: int = 256
) -> list[Path]:
    """Write a small study that renders like one: a chest CT and a head MR series."""
    directory = Path(directory)
    paths: list[Path] = []
    for number, (maker, count, desc) in enumerate(
        [(make_ct, ct_slices, "Chest axial 5mm"), (make_mr, mr_slices, "Head T2 axial")], start=1
    ):
        ctx = context(2024, patient=0, series_number=number)
        ctx.patient_name, ctx.patient_id = "Demo^Patient", "DEMO-001"
        ctx.study_description, ctx.series_description = "CT CHEST + MR HEAD (demo)", desc
        for i in range(count):
            ds = maker(2024, index=i, count=count, rows=size, cols=size, ctx=ctx)
            paths.append(write(ds, directory / f"series{number}" / f"{i + 1:04d}.dcm"))
    return paths


def pydicom_test_files() -> list[str]:
    """Every DICOM-ish file shipped in the pydicom wheel (a real-world corpus)."""
    return sorted(f for f in get_testdata_files() if Path(f).is_file() and not f.endswith(".py"))


# -- bad input ------------------------------------------------------------------


def truncated(data: bytes, at: int | None = None) -> bytes:
    """``data`` cut at ``at``, by default in the middle of its Pixel Data value."""
    if at is None:
        tag = data.rfind(b"\xe0\x7f\x10\x00")
        at = (tag + len(data)) // 2 if tag > 0 else len(data) * 3 // 4
    return data[:at]


def pixels_lost(data: bytes, pixel_bytes: int) -> bytes:
    """``data`` with its last ``pixel_bytes`` (the Pixel Data value, which ends the
    instances made here) zeroed: the right length, the data never written, as a
    power cut can leave a file named before it was flushed."""
    return data[:-pixel_bytes] + bytes(pixel_bytes)


def not_dicom() -> bytes:
    """Bytes that are plainly not DICOM (a PNG signature and some text)."""
    return b"\x89PNG\r\n\x1a\n" + b"this is not a DICOM file " * 20


def with_value(ds: Dataset, keyword: str, value: object) -> Dataset:
    """A copy of ``ds`` with ``keyword`` set to ``value`` (which may be invalid, e.g.
    a UID with '/' or '..'), or deleted when ``value`` is None."""
    out = copy.deepcopy(ds)
    with _config.disable_value_validation():
        if value is None:
            delattr(out, keyword)
        else:
            setattr(out, keyword, value)
        if keyword == "SOPInstanceUID" and value is not None:
            out.file_meta.MediaStorageSOPInstanceUID = value
    return out


def without_file_meta(ds: Dataset) -> bytes:
    """``ds`` encoded without preamble nor file meta (like some old files)."""
    buf = BytesIO()
    out = copy.deepcopy(ds)
    out.file_meta = FileMetaDataset()
    out.save_as(buf, implicit_vr=True, little_endian=True, enforce_file_format=False)
    return buf.getvalue()


__all__ = [
    "ImplicitVRLittleEndian",
    "Context",
    "compressed",
    "context",
    "demo_study",
    "make_ct",
    "make_mr",
    "make_sc",
    "make_study",
    "make_us_multiframe",
    "not_dicom",
    "pydicom_test_files",
    "to_bytes",
    "truncated",
    "uid",
    "with_value",
    "without_file_meta",
    "write",
]
