"""PS3.15 Basic Profile de-identification (vna.deid), checked against the whole
Table E.1-1: a dataset carrying every attribute the table lists, each with a
value of its own, goes through the files, datasets and DICOM JSON paths, and
each attribute must come out as the profile's action says.
"""

from __future__ import annotations

import importlib
import re
import warnings
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom import Dataset, dcmread
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import FileMetaDataset
from pydicom.tag import Tag
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from vna.deid import HIDDEN_ASSOCIATED_IMAGES, Action, Deidentifier, Refused, basic_profile
from vna.deid.rules import MEDIA_KEYS
from vna.errors import InvalidDicom, VnaError
from vna.index.base import SlideRecord
from vna.testdata import dicom as td

UID_RE = re.compile(r"2\.25\.(0|[1-9][0-9]*)")
REFERENCED_SOP_INSTANCE_UID = 0x00081155
PATIENT_NAME, PATIENT_ID = 0x00100010, 0x00100020
REMOVES = {Action.X}
EMPTIES = {Action.Z, Action.XZ}
DUMMIES = {Action.D, Action.ZD, Action.XD, Action.XZD}


# -- a dataset with every attribute of the table -----------------------------------
def marker(tag: int) -> str:
    """A value no other attribute has, findable in the output bytes."""
    return f"S{tag:08X}"


def planted_uid(tag: int) -> str:
    return f"1.2.826.0.1.99.{tag}"


def _vr(tag: int) -> str:
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return "UN"  # the table is newer than pydicom's dictionary
    return vr.split(" or ")[0]  # "US or SS", "OB or OW": either will do


def _value(tag: int, vr: str) -> Any:
    text = {
        "DA": "20210305",
        "TM": "101112",
        "DT": "20210305101112",
        "AS": "045Y",
        "IS": "7",
        "DS": "7.5",
        "PN": marker(tag) + "^Given",
        "UI": planted_uid(tag),
        "UR": f"http://example.org/{marker(tag)}",
        "AT": 0x00100010,
    }
    if vr in text:
        return text[vr]
    if vr in ("US", "SS", "UL", "SL", "UV", "SV"):
        return 7
    if vr in ("FL", "FD"):
        return 7.5
    if vr in ("OB", "OW", "OF", "OD", "OL", "OV", "UN"):
        return (marker(tag) + " ").encode()  # even length
    return marker(tag)  # every text VR holds 9 characters


def _item(tag: int) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = td.CT_IMAGE_STORAGE
    item.ReferencedSOPInstanceUID = planted_uid(tag)
    if basic_profile().action(tag) is not Action.XZU:
        item.CodeMeaning = marker(tag)  # not in the table: must go with its sequence
    return item


def table_tags() -> list[int]:
    """Every exact tag of Table E.1-1 outside the file meta and command groups."""
    return sorted(t for t in basic_profile().exact if t >> 16 not in (0x0000, 0x0002))


def planted(extra_private: bool = True) -> Dataset:
    """A CT instance carrying every attribute of the table (plus private ones)."""
    ds = td.make_ct(seed=5)
    for tag in table_tags():
        vr = _vr(tag)
        value = [_item(tag)] if vr == "SQ" else _value(tag, vr)
        ds[tag] = DataElement(tag, vr, value)
    ds.SOPClassUID = td.CT_IMAGE_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if extra_private:
        _add_private(ds)
        _add_private(ds.ReferencedImageSequence[0])  # inside a sequence that is kept
    ds.add_new(0x50000010, "US", 7)  # Curve data (50xx,xxxx)
    ds.add_new(0x60003000, "OW", b"\x01\x02")  # Overlay Data
    ds.add_new(0x60004000, "LT", marker(0x60004000))  # Overlay Comments
    return ds


def _add_private(ds: Dataset) -> None:
    block = ds.private_block(0x0011, "VNA TEST", create=True)
    block.add_new(0x01, "LO", "S-PRIVATE-1")


def walk(ds: Dataset) -> Iterator[DataElement]:
    for elem in ds:
        yield elem
        if elem.VR == "SQ":
            for item in elem.value:
                yield from walk(item)


def _empty(elem: DataElement) -> bool:
    if elem.VR == "SQ":
        return len(elem.value) == 0
    return elem.VM == 0 or elem.value in ("", None, b"")


def check_attribute(deid: Deidentifier, out: Dataset, tag: int, original: Any) -> None:
    """The profile's action for ``tag`` was applied to ``out`` (a de-identified
    dataset whose source had ``original`` as the tag's value)."""
    action = basic_profile().action(tag)
    assert action is not None
    if tag in (PATIENT_NAME, PATIENT_ID):
        assert str(out[tag].value).startswith(("Anonymous^", "ANON")), tag
        return
    if action in REMOVES:
        assert tag not in out, f"{Tag(tag)} should be removed"
        return
    if tag not in out:
        assert action is not Action.U, f"{Tag(tag)} should be remapped, not removed"
        return  # X is allowed by every combined code with X
    elem = out[tag]
    if action in EMPTIES and tag in MEDIA_KEYS:  # Z's dummy, for media readers
        assert elem.value and elem.value != original and marker(tag) not in str(elem.value)
    elif action in EMPTIES:
        assert _empty(elem), f"{Tag(tag)} should be empty, is {elem.value!r}"
    elif elem.VR == "UI":
        assert elem.value == deid.uid(str(original)), f"{Tag(tag)} not remapped"
        assert UID_RE.fullmatch(elem.value) and len(elem.value) <= 64
    elif elem.VR == "SQ" and action is Action.XZU:
        assert len(elem.value) == len(original)
        for item, source_item in zip(elem.value, original, strict=True):
            ref = item.ReferencedSOPInstanceUID
            expected = deid.uid(source_item.ReferencedSOPInstanceUID)
            assert ref == expected, f"{Tag(tag)} reference not remapped"
    elif elem.VR == "SQ":
        assert len(elem.value) == 0, f"{Tag(tag)} sequence should be emptied"
    else:
        assert action in DUMMIES, (Tag(tag), action)
        assert elem.value != original and marker(tag) not in str(elem.value), Tag(tag)


def check_profile(deid: Deidentifier, out: Dataset, source: Dataset) -> None:
    """Every attribute of the table, top level and nested, and the marks."""
    for tag in table_tags():
        if tag in source:
            check_attribute(deid, out, tag, source[tag].value)
    for elem in walk(out):
        assert not elem.tag.is_private, f"private {elem.tag} left"
        assert elem.tag.group & 0xFF00 != 0x5000, "curve data left"
        assert elem.tag not in (0x60003000, 0x60004000), "overlay data left"
    assert out.PatientIdentityRemoved == "YES"
    code = out.DeidentificationMethodCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator) == ("113100", "DCM")


def leaks(data: bytes | str, source: Dataset) -> list[str]:
    """Planted markers and original UIDs found in ``data``."""
    blob = data.encode() if isinstance(data, str) else data
    needles = [marker(t) for t in table_tags()] + [planted_uid(t) for t in table_tags()]
    needles += ["S-PRIVATE-1", source.SOPInstanceUID, source.StudyInstanceUID]
    return [n for n in needles if n.encode() in blob]


# -- the table itself ----------------------------------------------------------------
def test_the_table_is_the_whole_profile() -> None:
    profile = basic_profile()
    # read the library's lists independently of vna's loader
    module = importlib.import_module(
        f"dicomanonymizer.dicom_anonymization_databases.{profile.edition}"
    )
    listed = {
        (e[0] << 16) | e[1]
        for name in dir(module)
        if name.endswith("_TAGS")
        for e in getattr(module, name)
        if len(e) == 2 and name != "ALL_TAGS"
    }
    assert listed == set(profile.exact)
    assert len(profile.exact) > 600
    expected = {
        "PatientName": Action.Z,
        "PatientBirthDate": Action.Z,
        "StudyDate": Action.Z,
        "SOPInstanceUID": Action.U,
        "StudyInstanceUID": Action.U,
        "InstitutionName": Action.XZD,
        "OtherPatientIDsSequence": Action.X,
        "SourceImageSequence": Action.XZU,
    }
    for keyword, action in expected.items():
        assert profile.action(tag_for_keyword(keyword)) is action, keyword
    assert profile.action(0x50020010) is Action.X  # curve data, any element of 50xx
    assert profile.action(0x60223000) is Action.X  # overlay data of any overlay group
    assert profile.action(tag_for_keyword("Rows")) is None


# -- datasets, files, JSON -----------------------------------------------------------
@pytest.fixture
def deid() -> Deidentifier:
    return Deidentifier(b"share-key-1")


@pytest.fixture(autouse=True)
def _quiet_pydicom() -> Iterator[None]:
    # planted values break VR rules (length, character set) on purpose
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def test_dataset_applies_every_action_of_the_table(deid: Deidentifier) -> None:
    source = planted()
    before = source.to_json_dict()
    out = deid.dataset(source)
    assert source.to_json_dict() == before, "the input must not change"
    check_profile(deid, out, source)
    buf = BytesIO()
    out.save_as(buf, enforce_file_format=True)
    assert leaks(buf.getvalue(), source) == []


def test_part10_applies_every_action_and_keeps_the_pixels(deid: Deidentifier) -> None:
    source = planted()
    data = td.to_bytes(source)
    assert leaks(data, source), "the markers are in the input"
    out_bytes = deid.part10(data)
    assert leaks(out_bytes, source) == []
    out = dcmread(BytesIO(out_bytes))
    check_profile(deid, out, source)
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert out.SOPInstanceUID == deid.uid(source.SOPInstanceUID)
    assert out.file_meta.TransferSyntaxUID == source.file_meta.TransferSyntaxUID
    assert out.PixelData == source.PixelData
    assert np.array_equal(out.pixel_array, source.pixel_array)


def test_json_matches_the_file(deid: Deidentifier) -> None:
    source = planted(extra_private=False)
    source_json = source.to_json_dict(bulk_data_element_handler=lambda e: "bulk/" + "x")
    source_json["7FE00010"] = {"vr": "OW", "BulkDataURI": "bulk/7FE00010"}
    out_json = deid.json(source_json)
    assert leaks(str(out_json), source) == []
    from_file = dcmread(BytesIO(deid.part10(td.to_bytes(source)))).to_json_dict()
    assert set(out_json) == set(from_file)
    for key in ("00080018", "0020000D", "0020000E", "00100010", "00100020", "00120064"):
        assert out_json[key] == from_file[key], key
    # the same table drives both: compare action by action on the dataset view
    check_profile(deid, Dataset.from_json(out_json, lambda *a: b""), source)


def test_json_remaps_uids_in_urls(deid: Deidentifier) -> None:
    study, series, sop = td.uid("a"), td.uid("b"), td.uid("c")
    row = {
        "0020000D": {"vr": "UI", "Value": [study]},
        "00081190": {"vr": "UR", "Value": [f"http://127.0.0.1:8080/dicom-web/studies/{study}"]},
        "7FE00010": {
            "vr": "OB",
            "BulkDataURI": f"/dicom-web/studies/{study}/series/{series}/instances/{sop}/bulk/7FE00010",
        },
        "00091010": {"vr": "LO", "Value": ["private"]},
    }
    out = deid.json(row)
    assert out["0020000D"]["Value"] == [deid.uid(study)]
    url = out["00081190"]["Value"][0]
    assert url == f"http://127.0.0.1:8080/dicom-web/studies/{deid.uid(study)}"
    bulk = out["7FE00010"]["BulkDataURI"]
    assert bulk == (
        f"/dicom-web/studies/{deid.uid(study)}/series/{deid.uid(series)}"
        f"/instances/{deid.uid(sop)}/bulk/7FE00010"
    )
    assert "00091010" not in out
    assert "00120062" not in out  # a study row is not an instance: no marks added


# -- UIDs and pseudonyms -------------------------------------------------------------
def test_uids_are_keyed_consistent_and_valid() -> None:
    a, b = Deidentifier(b"share-a"), Deidentifier(b"share-b")
    original = "1.2.840.113619.2.55.3.604688119.969.1268071029.320"
    assert a.uid(original) == Deidentifier(b"share-a").uid(original)
    assert a.uid(original) != b.uid(original)
    assert a.uid(original) != a.uid(original + "1")
    for d in (a, b):
        new = d.uid(original)
        assert UID_RE.fullmatch(new) and len(new) <= 64


def test_remapped_uids_lead_back_to_the_originals() -> None:
    deid = Deidentifier(b"share-a")
    study = td.make_study(seed=2, modalities=("CT",), n_instances=3)
    originals = [ds.SOPInstanceUID for ds in study] + [study[0].SeriesInstanceUID]
    back = deid.originals(originals)
    assert len(back) == len(originals)
    for ds in study:
        out = deid.dataset(ds)
        assert back[out.SOPInstanceUID] == ds.SOPInstanceUID
        assert back[out.SeriesInstanceUID] == ds.SeriesInstanceUID
    assert td.uid("elsewhere") not in back and deid.uid(td.uid("elsewhere")) not in back
    with pytest.raises(VnaError):
        Deidentifier(b"")


def test_series_group_and_references_resolve(deid: Deidentifier) -> None:
    study = td.make_study(seed=3, modalities=("CT", "MR"), n_instances=3)
    mr = study[-1]
    ct = study[0]
    ref = Dataset()
    ref.ReferencedSOPClassUID = ct.SOPClassUID
    ref.ReferencedSOPInstanceUID = ct.SOPInstanceUID
    mr.ReferencedImageSequence = [ref]
    mr.FrameOfReferenceUID = ct.FrameOfReferenceUID = td.uid("for", 3)
    outs = [deid.dataset(ds) for ds in study]
    by_series: dict[str, set[str]] = {}
    for src, out in zip(study, outs, strict=True):
        by_series.setdefault(src.SeriesInstanceUID, set()).add(out.SeriesInstanceUID)
    assert all(len(v) == 1 for v in by_series.values())
    assert len({next(iter(v)) for v in by_series.values()}) == len(by_series)
    assert len({o.StudyInstanceUID for o in outs}) == 1
    new_ct = outs[0].SOPInstanceUID
    assert outs[-1].ReferencedImageSequence[0].ReferencedSOPInstanceUID == new_ct
    assert outs[-1].FrameOfReferenceUID == outs[0].FrameOfReferenceUID != ct.FrameOfReferenceUID


def test_one_pseudonym_per_patient_per_share() -> None:
    a, b = Deidentifier(b"share-a"), Deidentifier(b"share-b")
    assert a.pseudonym("PAT-1") == a.pseudonym("PAT-1")
    assert a.pseudonym("PAT-1") != a.pseudonym("PAT-2")
    assert a.pseudonym("PAT-1", "HOSP-A") != a.pseudonym("PAT-1", "HOSP-B")
    assert a.pseudonym("PAT-1") != b.pseudonym("PAT-1")
    name, pid = a.pseudonym("PAT-1")
    assert "PAT-1" not in name + pid and len(pid) <= 64
    ds1 = td.make_ct(seed=0, index=0)
    ds2 = td.make_ct(seed=0, index=1)
    out1, out2 = a.dataset(ds1), a.dataset(ds2)
    assert (str(out1.PatientName), out1.PatientID) == a.pseudonym(ds1.PatientID)
    assert (out1.PatientName, out1.PatientID) == (out2.PatientName, out2.PatientID)
    assert a.json(ds1.to_json_dict())["00100020"]["Value"] == [out1.PatientID]


# -- refusals ------------------------------------------------------------------------
def _with(ds: Dataset, **values: Any) -> Dataset:
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


REFUSED = [
    ("burned", lambda: _with(td.make_ct(), BurnedInAnnotation="YES")),
    ("faces", lambda: _with(td.make_mr(), RecognizableVisualFeatures="YES")),
    ("screenshot", lambda: td.make_sc()),
    ("pdf", lambda: _with(td.make_ct(), SOPClassUID="1.2.840.10008.5.1.4.1.1.104.1")),
    ("report", lambda: _with(td.make_ct(), SOPClassUID="1.2.840.10008.5.1.4.1.1.88.11")),
    (
        "label",
        lambda: _with(
            td.make_ct(),
            SOPClassUID="1.2.840.10008.5.1.4.1.1.77.1.6",
            ImageType=["ORIGINAL", "PRIMARY", "LABEL", "NONE"],
        ),
    ),
]


@pytest.mark.parametrize("make", [m for _, m in REFUSED], ids=[n for n, _ in REFUSED])
def test_refused_instances(deid: Deidentifier, make: Any) -> None:
    ds = make()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    assert deid.refusal(ds)
    assert deid.refusal(ds.to_json_dict()) == deid.refusal(ds)
    with pytest.raises(Refused):
        deid.dataset(ds)
    with pytest.raises(Refused):
        deid.part10(td.to_bytes(ds))


def test_shareable_instances_are_not_refused(deid: Deidentifier) -> None:
    sc = _with(td.make_sc(), BurnedInAnnotation="NO")
    wsi_volume = _with(
        td.make_ct(),
        SOPClassUID="1.2.840.10008.5.1.4.1.1.77.1.6",
        ImageType=["ORIGINAL", "PRIMARY", "VOLUME", "NONE"],
    )
    for ds in (td.make_ct(), td.make_mr(), td.make_us_multiframe(), sc, wsi_volume):
        assert deid.refusal(ds) is None
        assert deid.refusal(ds.to_json_dict()) is None
    assert deid.dataset(sc).BurnedInAnnotation == "NO"


# -- files of every kind -------------------------------------------------------------
@pytest.mark.parametrize(
    "ts", [JPEGBaseline8Bit, JPEGLosslessSV1, JPEGLSLossless, JPEG2000Lossless, RLELossless]
)
def test_compressed_pixels_pass_through_untouched(deid: Deidentifier, ts: str) -> None:
    source = td.compressed(_with(td.make_sc(), BurnedInAnnotation="NO"), ts)
    out = dcmread(BytesIO(deid.part10(td.to_bytes(source))))
    assert out.file_meta.TransferSyntaxUID == ts
    assert out.PixelData == source.PixelData
    assert np.array_equal(out.pixel_array, source.pixel_array)


def _pydicom_files() -> list[str]:
    return [p for p in td.pydicom_test_files() if not p.endswith(("DICOMDIR", ".gz"))]


def test_every_pydicom_test_file_is_deidentified_or_refused(deid: Deidentifier) -> None:
    """163 files in every transfer syntax and many SOP classes: each gives a
    readable de-identified file with its pixel bytes untouched, or a VnaError."""
    done = 0
    for path in _pydicom_files():
        data = Path(path).read_bytes()
        try:
            out = deid.part10(data)
        except (Refused, InvalidDicom):
            continue
        except VnaError as exc:  # acceptable only as a clear answer, never a crash
            assert str(exc), path
            continue
        done += 1
        ds, src = dcmread(BytesIO(out)), dcmread(path)
        assert ds.PatientIdentityRemoved == "YES", path
        assert not any(e.tag.is_private for e in walk(ds)), path
        if "PixelData" in src:
            assert ds.PixelData == src.PixelData, path
        assert ds.file_meta.TransferSyntaxUID == src.file_meta.TransferSyntaxUID, path
    assert done > 50


def test_deflated_and_big_endian_files(deid: Deidentifier) -> None:
    for name in ("image_dfl.dcm", "MR_small_bigendian.dcm"):
        src = dcmread(pydicom.data.get_testdata_file(name))
        src.BurnedInAnnotation = "NO"  # image_dfl.dcm is a secondary capture
        out = dcmread(BytesIO(deid.part10(td.to_bytes(src))))
        assert out.file_meta.TransferSyntaxUID == src.file_meta.TransferSyntaxUID
        assert out.PatientName != src.PatientName
        assert np.array_equal(out.pixel_array, src.pixel_array)


@pytest.mark.parametrize(
    "make",
    [
        lambda: td.make_ct(seed=2),
        lambda: td.compressed(td.make_us_multiframe(seed=2), JPEGLosslessSV1),
        lambda: dcmread(pydicom.data.get_testdata_file("MR_small_bigendian.dcm")),
    ],
    ids=["native", "encapsulated", "big-endian"],
)
def test_header_then_stored_pixels_is_the_same_file(deid: Deidentifier, make: Any) -> None:
    data = td.to_bytes(make())
    assert deid.header(data[:200]) is None  # does not reach the pixel data yet
    header, pos = deid.header(data)
    split = dcmread(BytesIO(header + data[pos:]))
    whole = dcmread(BytesIO(deid.part10(data)))
    assert split.to_json_dict() == whole.to_json_dict()
    assert split.PixelData == whole.PixelData == dcmread(BytesIO(data)).PixelData


def test_a_deflated_file_is_not_split(deid: Deidentifier) -> None:
    data = Path(pydicom.data.get_testdata_file("image_dfl.dcm")).read_bytes()
    with pytest.raises(InvalidDicom):
        deid.header(data)


def test_unreadable_input_is_a_vna_error(deid: Deidentifier) -> None:
    with pytest.raises(InvalidDicom):
        deid.part10(td.not_dicom())
    with pytest.raises(InvalidDicom):
        deid.part10(td.without_file_meta(td.make_ct())[:100])


def test_meta_without_file_meta_dataset(deid: Deidentifier) -> None:
    ds = td.make_ct()
    del ds.file_meta
    out = deid.dataset(ds)
    assert out.SOPInstanceUID == deid.uid(ds.SOPInstanceUID)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    assert deid.dataset(ds).file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID


# -- non-DICOM slides ------------------------------------------------------------------
def test_slide_rows_lose_every_identifying_field(deid: Deidentifier) -> None:
    rec = SlideRecord(
        id="slide-1",
        name="Doe John 2024-03-01 S24-1234",
        source="/scans/DOE_JOHN_S24-1234.svs",
        properties={"aperio.User": "jsmith", "aperio.Date": "03/01/24", "aperio.Barcode": "X"},
        width=40000,
        height=30000,
        levels=4,
        tile_size=256,
        mpp=0.25,
        patient_id="PAT-0001",
        patient_name="Doe^John",
        study_instance_uid=td.uid("slide-study"),
        series_instance_uid=td.uid("slide-series"),
        accession_number="S24-1234",
        specimen="S24-1234 A1",
        created_at=1.7e9,
        site="general-hospital",
    )
    out = deid.slide(rec)
    text = repr(out)
    for original in ("Doe", "S24-1234", "jsmith", "PAT-0001", "general-hospital", "03/01/24"):
        assert original not in text
    assert (out.patient_name, out.patient_id) == deid.pseudonym("PAT-0001")
    assert out.study_instance_uid == deid.uid(rec.study_instance_uid)
    assert (out.id, out.width, out.height, out.levels, out.mpp) == (
        "slide-1",
        40000,
        30000,
        4,
        0.25,
    )
    assert out.properties == {} and out.created_at == 0.0
    assert deid.slide(rec).name == out.name != Deidentifier(b"other").slide(rec).name
    assert {"label", "macro"} <= HIDDEN_ASSOCIATED_IMAGES
    assert rec.patient_name == "Doe^John"  # the row itself is untouched
