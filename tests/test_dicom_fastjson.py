"""The fast DICOM JSON decoder gives exactly what the pydicom path gives.

``parse_part10`` decodes common datasets from the raw bytes (vna.dicom.fastjson)
and falls back to pydicom otherwise; ``parse_part10_pydicom`` always uses pydicom.
Every file below is parsed both ways and the outcomes must be identical: same
fields, same metadata serialised to the same JSON text (so key order and int vs
float count), or the same InvalidDicom message.
"""

from __future__ import annotations

import json
import struct
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydicom.data import get_charset_files
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from vna.dicom import part10_header
from vna.dicom.parse import fast_path_reason, parse_part10, parse_part10_pydicom
from vna.dicom.transcode import transcode_part10
from vna.errors import InvalidDicom
from vna.testdata import dicom as td

CT = "1.2.840.10008.5.1.4.1.1.2"
LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
UNDEF = 0xFFFFFFFF


def _outcome(parse: Callable[[str | Path], Any], path: str | Path) -> tuple:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the odd values on purpose
        try:
            p = parse(path)
        except InvalidDicom as exc:
            return ("invalid", str(exc))
    fields = {k: getattr(p, k) for k in p.__slots__ if k != "metadata"}
    return ("parsed", fields, json.dumps(p.metadata))


def assert_same(path: str | Path) -> tuple:
    """Both parsers agree on ``path``; returns the outcome."""
    fast, reference = _outcome(parse_part10, path), _outcome(parse_part10_pydicom, path)
    assert fast[0] == reference[0], (fast, reference)
    if fast[0] == "parsed":
        assert fast[1] == reference[1]
        assert json.loads(fast[2]).keys() == json.loads(reference[2]).keys()
    assert fast == reference
    return fast


# -- generated instances ---------------------------------------------------------

GENERATED: dict[str, Callable[[], Any]] = {
    "ct": lambda: td.make_ct(seed=1),
    "ct-512": lambda: td.make_ct(seed=1, rows=512, cols=512),
    "mr": lambda: td.make_mr(seed=4),
    "us": lambda: td.make_us_multiframe(seed=5, frames=5),
    "sc": lambda: td.make_sc(seed=6),
    "ct-implicit": lambda: td.make_ct(seed=7, ts=ImplicitVRLittleEndian),
    "mr-implicit": lambda: td.make_mr(seed=10, ts=ImplicitVRLittleEndian),
    "ct-jpeg-lossless": lambda: td.compressed(td.make_ct(seed=11), JPEGLosslessSV1),
    "sc-jpeg-baseline": lambda: td.compressed(td.make_sc(seed=12), JPEGBaseline8Bit),
    "us-jpeg-ls": lambda: td.compressed(td.make_us_multiframe(seed=13), JPEGLSLossless),
    "mr-j2k": lambda: td.compressed(td.make_mr(seed=16), JPEG2000Lossless),
    "us-rle": lambda: td.compressed(td.make_us_multiframe(seed=17), RLELossless),
    "us-eot": lambda: td.compressed(td.make_us_multiframe(seed=18), JPEGLosslessSV1, eot=True),
}
# seeds pick td.PATIENTS[seed % 6]; the ISO 2022 names (2 and 3) carry escape
# sequences, which the fast decoder hands to pydicom's converters value by value


@pytest.mark.parametrize("kind", sorted(GENERATED))
def test_generated_kinds(tmp_path: Path, kind: str) -> None:
    path = td.write(GENERATED[kind](), tmp_path / "x.dcm")
    assert fast_path_reason(path) is None
    assert assert_same(path)[0] == "parsed"


@pytest.mark.parametrize("patient", range(len(td.PATIENTS)))
@pytest.mark.parametrize("modality", ["CT", "MR", "US"])
def test_generated_character_sets(tmp_path: Path, patient: int, modality: str) -> None:
    for i, ds in enumerate(td.make_study(seed=patient, modalities=(modality,), patient=patient)):
        path = td.write(ds, tmp_path / f"{i}.dcm")
        assert assert_same(path)[0] == "parsed"
        assert fast_path_reason(path) is None  # ISO 2022 too: no whole-dataset fallback


def test_deflated(tmp_path: Path) -> None:
    path = tmp_path / "deflated.dcm"
    path.write_bytes(
        transcode_part10(td.to_bytes(td.make_mr(seed=13)), DeflatedExplicitVRLittleEndian)
    )
    assert fast_path_reason(path) is None
    assert assert_same(path)[0] == "parsed"


def test_pydicom_corpus() -> None:
    files = td.pydicom_test_files() + [f for f in get_charset_files() if f.endswith(".dcm")]
    fast = sum(
        fast_path_reason(f) is None for f in files if _outcome(parse_part10, f)[0] == "parsed"
    )
    for name in files:
        assert_same(name)
    assert fast > len(files) // 2  # the comparison exercised the fast decoder


# -- hand-made elements: every VR's edge cases -------------------------------------


def _element(
    tag: int, vr: str, value: bytes, *, implicit: bool = False, length: int | None = None
) -> bytes:
    n = len(value) if length is None else length
    if implicit:
        return struct.pack("<HHL", tag >> 16, tag & 0xFFFF, n) + value
    if vr in LONG_VRS:
        return struct.pack("<HH2sHL", tag >> 16, tag & 0xFFFF, vr.encode(), 0, n) + value
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), n) + value


def _even(value: bytes, pad: bytes = b" ") -> bytes:
    return value + pad if len(value) % 2 else value


def _instance(
    tmp_path: Path,
    elements: list[tuple[int, str, bytes]],
    *,
    implicit: bool = False,
    raw: bytes = b"",
) -> Path:
    """A Part-10 file: the identifying UIDs and ``elements`` in tag order (an empty VR
    means the value is an already encoded element), then ``raw`` bytes."""
    uid = td.uid("fastjson", len(list(tmp_path.iterdir())))
    base = [
        (0x00080016, "UI", _even(CT.encode(), b"\0")),
        (0x00080018, "UI", _even(uid.encode(), b"\0")),
        (0x0020000D, "UI", _even(td.uid("study").encode(), b"\0")),
        (0x0020000E, "UI", _even(td.uid("series").encode(), b"\0")),
    ]
    body = b"".join(
        _element(tag, vr, value, implicit=implicit) if vr else value
        for tag, vr, value in sorted(base + elements)
    )
    ts = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    path = tmp_path / f"{len(list(tmp_path.iterdir()))}.dcm"
    path.write_bytes(part10_header(ts, CT, uid) + body + raw)
    return path


EDGES: dict[str, list[bytes]] = {
    "CS": [b"", b"  ", b"A ", b"A\\B ", b"\\", b" A", b"A\0", b"A \\ B "],
    "AS": [b"045Y", b"", b"45Y "],
    "DA": [b"20240101", b"20240101\\20240102", b"2024", b"  "],
    "TM": [b"101500", b"101500.123 ", b"10"],
    "DT": [b"20240101101500.000000+0100", b"2024 "],
    "AE": [b" STORESCU ", b"A\\ B", b"AE\0 ", b"  "],
    "UI": [b"1.2.3\0", b"1.2\\3.4 ", b" 1.2", b"\0\0"],
    "LO": [b"Hospital  ", b" A\\B ", b"\\", b"M\xfcller", b"\0\0", b"a\x1bb"],
    "SH": [b"ACC01 ", b"X\\Y\\Z "],
    "UC": [b"unlimited  ", b"a\\b"],
    "LT": [b"A\\B  ", b"  ", b"line\r\nline  "],
    "ST": [b"short text\0"],
    "UT": [b"x" * 3000],
    "UR": [b"http://example.org/a  ", b"a\\b", b" x"],
    "PN": [
        b"Doe^John",
        b"A^B=C^D=E^F",
        b"A==C ",
        b"A== ",
        b"=B",
        b"==",
        b"A\\B ",
        b"A\\ ",
        b"A=B=C=D ",
        b"  ",
        b"A^B^^^ ",
    ],
    "IS": [b"1 ", b" 1 ", b"1.0 ", b"1.5 ", b"+1", b"-0", b"", b"  ", b"1\\2 ", b"1\\", b"1e2 "]
    + [b"007 ", b"1\0", b"12345678901 ", b"1_0 ", b"\t1 ", b"- 1 "],
    "DS": [b"1.5e3 ", b".5", b"5. ", b"nan ", b"inf ", b"1e999 ", b" 1.5\\ 2 ", b"-0.0"]
    + [b"1\\", b"1.0 ", b"1_0 ", b"", b"  ", b"1e-5", b"+.5e+2 ", b"1.\\.1 ", b"\01"],
    "US": [b"\x01\x00", b"\x01\x00\x02\x00", b"\x01\x00\x02", b""],
    "SS": [b"\xff\xff", b"\xff\xff\x00\x80"],
    "UL": [b"\x01\x00\x00\x00", b"\x01\x00\x00\x00\x02\x00\x00\x00", b"\x01\x00"],
    "SL": [b"\xff\xff\xff\xff"],
    "FL": [struct.pack("<f", 1.1), struct.pack("<2f", 1.5, -2.25), b"\0\0\xc0\x7f"],
    "FD": [struct.pack("<d", 0.1), struct.pack("<3d", 1, 2, 3), b"\x01" * 7],
    "UV": [struct.pack("<Q", 2**63 + 5)],
    "SV": [struct.pack("<q", -(2**62))],
    "AT": [b"\x10\x00\x20\x00", b"\x10\x00\x20\x00\x28\x00\x10\x00", b"\x10\x00", b""],
    "OB": [b"", b"\x01\x02", b"\x00" * 1024, b"\x00" * 1026],
    "OW": [b"\x01\x02\x03\x04", b"\x00" * 2048],
    "OF": [struct.pack("<2f", 1, 2)],
    "OD": [struct.pack("<d", 1)],
    "OL": [b"\x01\x00\x00\x00"],
    "OV": [b"\x01" * 8],
    "UN": [b"\x01\x02", b"\x00" * 2000],
}
EDGE_CASES = [(vr, i) for vr, values in EDGES.items() for i in range(len(values))]


@pytest.mark.parametrize("vr, index", EDGE_CASES, ids=[f"{v}-{i}" for v, i in EDGE_CASES])
def test_private_element_edge_values(tmp_path: Path, vr: str, index: int) -> None:
    value = _even(EDGES[vr][index])
    creator = (0x00090010, "LO", b"VNA TEST")
    assert_same(_instance(tmp_path, [creator, (0x00091001, vr, value)]))


UN_TAGS = {"PN": 0x00100010, "DS": 0x00180050, "IS": 0x00200013, "US": 0x00280010}
UN_CASES = [(vr, i) for vr, i in EDGE_CASES if vr in UN_TAGS]


@pytest.mark.parametrize("vr, index", UN_CASES, ids=[f"{v}-{i}" for v, i in UN_CASES])
def test_explicit_un_of_a_public_tag(tmp_path: Path, vr: str, index: int) -> None:
    # pydicom replaces an explicit UN with the dictionary VR: the fast path declines
    path = _instance(tmp_path, [(UN_TAGS[vr], "UN", _even(EDGES[vr][index]))])
    assert_same(path)
    if EDGES[vr][index]:
        assert fast_path_reason(path) == "explicit UN: pydicom looks the VR up"


PUBLIC = {  # tag, VR in the dictionary, values
    "ImageType": (0x00080008, [b"ORIGINAL\\PRIMARY\\AXIAL", b"A "]),
    "StudyDate": (0x00080020, [b"20240101"]),
    "InstitutionName": (0x00080080, [b"General Hospital", b"M\xfcller "]),
    "PatientName": (0x00100010, [b"Doe^John", b"A==C "]),
    "PatientAge": (0x00101010, [b"045Y"]),
    "SliceThickness": (0x00180050, [b"5.0 ", b"1\\2 ", b"x "]),
    "InstanceNumber": (0x00200013, [b"12", b"1.0 "]),
    "ImagePositionPatient": (0x00200032, [b"-125\\-125\\10.5 "]),
    "Rows": (0x00280010, [b"\x40\x00"]),
    "ImageComments": (0x00204000, [b"a\\b  "]),
    "FrameIncrementPointer": (0x00280009, [b"\x18\x00\x63\x10"]),
    "OverlayData": (0x60003000, [b"\x00" * 2000, b"\x00" * 8]),  # OB or OW
    "LUTData": (0x00283006, [b"\x00" * 8]),  # US or OW
    "Group length": (0x00080000, [b"\x00\x00\x00\x00"]),
}


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
@pytest.mark.parametrize("keyword", sorted(PUBLIC))
def test_public_elements(tmp_path: Path, keyword: str, implicit: bool) -> None:
    from pydicom.datadict import dictionary_VR

    tag, values = PUBLIC[keyword]
    vr = dictionary_VR(tag).split(" or ")[-1] if tag & 0xFFFF else "UL"
    for value in values:
        assert_same(_instance(tmp_path, [(tag, vr, _even(value))], implicit=implicit))


# -- character sets -------------------------------------------------------------

CHARSETS = [b"", b"ISO_IR 100", b"ISO_IR 192", b"ISO_IR 6", b"ISO_IR 144", b"ISO-IR 100"]
CHARSETS += [b"\\ISO 2022 IR 87", b"ISO 2022 IR 6\\ISO 2022 IR 100", b"GB18030", b"ISO_IR 13"]
TEXTS = [b"M\xfcller^J\xfcrgen", "Müller^Jürgen".encode(), b"\xd0\x9f\xd1\x80", b"\xff\xfe"]


@pytest.mark.parametrize("charset", CHARSETS)
@pytest.mark.parametrize("text", range(len(TEXTS)))
def test_character_sets(tmp_path: Path, charset: bytes, text: int) -> None:
    value = _even(TEXTS[text])
    elements = [(0x00080005, "CS", _even(charset)), (0x00100010, "PN", value)]
    assert_same(_instance(tmp_path, [*elements, (0x00080080, "LO", value)]))
    assert_same(_instance(tmp_path, [*elements, (0x00081030, "LO", value)], implicit=True))


# -- sequences and structure ------------------------------------------------------


def _item(content: bytes, defined: bool) -> bytes:
    if defined:
        return struct.pack("<HHL", 0xFFFE, 0xE000, len(content)) + content
    return (
        struct.pack("<HHL", 0xFFFE, 0xE000, UNDEF)
        + content
        + struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
    )


def _sequence(tag: int, items: list[bytes], defined: bool, *, implicit: bool = False) -> bytes:
    body = b"".join(items)
    if defined:
        return _element(tag, "SQ", body, implicit=implicit)
    delim = struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    return _element(tag, "SQ", body + delim, implicit=implicit, length=UNDEF)


def _code(value: bytes, implicit: bool = False) -> bytes:
    return _element(0x00080100, "SH", _even(value), implicit=implicit) + _element(
        0x00080104, "LO", _even(b"Meaning " + value), implicit=implicit
    )


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
@pytest.mark.parametrize("items_defined", [False, True], ids=["undef-items", "def-items"])
@pytest.mark.parametrize("seq_defined", [False, True], ids=["undef-seq", "def-seq"])
def test_sequences(tmp_path: Path, implicit: bool, items_defined: bool, seq_defined: bool) -> None:
    inner = _sequence(
        0x00400260, [_item(_code(b"IN", implicit), items_defined)], seq_defined, implicit=implicit
    )
    icon = _element(0x00280010, "US", b"\x20\x00", implicit=implicit) + _element(
        0x7FE00010, "OB", bytes(range(256)) * 8, implicit=implicit
    )
    items = {
        0x00081032: [_item(_code(b"A", implicit), items_defined), _item(b"", items_defined)],
        0x00081110: [],
        0x00081111: [_item(_code(b"B", implicit) + inner, items_defined)],
        0x00880200: [_item(icon, items_defined)],
    }
    seqs = [
        (tag, "", _sequence(tag, content, seq_defined, implicit=implicit))
        for tag, content in items.items()
    ]
    path = _instance(tmp_path, seqs, implicit=implicit)
    parsed = assert_same(path)
    if implicit:
        # the icon's pixel data is 'OB or OW' there, which the fast decoder leaves to
        # pydicom (and pydicom cannot read it inside an undefined-length sequence)
        assert fast_path_reason(path) == "ambiguous VR OB or OW"
        return
    assert fast_path_reason(path) is None
    meta = json.loads(parsed[2])
    assert meta["00880200"]["Value"][0]["7FE00010"]["BulkDataURI"] == "bulk/00880200/0/7FE00010"


def test_item_character_set_and_encapsulated_icon(tmp_path: Path) -> None:
    utf8 = _element(0x00080005, "CS", b"ISO_IR 192") + _element(
        0x00100010, "PN", _even("Zoë".encode())
    )
    frags = _item(b"", True) + _item(b"\xff\xd8" + b"\0" * 2000, True)
    icon = _element(0x7FE00010, "OB", frags + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0), length=UNDEF)
    elements = [
        (0x00080005, "CS", b"ISO_IR 100"),
        (0x00100010, "PN", b"M\xfcller^J"),
        (0x00081120, "", _sequence(0x00081120, [_item(utf8, False)], False)),
        (0x00880200, "", _sequence(0x00880200, [_item(icon, False)], True)),
    ]
    path = _instance(tmp_path, elements)
    assert fast_path_reason(path) is None
    assert assert_same(path)[0] == "parsed"


@pytest.mark.parametrize("parent", [b"ISO_IR 192", b"ISO_IR 100", None])
@pytest.mark.parametrize("own", [b"ISO_IR 192", b"ISO_IR 100", b"", None])
def test_item_character_sets(tmp_path: Path, parent: bytes | None, own: bytes | None) -> None:
    # an item's own (even empty) Specific Character Set replaces its parent's
    name = _even("Zoë^Ayşe".encode())
    item = b"" if own is None else _element(0x00080005, "CS", _even(own))
    item += _element(0x00100010, "PN", name)
    elements = [
        (0x00100010, "PN", name),
        (0x00081120, "", _sequence(0x00081120, [_item(item, False)], False)),
    ]
    if parent is not None:
        elements.append((0x00080005, "CS", _even(parent)))
    path = _instance(tmp_path, elements)
    assert fast_path_reason(path) is None
    assert assert_same(path)[0] == "parsed"


@pytest.mark.parametrize(
    "elements",
    [
        [(0x00080080, "LO", b"A "), (0x00080080, "LO", b"B ")],  # duplicate
        [(0x00100020, "LO", b"ID"), (0x00080080, "LO", b"A ")],  # out of order
        [(0x00080080, "LO", b"A "), (0x0008, "CS", b"ISO_IR 100")],  # charset after text
        [(0x00020010, "UI", b"1.2.3\0"), (0xFFFCFFFC, "OB", b"\0\0")],  # meta tag, padding
    ],
    ids=["duplicate", "out-of-order", "charset-after-text", "meta-and-padding"],
)
def test_odd_structure(tmp_path: Path, elements: list[tuple[int, str, bytes]]) -> None:
    body = b"".join(_element(0x00080005 if t == 0x0008 else t, vr, v) for t, vr, v in elements)
    assert_same(_instance(tmp_path, [], raw=body))


def test_elements_after_the_pixel_data_are_left_out(tmp_path: Path) -> None:
    elements = [
        (0x00280010, "US", b"\x08\x00"),
        (0x7FE00010, "OW", b"\0" * 128),
        (0x7FE10010, "LO", b"after "),
        (0xFFFCFFFC, "OB", b"\0" * 4),
    ]
    path = _instance(tmp_path, elements)
    parsed = assert_same(path)
    assert fast_path_reason(path) is None
    assert "7FE10010" not in json.loads(parsed[2])


def test_edge_values_mostly_take_the_fast_path(tmp_path: Path) -> None:
    # so the comparisons above compare two decoders, not pydicom with itself
    reasons = [
        fast_path_reason(
            _instance(tmp_path, [(0x00090010, "LO", b"VNA"), (0x00091001, vr, _even(EDGES[vr][i]))])
        )
        for vr, i in EDGE_CASES
    ]
    assert sum(r is None for r in reasons) > 0.8 * len(reasons)
    assert "IS value pydicom would repair" in reasons and "escape sequence" in reasons


@pytest.mark.parametrize(
    "tag, vr, value",
    [
        (0x00280008, "IS", b"2 "),  # NumberOfFrames as it should be
        (0x00280008, "US", b"\x02\x00"),  # ... with a wrong VR
        (0x00280008, "IS", b"2\\3 "),  # ... multi-valued
        (0x00280010, "SS", b"\x04\x00"),  # Rows, wrong VR
        (0x00280010, "US", b"\x04\x00\x04\x00"),  # Rows, multi-valued
        (0x00280004, "CS", b"YBR_FULL_422"),
        (0x00280004, "CS", b"YBR_FULL_422\\MONOCHROME2 "),
        (0x00080018, "UI", b"1.2\\1.3\0"),  # two SOP Instance UIDs
        (0x0020000D, "UI", b"\0\0"),  # an empty Study Instance UID
    ],
)
def test_values_the_frame_map_and_identity_read(
    tmp_path: Path, tag: int, vr: str, value: bytes
) -> None:
    elements = {
        0x00280002: ("US", b"\x01\x00"),
        0x00280004: ("CS", b"MONOCHROME2 "),
        0x00280008: ("IS", b"1 "),
        0x00280010: ("US", b"\x04\x00"),
        0x00280011: ("US", b"\x04\x00"),
        0x00280100: ("US", b"\x08\x00"),
        0x7FE00010: ("OB", b"\x01" * 32),
    }
    elements[tag] = (vr, value)
    uids = (0x00080018, 0x0020000D)
    path = _instance(tmp_path, [(t, v, x) for t, (v, x) in elements.items() if t not in uids])
    if tag in uids:  # replace the identifying UID _instance wrote
        data = path.read_bytes()
        at = data.rfind(struct.pack("<HH", tag >> 16, tag & 0xFFFF) + b"UI")
        n = struct.unpack("<H", data[at + 6 : at + 8])[0]
        path.write_bytes(data[:at] + _element(tag, vr, value) + data[at + 8 + n :])
    outcome = assert_same(path)
    assert outcome[0] == ("invalid" if tag in uids else "parsed")


def test_mutated_files(tmp_path: Path) -> None:
    """Random damage to the dataset (fixed seed): the fast path declines or agrees."""
    import logging
    import random

    sources = [
        td.to_bytes(td.make_ct(seed=1)),
        td.to_bytes(td.make_mr(seed=4, ts=ImplicitVRLittleEndian)),
    ]
    items = [_item(_code(b"A"), False), _item(_code(b"B"), True)]
    seq = (0x00081032, "", _sequence(0x00081032, items, False))
    sources.append(_instance(tmp_path, [seq]).read_bytes())
    rng = random.Random(20261122)
    path, agreed_fast = tmp_path / "mutated.dcm", 0
    logging.disable(logging.WARNING)  # pydicom logs every oddity
    try:
        for _ in range(300):
            data = bytearray(rng.choice(sources))
            start = data.find(b"DICM") + 154
            for _ in range(rng.randint(1, 3)):
                at = rng.randrange(start, min(len(data), start + 1500))
                if rng.random() < 0.8:
                    data[at] = rng.choice([rng.randrange(256), *b"\\= \0\x1b.09eE+-^"])
                else:
                    del data[at : at + rng.randint(1, 8)]
            path.write_bytes(bytes(data))
            if assert_same(path)[0] == "parsed" and fast_path_reason(path) is None:
                agreed_fast += 1
    finally:
        logging.disable(logging.NOTSET)
    assert agreed_fast > 30  # the fast decoder did take part


def test_cut_files(tmp_path: Path) -> None:
    """A file cut anywhere gets the same answer (the same InvalidDicom) both ways."""
    items = [_item(_code(b"A"), False), _item(_code(b"B"), True)]
    seq = (0x00081032, "", _sequence(0x00081032, items, False))
    ds = td.compressed(td.make_us_multiframe(seed=5, frames=2), JPEGLosslessSV1)
    path = tmp_path / "cut.dcm"
    for data in (td.to_bytes(ds), _instance(tmp_path, [seq]).read_bytes()):
        for at in range(0, len(data), max(1, len(data) // 150)):
            path.write_bytes(data[:at])
            assert assert_same(path)[0] == "invalid"


def test_one_pass_element_map_is_the_walkers() -> None:
    """Where the decoder maps the elements before the pixel data itself, its map is
    exactly the structural walker's (which the frame map and read_bulk rely on)."""
    from vna.dicom import parse as P

    files = td.pydicom_test_files() + [f for f in get_charset_files() if f.endswith(".dcm")]
    one_pass = 0
    for name in files:
        with open(name, "rb") as fp:
            size = fp.seek(0, 2)
            fp.seek(0)
            head = fp.read(min(size, P.HEAD_BYTES))
            try:
                meta, meta_end = P.read_file_meta(fp, size, head)
                ts = P.check_uid("TS", meta[0x00020010].decode("ascii", "replace"))
                walker, start, _ = P._walker(fp, size, meta_end, ts, head)
                expected, _ = walker.elements(start)
            except (InvalidDicom, KeyError):
                continue
            try:
                _, elements = P._decode_head(walker, start)
            except P.Unsupported:
                continue
            assert elements == expected, name
            one_pass += 1
    assert one_pass > len(files) // 2


def _containers(node: Any) -> list[Any]:
    """Every dict and list inside ``node`` (and itself)."""
    if isinstance(node, dict):
        return [node, *(c for value in node.values() for c in _containers(value))]
    if isinstance(node, list):
        return [node, *(c for value in node for c in _containers(value))]
    return []


@pytest.mark.parametrize("patient", range(len(td.PATIENTS)))
def test_values_seen_before_come_back_fresh_and_right(tmp_path: Path, patient: int) -> None:
    """The decoder remembers short values it has converted (the instances of a
    series share most of theirs): a value seen before must give the JSON pydicom
    gives, and never a dict or list another instance's metadata holds."""
    first_path = td.write(td.make_ct(seed=patient, index=0, count=2), tmp_path / "first.dcm")
    second_path = td.write(td.make_ct(seed=patient, index=1, count=2), tmp_path / "second.dcm")
    first = parse_part10(first_path)
    for path in (second_path, first_path):  # values seen before: remembered
        assert fast_path_reason(path) is None
        again = parse_part10(path)
        assert again.metadata == parse_part10_pydicom(path).metadata
        held = {id(c) for c in _containers(first.metadata)}
        assert not any(id(c) in held for c in _containers(again.metadata))
