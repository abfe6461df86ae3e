"""JPEG bytes: encode/decode with GIL-releasing codecs, and marker surgery for passthrough.

Tiles copied from a source without decoding must be standalone JFIF streams a
browser decodes as they are: TIFF stores "abbreviated" tiles whose quantization
and Huffman tables live once in the JPEGTables tag (spliced back in here), and
Aperio writes some slides with RGB (not YCbCr) JPEG data but no Adobe marker, which
decoders would colour-convert wrongly unless an APP14 with transform=0 says so.
"""

from __future__ import annotations

import threading

import imagecodecs
import numpy as np

from vna.errors import SlideError

SOI, EOI, SOS, APP0, APP14 = 0xD8, 0xD9, 0xDA, 0xE0, 0xEE
# Adobe APP14: "Adobe", version 100, flags0, flags1, transform 0 (= no colour transform: RGB).
ADOBE_RGB = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"


def encode_jpeg(rgb: np.ndarray, quality: int = 85) -> bytes:
    """Baseline JFIF of an (H, W, 3) uint8 array; libjpeg-turbo, GIL released."""
    try:
        return bytes(imagecodecs.jpeg8_encode(np.ascontiguousarray(rgb), level=quality))
    except Exception as exc:  # imagecodecs raises its own error types
        raise SlideError(f"JPEG encode failed: {exc}") from exc


def decode_jpeg(data: bytes) -> np.ndarray:
    """(H, W, 3) uint8 pixels; honours APP14/JFIF colour transforms; grayscale expanded."""
    try:
        arr = imagecodecs.jpeg8_decode(data)
    except Exception as exc:
        raise SlideError(f"corrupt JPEG tile: {exc}") from exc
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return arr


def segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, start, end) of each header segment up to and including SOS."""
    if data[:2] != b"\xff\xd8":
        raise SlideError("not a JPEG stream (no SOI)")
    out: list[tuple[int, int, int]] = []
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise SlideError("corrupt JPEG header")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        out.append((marker, pos, pos + 2 + length))
        if marker == SOS:
            break
        pos += 2 + length
    return out


def has_marker(data: bytes, marker: int) -> bool:
    return any(m == marker for m, _, _ in segments(data))


def splice_tables(tile: bytes, tables: bytes | None) -> bytes:
    """Make an abbreviated TIFF tile whole by inserting the JPEGTables' DQT/DHT after its SOI."""
    if not tables:
        return tile
    body = tables[2:-2] if tables[-2:] == b"\xff\xd9" else tables[2:]
    return tile[:2] + body + tile[2:]


def set_colour_transform(data: bytes, transform: int) -> bytes:
    """Put one Adobe APP14 with the given transform (0 = RGB, 1 = YCbCr) right after SOI.

    Any JFIF APP0 goes too: decoders let JFIF win and would assume YCbCr.
    """
    drop = [(s, e) for m, s, e in segments(data) if m in (APP0, APP14)]
    out = bytearray(data[:2] + ADOBE_RGB[:-1] + bytes([transform]))
    pos = 2
    for s, e in drop:
        out += data[pos:s]
        pos = e
    out += data[pos:]
    return bytes(out)


def mark_rgb(data: bytes) -> bytes:
    """Mark RGB-coded JPEG (Aperio's Photometric RGB tiles) so decoders skip YCbCr->RGB."""
    return set_colour_transform(data, 0)


def adobe_transform(data: bytes) -> int | None:
    """The transform flag of the stream's Adobe APP14 marker, None without one."""
    for m, s, e in segments(data):
        if m == APP14 and data[s + 4 : s + 9] == b"Adobe" and e - s >= 16:
            return data[s + 15]
    return None


def encode_tile(rgb: np.ndarray, fmt: str = "jpeg", quality: int = 85) -> bytes:
    """Encode an (H, W, 3) uint8 array as 'jpeg', 'png' or 'webp' for the tile server."""
    rgb = np.ascontiguousarray(rgb)
    try:
        if fmt in ("jpeg", "jpg"):
            return encode_jpeg(rgb, quality)
        if fmt == "png":
            return bytes(imagecodecs.png_encode(rgb, level=3))
        if fmt == "webp":
            return bytes(imagecodecs.webp_encode(rgb, level=quality))
    except SlideError:
        raise
    except Exception as exc:
        raise SlideError(f"{fmt} encode failed: {exc}") from exc
    raise SlideError(f"unsupported tile format {fmt!r}")


_turbo = threading.local()


def _turbojpeg():  # type: ignore[no-untyped-def]  # one handle per thread: not thread-safe
    if not hasattr(_turbo, "tj"):
        try:
            from turbojpeg import TurboJPEG

            _turbo.tj = _strict(TurboJPEG())
        except Exception:  # libturbojpeg0 missing: fall back to imagecodecs / re-encoding
            _turbo.tj = None
    return _turbo.tj


def _strict(tj):  # type: ignore[no-untyped-def]
    """Make this handle raise on libjpeg warnings ("Corrupt JPEG data", "Premature end").

    PyTurboJPEG turns them into warnings.warn(), and catching those is not thread-safe
    (warnings.catch_warnings swaps process-wide state), so its private reporter is
    replaced on this handle: decoding with TJFLAG_STOPONWARNING then fails loudly,
    as OpenSlide does, instead of letting a damaged tile through.
    """
    get_string = tj._TurboJPEG__get_error_string

    def report(handle) -> None:  # type: ignore[no-untyped-def]
        raise SlideError(f"corrupt JPEG tile: {get_string(handle)}")

    tj._TurboJPEG__report_error = report
    return tj


def _turbo_decode(data: bytes, scale: tuple[int, int] | None) -> np.ndarray:
    """libjpeg-turbo decode that fails on any warning (see _strict)."""
    from turbojpeg import TJFLAG_STOPONWARNING, TJPF_RGB

    return _turbojpeg().decode(
        data, pixel_format=TJPF_RGB, scaling_factor=scale, flags=TJFLAG_STOPONWARNING
    )


def decode_source_tile(data: bytes) -> np.ndarray:
    """(H, W, 3) pixels of a source's JPEG tile; SlideError when it is in any way corrupt."""
    if _turbojpeg() is None:
        return decode_jpeg(data)
    try:
        return _turbo_decode(data, None)
    except SlideError:
        raise
    except Exception as exc:
        raise SlideError(f"corrupt JPEG tile: {exc}") from exc


def decode_jpeg_half(data: bytes) -> np.ndarray | None:
    """(H/2, W/2, 3) pixels decoded at half scale in the DCT domain; None if unavailable
    or if the data is damaged (the caller's full decode then reports it)."""
    if _turbojpeg() is None:
        return None
    try:
        return _turbo_decode(data, (1, 2))
    except Exception:
        return None


def crop_jpeg_lossless(jpeg: bytes, width: int, height: int) -> bytes:
    """The top-left width x height of a JPEG (an edge tile's real pixels) without re-encoding.

    libjpeg-turbo's lossless transform (PyTurboJPEG, needs Debian's libturbojpeg0)
    keeps the DCT coefficients; without it the tile is decoded, cropped and re-encoded.
    """
    tj = _turbojpeg()
    if tj is not None:
        try:
            return bytes(tj.crop(jpeg, 0, 0, width, height))
        except Exception:  # e.g. a marker layout TurboJPEG refuses: re-encode instead
            pass
    pixels = decode_jpeg(jpeg)[:height, :width]
    return encode_jpeg(pixels, 90)
