"""vna.dicom parsing: identity, checksums, frame maps, DICOM JSON, bulk data, errors."""

from __future__ import annotations

import hashlib
import io
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import pydicom
import pytest
from pydicom.data import get_charset_files, get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames, itemize_fragment
from pydicom.pixels import pack_bits
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from vna.dicom import (
    BULK_PREFIX,
    ParsedInstance,
    bulk_location,
    dataset_bytes,
    parse_part10,
    parse_part10_bytes,
    part10_header,
    read_bulk,
    write_part10_from_dataset_bytes,
)
from vna.dicom.transcode import transcode_part10
from vna.errors import InvalidDicom, NotFound
from vna.testdata import dicom as td


def _write(tmp_path: Path, ds: Dataset, name: str = "x.dcm") -> Path:
    return td.write(ds, tmp_path / name)


def _segments(path: Path, parsed: ParsedInstance) -> list[bytes]:
    data = path.read_bytes()
    assert parsed.frames is not None
    return [b"".join(data[o : o + n] for o, n in frame) for frame in parsed.frames]


KINDS = {
    "ct": lambda: td.make_ct(seed=1),
    "mr": lambda: td.make_mr(seed=2),
    "us": lambda: td.make_us_multiframe(seed=3, frames=5),
    "ct-implicit": lambda: td.make_ct(seed=4, ts=ImplicitVRLittleEndian),
    "ct-jpeg-lossless": lambda: td.compressed(td.make_ct(seed=5), JPEGLosslessSV1),
    "us-jpeg-ls": lambda: td.compressed(td.make_us_multiframe(seed=6), JPEGLSLossless),
    "mr-j2k": lambda: td.compressed(td.make_mr(seed=7), JPEG2000Lossless),
    "us-rle": lambda: td.compressed(td.make_us_multiframe(seed=8), RLELossless),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_parse_every_generated_kind(tmp_path: Path, kind: str) -> None:
    ds = KINDS[kind]()
    path = _write(tmp_path, ds)
    data = path.read_bytes()
    p = parse_part10(path)
    assert (p.sop_instance_uid, p.sop_class_uid) == (ds.SOPInstanceUID, ds.SOPClassUID)
    assert (p.study_instance_uid, p.series_instance_uid) == (
        ds.StudyInstanceUID,
        ds.SeriesInstanceUID,
    )
    assert p.transfer_syntax_uid == ds.file_meta.TransferSyntaxUID
    assert p.size == len(data)
    assert p.sha256 == hashlib.sha256(data).hexdigest()
    assert p.identity == hashlib.sha256(data[p.meta_end :]).hexdigest()
    # the dataset starts right after the file meta group pydicom wrote
    assert data[p.meta_end : p.meta_end + 2] != b"\x02\x00"
    assert data[p.meta_end - 200 : p.meta_end].find(ds.file_meta.TransferSyntaxUID.encode()) >= 0
    assert p.num_frames == int(ds.get("NumberOfFrames", 1))
    assert p.frames is not None and len(p.frames) == p.num_frames
    assert p.metadata["00100020"]["Value"] == [ds.PatientID]
    assert p.metadata["7FE00010"]["BulkDataURI"] == BULK_PREFIX + "7FE00010"
    assert not any(k.startswith("0002") for k in p.metadata)
    record = p.to_record("blobs/x")
    assert record.identity == p.identity and record.frames == p.frames


@pytest.mark.parametrize("kind", ["ct", "mr", "us", "ct-implicit"])
def test_native_frames_are_pydicoms_pixel_bytes(tmp_path: Path, kind: str) -> None:
    ds = KINDS[kind]()
    path = _write(tmp_path, ds)
    p = parse_part10(path)
    arr = pydicom.dcmread(path).pixel_array
    frames = [arr] if p.num_frames == 1 else list(arr)
    assert _segments(path, p) == [f.astype(f.dtype.newbyteorder("<")).tobytes() for f in frames]


def _one_bit(rows: int, cols: int, frames: int) -> Dataset:
    ds = td.make_ct(seed=9)
    bits = np.random.default_rng(0).integers(0, 2, (frames, rows, cols), dtype=np.uint8)
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, cols, frames
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 1, 0, 0
    ds.PixelData = pack_bits(bits)
    ds["PixelData"].VR = "OB"
    for attr in ("RescaleIntercept", "RescaleSlope", "RescaleType", "WindowCenter", "WindowWidth"):
        delattr(ds, attr)
    return ds


def test_one_bit_frames(tmp_path: Path) -> None:
    # 8x8 frames are whole bytes: addressable; 5x5 frames straddle bytes: None
    path = _write(tmp_path, _one_bit(8, 8, 3), "aligned.dcm")
    p = parse_part10(path)
    arr = pydicom.dcmread(path).pixel_array
    assert _segments(path, p) == [pack_bits(f) for f in arr]
    p = parse_part10(_write(tmp_path, _one_bit(5, 5, 3), "straddle.dcm"))
    assert p.num_frames == 3 and p.frames is None


def _assert_codestreams(path: Path, p: ParsedInstance, ds: Dataset) -> None:
    """Each frame's segments are that frame's codestream, decoding to its pixels."""
    src = ds.pixel_array if p.num_frames > 1 else ds.pixel_array[None]
    got = _segments(path, p)
    assert len(got) == len(src)
    for stream, pixels in zip(got, src, strict=True):
        decoded = imagecodecs.jpeg8_decode(stream)
        assert np.array_equal(decoded.view(pixels.dtype), pixels)


@pytest.mark.parametrize(
    "layout",
    [
        {"bot": False},  # empty BOT, one fragment per frame
        {"bot": True, "fragments_per_frame": 3},  # BOT, frames over several fragments
        {"eot": True},  # Extended Offset Table
        {"bot": False, "fragments_per_frame": 2},  # empty BOT: found by SOI markers
    ],
    ids=["empty-bot", "bot-3-fragments", "eot", "markers"],
)
def test_encapsulated_multiframe_layouts(tmp_path: Path, layout: dict) -> None:
    native = td.make_us_multiframe(seed=10, frames=4)
    ds = td.compressed(native, JPEGLosslessSV1, **layout)
    path = _write(tmp_path, ds)
    p = parse_part10(path)
    assert p.num_frames == 4
    if layout.get("fragments_per_frame", 1) > 1:
        assert all(len(frame) == layout["fragments_per_frame"] for frame in p.frames)
    _assert_codestreams(path, p, native)


def test_single_frame_over_several_fragments(tmp_path: Path) -> None:
    native = td.make_ct(seed=11)
    ds = td.compressed(native, JPEGLosslessSV1, fragments_per_frame=3, bot=False)
    path = _write(tmp_path, ds)
    p = parse_part10(path)
    assert p.num_frames == 1 and len(p.frames[0]) == 3
    _assert_codestreams(path, p, native)


def test_identity_ignores_the_file_meta_group(tmp_path: Path) -> None:
    ds = td.make_ct(seed=12)
    first = parse_part10(_write(tmp_path, ds, "a.dcm"))
    raw, ts = dataset_bytes(tmp_path / "a.dcm")
    out = tmp_path / "b.dcm"
    size = write_part10_from_dataset_bytes(
        raw, ts, ds.SOPClassUID, ds.SOPInstanceUID, out, source_ae="MODALITY1"
    )
    second = parse_part10(out)
    assert size == out.stat().st_size
    assert second.sha256 != first.sha256 and second.meta_end != first.meta_end
    assert second.identity == first.identity
    assert second.metadata == first.metadata
    assert pydicom.dcmread(out).file_meta.SourceApplicationEntityTitle == "MODALITY1"
    other = parse_part10(_write(tmp_path, td.with_value(ds, "PatientName", "Other^Name"), "c.dcm"))
    assert other.identity != first.identity


def test_every_pydicom_test_file_parses_or_is_invalid(tmp_path: Path) -> None:
    outcomes: dict[str, int] = {"parsed": 0, "invalid": 0}
    for name in td.pydicom_test_files():
        try:
            p = parse_part10(name)
        except InvalidDicom as exc:
            assert str(exc)
            outcomes["invalid"] += 1
            continue
        outcomes["parsed"] += 1
        for frame in p.frames or []:
            assert all(off > 0 and off + n <= p.size for off, n in frame)
    assert outcomes["parsed"] > 50 and outcomes["invalid"] > 5
    for name, words in [
        ("no_meta.dcm", "DICM"),
        ("MR_truncated.dcm", "truncated"),
        ("meta_missing_tsyntax.dcm", "TransferSyntaxUID"),
    ]:
        with pytest.raises(InvalidDicom, match=words):
            parse_part10(get_testdata_file(name))


@pytest.mark.parametrize(
    "name", ["examples_ybr_color.dcm", "SC_rgb_rle_2frame.dcm", "rtdose_rle.dcm", "JPEG2000.dcm"]
)
def test_encapsulated_corpus_frames_match_pydicom(name: str) -> None:
    path = Path(get_testdata_file(name))
    p = parse_part10(path)
    ds = pydicom.dcmread(path)
    expected = list(generate_frames(ds.PixelData, number_of_frames=p.num_frames))
    assert [s.rstrip(b"\0") for s in _segments(path, p)] == [e.rstrip(b"\0") for e in expected]


def _pn(p: ParsedInstance) -> dict:
    return p.metadata["00100010"]["Value"][0]


@pytest.mark.parametrize("patient", range(len(td.PATIENTS)))
def test_names_decoded_per_character_set(tmp_path: Path, patient: int) -> None:
    ds = td.make_study(seed=13, modalities=("MR",), n_instances=1, patient=patient)[0]
    p = parse_part10(_write(tmp_path, ds))
    groups = td.PATIENTS[patient][1].split("=")
    keys = ["Alphabetic", "Ideographic", "Phonetic"]
    assert _pn(p) == {k: v for k, v in zip(keys, groups, strict=False) if v}


@pytest.mark.parametrize(
    "name, expected",
    [  # the PS3.5 Annex H (Japanese) and Annex I (Korean) examples
        (
            "chrH31.dcm",
            {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"},
        ),
        (
            "chrI2.dcm",
            {"Alphabetic": "Hong^Gildong", "Ideographic": "洪^吉洞", "Phonetic": "홍^길동"},
        ),
        ("chrGerm.dcm", {"Alphabetic": "Äneas^Rüdiger"}),
    ],
)
def test_reference_charset_files(name: str, expected: dict) -> None:
    path = next(f for f in get_charset_files() if f.endswith(name))
    assert _pn(parse_part10(path)) == expected


def _with_bulk(ds: Dataset) -> Dataset:
    icon = Dataset()
    icon.Rows = icon.Columns = 32
    icon.PixelData = bytes(range(256)) * 8  # 2 KiB: bulk
    icon["PixelData"].VR = "OB"
    ds.IconImageSequence = [icon]
    ds.add_new(0x00091010, "LO", "VNA TEST")
    ds.add_new(0x00091011, "OB", b"\x01\x02" * 8)  # 16 bytes: inline
    ds.ImageComments = "long comment " * 200  # large but not bulk: stays a value
    return ds


def test_bulk_data_uris_and_read_bulk(tmp_path: Path) -> None:
    ds = _with_bulk(td.make_ct(seed=14))
    path = _write(tmp_path, ds)
    p = parse_part10(path)
    icon_uri = p.metadata["00880200"]["Value"][0]["7FE00010"]["BulkDataURI"]
    assert icon_uri == BULK_PREFIX + "00880200/0/7FE00010"
    assert read_bulk(path, icon_uri) == ds.IconImageSequence[0].PixelData
    assert read_bulk(path, "7FE00010") == ds.PixelData
    off, n = bulk_location(path, "bulk/7FE00010")
    assert path.read_bytes()[off : off + n] == ds.PixelData
    assert "InlineBinary" in p.metadata["00091011"]
    assert p.metadata["00204000"]["Value"] == [ds.ImageComments.strip()]
    with pytest.raises(NotFound):
        read_bulk(path, "bulk/00880200/3/7FE00010")
    with pytest.raises(NotFound):
        read_bulk(path, "bulk/../etc/passwd")


def test_deflated_instance(tmp_path: Path) -> None:
    ds = td.make_mr(seed=15)
    path = tmp_path / "deflated.dcm"
    path.write_bytes(transcode_part10(td.to_bytes(ds), DeflatedExplicitVRLittleEndian))
    p = parse_part10(path)
    assert p.transfer_syntax_uid == DeflatedExplicitVRLittleEndian
    assert p.frames is None and p.num_frames == 1
    assert p.metadata["00100010"]["Value"][0]["Ideographic"] == ds.PatientName.ideographic
    assert read_bulk(path, "bulk/7FE00010") == ds.PixelData
    truncated = tmp_path / "deflated-cut.dcm"
    truncated.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(InvalidDicom):
        parse_part10(truncated)


def test_truncated_pixel_data_is_detected(tmp_path: Path) -> None:
    for ds in (td.make_ct(seed=16), td.compressed(td.make_us_multiframe(seed=16), JPEGLSLossless)):
        path = tmp_path / "cut.dcm"
        path.write_bytes(td.truncated(td.to_bytes(ds)))
        with pytest.raises(InvalidDicom, match="truncated"):
            parse_part10(path)


def _outcome(parse: Callable[[Any], ParsedInstance], source: Any) -> ParsedInstance | str:
    try:
        return parse(source)
    except InvalidDicom:
        return "invalid"


def test_parsing_received_bytes_gives_what_parsing_their_file_gives(tmp_path: Path) -> None:
    """A store parses what it received in memory (the bytes it spooled) instead of
    reading the spool file back: the same instance, identity, frame map and JSON,
    the same refusals, for every pydicom test file and every generated kind."""
    paths = [Path(p) for p in td.pydicom_test_files()]
    for kind in sorted(KINDS):
        paths.append(_write(tmp_path, KINDS[kind](), f"{kind}.dcm"))
    invalid = 0
    for path in paths:
        from_file = _outcome(parse_part10, path)
        assert _outcome(parse_part10_bytes, path.read_bytes()) == from_file, path.name
        invalid += from_file == "invalid"
    assert 5 < invalid < len(paths) - 50


def test_every_cut_of_a_file_is_invalid(tmp_path: Path) -> None:
    ds = _with_bulk(td.compressed(td.make_us_multiframe(seed=17, frames=2), JPEGLosslessSV1))
    data = td.to_bytes(ds)
    path = tmp_path / "cut.dcm"
    for at in list(range(0, len(data) - 1, 97)) + [len(data) - 1]:
        path.write_bytes(data[:at])
        with pytest.raises(InvalidDicom):
            parse_part10(path)
        with pytest.raises(InvalidDicom):
            parse_part10_bytes(data[:at])


@pytest.mark.parametrize(
    "keyword, value, words",
    [
        ("SOPInstanceUID", "1.2.3/4", "SOPInstanceUID"),
        ("StudyInstanceUID", "1.2..3", "StudyInstanceUID"),
        ("SeriesInstanceUID", "1." + "2" * 70, "SeriesInstanceUID"),
        ("SOPClassUID", None, "SOPClassUID"),
        ("StudyInstanceUID", None, "StudyInstanceUID"),
    ],
)
def test_bad_uids_are_refused(tmp_path: Path, keyword: str, value: str | None, words: str) -> None:
    path = _write(tmp_path, td.with_value(td.make_ct(seed=18), keyword, value))
    with pytest.raises(InvalidDicom, match=words):
        parse_part10(path)


def test_not_dicom_and_odd_paths(tmp_path: Path) -> None:
    for data in (td.not_dicom(), b"", b"\0" * 128 + b"DICM", td.without_file_meta(td.make_ct())):
        path = tmp_path / "bad.dcm"
        path.write_bytes(data)
        with pytest.raises(InvalidDicom):
            parse_part10(path)
    with pytest.raises(InvalidDicom):
        parse_part10(tmp_path)  # a directory
    with pytest.raises(InvalidDicom):
        parse_part10(tmp_path / "missing.dcm")


def test_large_instance_parses_in_bounded_memory(tmp_path: Path) -> None:
    # 40 frames of 1024x1024x16 bits: 80 MiB of pixel data, written without ever
    # holding it whole, then parsed while tracemalloc watches the peak.
    ds = td.make_ct(seed=19, rows=1024, cols=1024)
    ds.NumberOfFrames = 40
    frame = ds.PixelData
    del ds.PixelData
    head = io.BytesIO()
    ds.save_as(head, enforce_file_format=True)
    path = tmp_path / "big.dcm"
    with open(path, "wb") as fp:
        fp.write(head.getvalue())
        fp.write(b"\xe0\x7f\x10\x00OW\0\0" + (len(frame) * 40).to_bytes(4, "little"))
        for _ in range(40):
            fp.write(frame)
    tracemalloc.start()
    try:
        p = parse_part10(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert p.num_frames == 40 and len(p.frames) == 40
    assert p.frames[-1][0][0] + p.frames[-1][0][1] == p.size
    assert peak < 16 * 2**20


def _crafted(tmp_path: Path, fragments: list[bytes], bot: list[int], eot: list[int] | None) -> Path:
    """Two frames over hand-made fragments, with the given offset tables."""
    ds = td.make_us_multiframe(seed=20, frames=2)
    items = b"".join(itemize_fragment(f) for f in fragments)
    table = b"".join(o.to_bytes(4, "little") for o in bot)
    ds.PixelData = itemize_fragment(table) + items + b"\xfe\xff\xdd\xe0\0\0\0\0"
    ds["PixelData"].VR, ds["PixelData"].is_undefined_length = "OB", True
    if eot is not None:
        ds.ExtendedOffsetTable = b"".join(o.to_bytes(8, "little") for o in eot)
        ds.ExtendedOffsetTableLengths = b"".join((0).to_bytes(8, "little") for _ in eot)
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    return _write(tmp_path, ds)


def test_frame_mapping_precedence(tmp_path: Path) -> None:
    # four fragments; frames start at fragments 0 and 2 by their markers
    frags = [b"\xff\xd8AAAA", b"BBBB", b"\xff\xd8CC", b"DDDDDD"]
    starts = [0]
    for f in frags[:-1]:
        starts.append(starts[-1] + 8 + len(f))  # item offsets from the first item tag

    def frames(bot: list[int], eot: list[int] | None) -> list[bytes]:
        path = _crafted(tmp_path, frags, bot, eot)
        return _segments(path, parse_part10(path))

    # the Extended Offset Table wins over everything (here: frames 0 | 1,2,3)
    assert frames([0, starts[3]], [0, starts[1]]) == [frags[0], b"".join(frags[1:])]
    # then the Basic Offset Table (frames 0,1,2 | 3)
    assert frames([0, starts[3]], None) == [b"".join(frags[:3]), frags[3]]
    # then start markers (frames 0,1 | 2,3)
    assert frames([], None) == [frags[0] + frags[1], frags[2] + frags[3]]
    # a table pointing between items is ignored in favour of the next method
    assert frames([0, starts[1] + 2], None) == [frags[0] + frags[1], frags[2] + frags[3]]
    # nothing consistent: frames cannot be located
    path = _crafted(tmp_path, [b"xx", b"yy", b"zz"], [], None)
    assert parse_part10(path).frames is None


def test_deflate_bomb_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import zlib

    from vna.dicom import parse as parse_module

    monkeypatch.setattr(parse_module, "MAX_INFLATED", 1 << 20)  # a small limit, same code path
    ds = td.make_mr(seed=21)
    header = part10_header(DeflatedExplicitVRLittleEndian, ds.SOPClassUID, ds.SOPInstanceUID)
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = packer.compress(b"\0" * (3 << 20)) + packer.flush()
    path = tmp_path / "bomb.dcm"
    path.write_bytes(header + body)
    with pytest.raises(InvalidDicom, match="inflates beyond"):
        parse_part10(path)


def test_file_meta_fast_path_reads_what_the_walk_reads() -> None:
    """``read_file_meta`` reads a whole explicit VR file meta group from the bytes
    in memory in one loop; on every test file, and on every truncation of one, it
    answers (or refuses) exactly as the general walk does."""
    from vna.dicom import walk
    from vna.dicom.parse import HEAD_BYTES

    def both(data: bytes, head: bytes) -> tuple[object, object]:
        answers = []
        for fast in (True, False):
            saved = walk._meta_in_head
            if not fast:
                walk._meta_in_head = lambda head, size: None
            try:
                answers.append(walk.read_file_meta(io.BytesIO(data), len(data), head))
            except InvalidDicom as exc:
                answers.append(("refused", str(exc)))
            finally:
                walk._meta_in_head = saved
        return answers[0], answers[1]

    files = [Path(f).read_bytes() for f in td.pydicom_test_files()]
    fast_hits = 0
    for data in files:
        for head in (data[:HEAD_BYTES], data[:200], b""):
            fast, walked = both(data, head)
            assert fast == walked
            fast_hits += walk._meta_in_head(head, len(data)) is not None
    assert fast_hits > len(files) // 2
    data = td.to_bytes(td.make_ct(seed=3))
    for cut in range(0, 400, 3):
        fast, walked = both(data[:cut], data[:cut])
        assert fast == walked, cut
