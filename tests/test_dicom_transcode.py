"""vna.dicom transcoding and rendering, checked by decoding the results."""

from __future__ import annotations

import io
import shutil
import subprocess
import tracemalloc
from pathlib import Path

import imagecodecs
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from vna.dicom import parse_part10
from vna.dicom.render import render, thumbnail
from vna.dicom.transcode import (
    LOSSY,
    PRODUCIBLE,
    can_transcode,
    transcode_frames,
    transcode_part10,
)
from vna.errors import NotAcceptable, NotFound
from vna.testdata import dicom as td

SOURCES = {
    "ct": lambda: td.to_bytes(td.make_ct(seed=1)),
    "us": lambda: td.to_bytes(td.make_us_multiframe(seed=2, frames=3)),
    "ct-jpeg-lossless": lambda: td.to_bytes(td.compressed(td.make_ct(seed=3), JPEGLosslessSV1)),
    "mr-jpeg-ls": lambda: td.to_bytes(td.compressed(td.make_mr(seed=4), JPEGLSLossless)),
    "us-j2k": lambda: td.to_bytes(td.compressed(td.make_us_multiframe(seed=5), JPEG2000Lossless)),
    "mr-bigendian": lambda: Path(get_testdata_file("MR_small_bigendian.dcm")).read_bytes(),
    "rtdose-rle": lambda: Path(get_testdata_file("rtdose_rle.dcm")).read_bytes(),
}


def _pixels(data: bytes) -> np.ndarray:
    return pydicom.dcmread(io.BytesIO(data)).pixel_array


def _ds(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))


@pytest.mark.parametrize("target", sorted(PRODUCIBLE - LOSSY))
@pytest.mark.parametrize("source", sorted(SOURCES))
def test_lossless_round_trip(source: str, target: str) -> None:
    data = SOURCES[source]()
    original = _ds(data)
    try:
        out = transcode_part10(data, target)
    except NotAcceptable:
        # only 32-bit dose grids may be refused, and only by the JPEG family
        assert original.BitsAllocated == 32 and target not in (
            ExplicitVRLittleEndian,
            ImplicitVRLittleEndian,
        )
        return
    result = _ds(out)
    assert result.file_meta.TransferSyntaxUID == target
    assert result.SOPInstanceUID == original.SOPInstanceUID
    assert result.PatientName == original.PatientName
    assert np.array_equal(result.pixel_array, original.pixel_array)
    # and back to uncompressed, bytes-for-pixels equal again
    back = transcode_part10(out, ExplicitVRLittleEndian)
    assert np.array_equal(_pixels(back), original.pixel_array)


def test_transcoded_file_parses(tmp_path: Path) -> None:
    data = SOURCES["us"]()
    path = tmp_path / "x.dcm"
    path.write_bytes(transcode_part10(data, JPEGLSLossless))
    p = parse_part10(path)
    assert p.transfer_syntax_uid == JPEGLSLossless and p.num_frames == 3
    original = _pixels(data)
    for frame, pixels in zip(p.frames, original, strict=True):
        stream = b"".join(path.read_bytes()[o : o + n] for o, n in frame)
        assert np.array_equal(imagecodecs.jpegls_decode(stream), pixels)


def test_same_syntax_is_returned_untouched(tmp_path: Path) -> None:
    data = SOURCES["ct-jpeg-lossless"]()
    assert transcode_part10(data, JPEGLosslessSV1) == data
    path = tmp_path / "x.dcm"
    path.write_bytes(data)
    assert transcode_part10(path, JPEGLosslessSV1) == data


def test_jpeg_baseline_is_for_8_bit_only() -> None:
    us = SOURCES["us"]()
    out = _ds(transcode_part10(us, JPEGBaseline8Bit))
    assert out.PhotometricInterpretation == "YBR_FULL_422" and out.LossyImageCompression == "01"
    error = np.abs(out.pixel_array.astype(float) - _pixels(us)).mean()
    assert 0 < error < 10  # lossy, but the same picture
    with pytest.raises(NotAcceptable, match="8-bit"):
        transcode_part10(SOURCES["ct"](), JPEGBaseline8Bit)


def test_a_lossy_version_is_a_derived_image_with_its_own_uid() -> None:
    """PS3.3 C.7.6.1.1.5: lossy compression of a DICOM image makes a new SOP
    Instance, DERIVED, referencing its source; the same request names it alike."""
    us = SOURCES["us"]()
    source = _ds(us)
    out = _ds(transcode_part10(us, JPEGBaseline8Bit))
    assert out.SOPInstanceUID != source.SOPInstanceUID
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert out.ImageType[0] == "DERIVED"
    assert float(out.LossyImageCompressionRatio) > 1
    [ref] = out.SourceImageSequence
    assert ref.ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert ref.ReferencedSOPClassUID == source.SOPClassUID
    assert _ds(transcode_part10(us, JPEGBaseline8Bit)).SOPInstanceUID == out.SOPInstanceUID
    # lossless conversions keep the instance's identity
    assert _ds(transcode_part10(us, JPEGLosslessSV1)).SOPInstanceUID == source.SOPInstanceUID


def test_can_transcode() -> None:
    for target in PRODUCIBLE:
        assert can_transcode(ExplicitVRLittleEndian, target)
        assert can_transcode(JPEGLosslessSV1, target)
        assert can_transcode(ExplicitVRBigEndian, target)
    assert can_transcode("1.2.3.4", "1.2.3.4")
    assert not can_transcode("1.2.3.4", ExplicitVRLittleEndian)
    assert not can_transcode(ExplicitVRLittleEndian, "1.2.840.10008.1.2.4.201")  # HTJ2K
    with pytest.raises(NotAcceptable):
        transcode_part10(SOURCES["ct"](), "1.2.840.10008.1.2.4.201")


def test_frames_native_and_compressed() -> None:
    data = SOURCES["us-j2k"]()
    original = _pixels(data)
    raw = transcode_frames(data, [3, 1], ExplicitVRLittleEndian)
    assert raw == [original[2].tobytes(), original[0].tobytes()]
    streams = transcode_frames(data, None, JPEGLosslessSV1)
    assert len(streams) == len(original)
    for stream, pixels in zip(streams, original, strict=True):
        assert np.array_equal(imagecodecs.jpeg8_decode(stream), pixels)
    same, first = transcode_frames(data, [2, 1], JPEG2000Lossless)  # passed through
    assert np.array_equal(imagecodecs.jpeg2k_decode(same), original[1])
    assert np.array_equal(imagecodecs.jpeg2k_decode(first), original[0])
    rle = transcode_frames(data, [2], RLELossless)
    assert len(rle) == 1 and rle[0][:4] == (3).to_bytes(4, "little")  # 3 segments: R, G, B
    with pytest.raises(NotFound):
        transcode_frames(data, [9], ExplicitVRLittleEndian)


def test_native_frames_of_big_endian_come_out_little_endian() -> None:
    data = SOURCES["mr-bigendian"]()
    (frame,) = transcode_frames(data, [1], ExplicitVRLittleEndian)
    assert frame == _pixels(data).astype("<i2").tobytes()


# -- rendering ------------------------------------------------------------------


@pytest.mark.parametrize(
    "media_type, fmt", [("image/jpeg", "JPEG"), ("image/png", "PNG"), ("image/gif", "GIF")]
)
def test_render_media_types_and_viewport(media_type: str, fmt: str) -> None:
    data = td.to_bytes(td.make_ct(seed=6, rows=64, cols=128))
    image = Image.open(io.BytesIO(render(data, 1, media_type, viewport=(64, 64))))
    assert image.format == fmt
    assert image.size == (64, 32)  # fit, aspect kept
    image = Image.open(io.BytesIO(render(data, None, media_type, viewport=(256, 256))))
    assert image.size == (256, 128)


def test_render_windowing_and_monochrome1() -> None:
    ds = td.make_ct(seed=7)
    default = np.asarray(Image.open(io.BytesIO(render(td.to_bytes(ds), media_type="image/png"))))
    # the dataset's own window is 40/400 (soft tissue): lungs black, bone white
    hu = ds.pixel_array.astype(float) - 1024
    assert default[hu < -300].max() == 0 and default[hu > 300].min() == 255
    lung = render(td.to_bytes(ds), media_type="image/png", window=(-600, 1500, "linear"))
    lung = np.asarray(Image.open(io.BytesIO(lung)))
    assert lung[(hu > -900) & (hu < -700)].mean() > 50  # lungs now visible
    inverted = td.with_value(ds, "PhotometricInterpretation", "MONOCHROME1")
    mono1 = np.asarray(
        Image.open(io.BytesIO(render(td.to_bytes(inverted), media_type="image/png")))
    )
    assert np.array_equal(mono1.astype(int) + default, np.full(default.shape, 255))


def test_render_color_frames() -> None:
    data = SOURCES["us-j2k"]()
    original = _pixels(data)
    for frame in (1, 3):
        image = Image.open(io.BytesIO(render(data, frame, "image/png")))
        assert image.mode == "RGB"
        assert np.array_equal(np.asarray(image), original[frame - 1])
    with pytest.raises(NotFound):
        render(data, 7)
    with pytest.raises(NotAcceptable):
        render(data, 1, "image/tiff")


def test_render_without_pixels_and_thumbnail() -> None:
    with pytest.raises(NotAcceptable):
        render(get_testdata_file("test-SR.dcm"))
    thumb = Image.open(
        io.BytesIO(thumbnail(td.to_bytes(td.make_mr(seed=8, rows=200, cols=100)), 64))
    )
    assert thumb.format == "JPEG" and thumb.size == (32, 64)


@pytest.mark.parametrize(
    "name", ["MR_small_RLE.dcm", "JPEG2000.dcm", "SC_rgb_jpeg_dcmtk.dcm", "examples_palette.dcm"]
)
def test_render_corpus(name: str) -> None:
    image = Image.open(io.BytesIO(render(get_testdata_file(name), viewport=(50, 50))))
    ds = pydicom.dcmread(get_testdata_file(name))
    assert max(image.size) == 50
    assert image.size[0] / image.size[1] == pytest.approx(ds.Columns / ds.Rows, rel=0.05)
    assert np.asarray(image).std() > 1  # a picture, not a flat field


def test_frames_and_render_from_a_path_match_bytes(tmp_path: Path) -> None:
    data = td.to_bytes(td.compressed(td.make_us_multiframe(seed=9, frames=4), JPEGLSLossless))
    path = tmp_path / "x.dcm"
    path.write_bytes(data)
    for target in (ExplicitVRLittleEndian, JPEGLSLossless, JPEGLosslessSV1, RLELossless):
        assert transcode_frames(path, [4, 2], target) == transcode_frames(data, [4, 2], target)
    assert render(path, 3, "image/png") == render(data, 3, "image/png")
    native = tmp_path / "native.dcm"
    native.write_bytes(transcode_part10(path, ExplicitVRLittleEndian))
    assert transcode_frames(native, [2], ImplicitVRLittleEndian) == [_pixels(data)[1].tobytes()]


def test_one_frame_of_a_large_file_is_read_alone(tmp_path: Path) -> None:
    # 30 frames of 1024x1024x16 bits (60 MiB); rendering or extracting one frame
    # must not pull the whole pixel data into memory.
    ds = td.make_ct(seed=10, rows=1024, cols=1024)
    ds.NumberOfFrames = 30
    frame = ds.PixelData
    del ds.PixelData
    head = io.BytesIO()
    ds.save_as(head, enforce_file_format=True)
    path = tmp_path / "big.dcm"
    with open(path, "wb") as fp:
        fp.write(head.getvalue())
        fp.write(b"\xe0\x7f\x10\x00OW\0\0" + (len(frame) * 30).to_bytes(4, "little"))
        for _ in range(30):
            fp.write(frame)
    tracemalloc.start()
    try:
        (raw,) = transcode_frames(path, [30], ExplicitVRLittleEndian)
        image = Image.open(io.BytesIO(render(path, 30, "image/png", viewport=(128, 128))))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert raw == frame and image.size == (128, 128)
    assert peak < 40 * 2**20, peak


@pytest.mark.dcmtk
@pytest.mark.parametrize(
    "target, tool",
    [(JPEGLosslessSV1, "dcmdjpeg"), (JPEGLSLossless, "dcmdjpls"), (RLELossless, "dcmdrle")],
)
@pytest.mark.parametrize("source", ["ct", "us"])
def test_dcmtk_decodes_our_output_to_the_same_pixels(
    tmp_path: Path, source: str, target: str, tool: str
) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} (dcmtk) is not installed")
    data = SOURCES[source]()
    encoded, decoded = tmp_path / "in.dcm", tmp_path / "out.dcm"
    encoded.write_bytes(transcode_part10(data, target))
    subprocess.run([tool, str(encoded), str(decoded)], check=True, capture_output=True)
    assert np.array_equal(_pixels(decoded.read_bytes()), _pixels(data))


def test_extended_offset_table_source() -> None:
    native = td.make_us_multiframe(seed=11, frames=3)
    data = td.to_bytes(td.compressed(native, JPEGLosslessSV1, eot=True))
    for target in (ExplicitVRLittleEndian, JPEGLSLossless):
        out = _ds(transcode_part10(data, target))
        assert "ExtendedOffsetTable" not in out
        assert np.array_equal(out.pixel_array, native.pixel_array)
    assert np.array_equal(
        imagecodecs.jpeg8_decode(transcode_frames(data, [2], JPEGLosslessSV1)[0]),
        native.pixel_array[1],
    )


def test_broken_image_attributes_give_vna_errors() -> None:
    # pixel data but no Rows: pydicom raises AttributeError inside; we answer 406
    broken = td.with_value(td.make_ct(seed=12), "Rows", None)
    data = td.to_bytes(broken)
    for call in (
        lambda: transcode_part10(data, JPEGLSLossless),
        lambda: transcode_frames(data, [1], ExplicitVRLittleEndian),
        lambda: render(data),
    ):
        with pytest.raises(NotAcceptable):
            call()
