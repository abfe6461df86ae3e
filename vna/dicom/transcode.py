"""Transcoding between transfer syntaxes, whole instances or single frames.

Decoding is pydicom's (with the pylibjpeg / openjpeg plugins); encoding is
imagecodecs for JPEG (libjpeg-turbo: baseline and lossless), JPEG-LS (CharLS) and
JPEG 2000 (OpenJPEG), and pydicom for RLE -- pydicom 3 alone encodes only RLE and
JPEG 2000.  Everything here is CPU-bound and synchronous: call it in a thread.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any, TypeVar

import imagecodecs
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, encapsulate_extended, generate_frames
from pydicom.pixels import get_decoder, pack_bits, pixel_array
from pydicom.pixels.encoders import RLELosslessEncoder
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from vna.dicom.parse import locate_frames
from vna.dicom.walk import DEFLATED
from vna.errors import InvalidDicom, NotAcceptable, NotFound, VnaError

NATIVE = frozenset({ImplicitVRLittleEndian, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian})
COMPRESSED_TARGETS = frozenset(
    {
        JPEGBaseline8Bit,
        JPEGLossless,
        JPEGLosslessSV1,
        JPEGLSLossless,
        JPEG2000Lossless,
        JPEG2000,
        RLELossless,
    }
)
# Every transfer syntax we can write, whatever the source.
PRODUCIBLE: frozenset[str] = NATIVE | COMPRESSED_TARGETS
LOSSY = frozenset({JPEGBaseline8Bit})
_READABLE_NATIVE = NATIVE | {ExplicitVRBigEndian}

Source = str | Path | bytes | Dataset
_F = TypeVar("_F", bound=Callable[..., Any])


def guarded(func: _F) -> _F:
    """Let only VnaErrors (and MemoryError) out of a public entry point: a stored
    instance that cannot be converted or rendered is NotAcceptable, not a 500."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (VnaError, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 -- pydicom / numpy / codec errors
            raise NotAcceptable(
                f"cannot convert this instance: {type(exc).__name__}: {exc}"
            ) from None

    return wrapper  # type: ignore[return-value]


def can_decode(ts: str) -> bool:
    if ts in _READABLE_NATIVE:
        return True
    try:
        return bool(get_decoder(UID(ts)).is_available)
    except (NotImplementedError, ValueError):
        return False


def can_transcode(src_ts: str, dst_ts: str) -> bool:
    """Whether an instance in ``src_ts`` can be given in ``dst_ts``."""
    return src_ts == dst_ts or (dst_ts in PRODUCIBLE and can_decode(src_ts))


def load(src: Source, *, lazy: bool = False) -> Dataset:
    """A dataset from a path, Part-10 bytes or a Dataset (copied).  With ``lazy``
    and a path, values over 256 KiB (the pixel data) stay on disk."""
    if isinstance(src, Dataset):
        return copy.deepcopy(src)
    try:
        if isinstance(src, bytes):
            return pydicom.dcmread(BytesIO(src), force=True)
        return pydicom.dcmread(str(src), force=True, defer_size="256 KB" if lazy else None)
    except Exception as exc:  # noqa: BLE001 -- pydicom raises many types
        raise InvalidDicom(f"unreadable DICOM: {exc}") from None


def file_path(src: Source) -> str | None:
    return str(src) if isinstance(src, str | Path) else None


def source_ts(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    ts = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if not ts:
        raise InvalidDicom("the instance has no TransferSyntaxUID")
    return ts


def number_of_frames(ds: Dataset) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames") or 1))
    except (TypeError, ValueError):
        return 1


def decode_frame(ds: Dataset, index: int, path: str | None = None) -> np.ndarray:
    """One frame (0-based) as an array; color comes out RGB.  Given the file's
    ``path``, pydicom reads just that frame from disk instead of the whole value."""
    from_file = path is not None and source_ts(ds) not in DEFLATED
    try:
        return _native_order(pixel_array(path if from_file else ds, index=index))
    except Exception as exc:  # noqa: BLE001 -- decoder plugins raise many types
        raise NotAcceptable(f"cannot decode {UID(source_ts(ds)).name}: {exc}") from None


def _native_order(arr: np.ndarray) -> np.ndarray:
    """Big-endian sources decode to big-endian arrays; codecs want native order."""
    return arr if arr.dtype.isnative else arr.astype(arr.dtype.newbyteorder("="))


def _bits_for(frame: np.ndarray, ds: Dataset) -> int:
    """Sample precision for a lossless JPEG: BitsStored when the values fit,
    else the container (signed values travel as their unsigned bit pattern)."""
    stored = int(ds.get("BitsStored", frame.dtype.itemsize * 8))
    if frame.dtype.kind == "u" and 2 <= stored <= 16 and int(frame.max(initial=0)) < (1 << stored):
        return stored
    return frame.dtype.itemsize * 8


def encode_frame(frame: np.ndarray, ds: Dataset, ts: str, quality: int = 90) -> bytes:
    """One frame's codestream in ``ts`` (not RLE); NotAcceptable when impossible."""
    if frame.dtype.kind == "i":
        frame = frame.view(frame.dtype.str.replace("i", "u"))
    if frame.dtype.itemsize > 2 or frame.dtype.kind == "f":
        raise NotAcceptable(f"{UID(ts).name} cannot hold {frame.dtype.itemsize * 8}-bit samples")
    try:
        if ts == JPEGBaseline8Bit:
            if frame.dtype.itemsize != 1:
                raise NotAcceptable("JPEG Baseline needs 8-bit samples; this image has more")
            sub = "422" if frame.ndim == 3 else None
            return bytes(imagecodecs.jpeg8_encode(frame, level=quality, subsampling=sub))
        if ts in (JPEGLossless, JPEGLosslessSV1):
            bits = _bits_for(frame, ds)
            return bytes(
                imagecodecs.jpeg8_encode(frame, lossless=True, predictor=1, bitspersample=bits)
            )
        if ts == JPEGLSLossless:
            return bytes(imagecodecs.jpegls_encode(frame, level=0))
        if ts in (JPEG2000Lossless, JPEG2000):
            return bytes(
                imagecodecs.jpeg2k_encode(
                    frame, level=0, codecformat="J2K", reversible=True, mct=False
                )
            )
    except NotAcceptable:
        raise
    except Exception as exc:  # noqa: BLE001 -- codec errors
        raise NotAcceptable(f"cannot encode this image as {UID(ts).name}: {exc}") from None
    raise NotAcceptable(f"cannot encode {UID(ts).name}")


def _to_native(ds: Dataset, ts: str) -> Dataset:
    """``ds`` with native little-endian pixel data (decoded if needed)."""
    src = source_ts(ds)
    if "PixelData" not in ds or src in NATIVE:
        return ds
    if src == ExplicitVRBigEndian:
        _set_native(ds, _decode_all(ds))
        # the pixel bytes are little-endian now; the decoders look at the TS
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        return ds
    try:
        ds.decompress(generate_instance_uid=False)
    except Exception as exc:  # noqa: BLE001 -- decoder plugins raise many types
        raise NotAcceptable(f"cannot decode {UID(src).name}: {exc}") from None
    for attr in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):  # native: no tables
        if attr in ds:
            delattr(ds, attr)
    return ds


def _decode_all(ds: Dataset) -> np.ndarray:
    try:
        return _native_order(ds.pixel_array)
    except Exception as exc:  # noqa: BLE001
        raise NotAcceptable(f"cannot decode the pixel data: {exc}") from None


def _set_native(ds: Dataset, arr: np.ndarray) -> None:
    if int(ds.get("BitsAllocated", 8)) == 1:
        data = pack_bits(arr)
    else:
        data = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
    ds.PixelData = data + (b"\0" if len(data) % 2 else b"")
    ds["PixelData"].VR = "OW" if int(ds.get("BitsAllocated", 8)) > 8 else "OB"
    ds["PixelData"].is_undefined_length = False


def _to_compressed(ds: Dataset, ts: str) -> Dataset:
    if "PixelData" not in ds:
        return ds
    ds = _to_native(ds, ts)
    if ts == RLELossless:
        try:
            ds.compress(RLELossless, generate_instance_uid=False)
        except Exception as exc:  # noqa: BLE001
            raise NotAcceptable(f"cannot encode this image as RLE Lossless: {exc}") from None
        return ds
    n = number_of_frames(ds)
    arr = _decode_all(ds)
    frames = [encode_frame(f, ds, ts) for f in ([arr] if n == 1 else arr)]
    if sum(map(len, frames)) + 8 * len(frames) < 2**32:
        ds.PixelData = encapsulate(frames, has_bot=True)
    else:  # the 32-bit Basic Offset Table would overflow
        ds.PixelData, ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = encapsulate_extended(
            frames
        )
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    if ts in LOSSY:
        _mark_lossy(ds, ratio=arr.nbytes / max(1, sum(map(len, frames))))
    return ds


def _mark_lossy(ds: Dataset, ratio: float) -> None:
    """PS3.3 C.7.6.1.1.5: a lossy compressed version of a DICOM image is a DERIVED
    image with a new SOP Instance UID, referencing its source.  The new UID is
    derived from the original, so every retrieval of the same lossy version names
    it alike, and the stored original keeps its own."""
    source_uid, source_class = str(ds.SOPInstanceUID), ds.SOPClassUID
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    ds.LossyImageCompressionRatio = f"{ratio:.2f}"[:16]
    if int(ds.get("SamplesPerPixel", 1)) == 3:
        ds.PhotometricInterpretation = "YBR_FULL_422"
    kept = list(ds.get("ImageType") or [])[1:] or ["PRIMARY"]
    ds.ImageType = ["DERIVED", *kept]
    ds.DerivationDescription = f"Lossy JPEG baseline compression by vna, ratio {ratio:.1f}:1"[:1024]
    ref = Dataset()
    ref.ReferencedSOPClassUID = source_class
    ref.ReferencedSOPInstanceUID = source_uid
    ds.SourceImageSequence = [*ds.get("SourceImageSequence", []), ref]
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[source_uid, str(JPEGBaseline8Bit)])
    if getattr(ds, "file_meta", None) is not None:
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID


def to_bytes(ds: Dataset, ts: str) -> bytes:
    ds.file_meta.TransferSyntaxUID = UID(ts)
    buf = BytesIO()
    try:
        # dcmwrite (not save_as) so that a big-endian source can be written little-endian
        pydicom.dcmwrite(
            buf,
            ds,
            implicit_vr=ts == ImplicitVRLittleEndian,
            little_endian=True,
            enforce_file_format=True,
        )
    except Exception as exc:  # noqa: BLE001 -- pydicom write errors
        raise NotAcceptable(f"cannot write the instance as {UID(ts).name}: {exc}") from None
    return buf.getvalue()


@guarded
def transcode_part10(src: Source, target_ts: str) -> bytes:
    """The instance as a Part-10 file in ``target_ts``; NotAcceptable if impossible."""
    ds = load(src)
    ts = source_ts(ds)
    if ts == target_ts and not isinstance(src, Dataset):
        return src if isinstance(src, bytes) else Path(src).read_bytes()
    if not can_transcode(ts, target_ts):
        raise NotAcceptable(f"cannot convert {UID(ts).name} to {UID(target_ts).name}")
    ds = _to_native(ds, target_ts) if target_ts in NATIVE else _to_compressed(ds, target_ts)
    return to_bytes(ds, target_ts)


def _frame_indices(ds: Dataset, frames: list[int] | None) -> list[int]:
    n = number_of_frames(ds)
    wanted = frames or list(range(1, n + 1))
    for f in wanted:
        if not 1 <= f <= n:
            raise NotFound(f"frame {f} does not exist (the instance has {n})")
    return [f - 1 for f in wanted]


def _native_frame_bytes(ds: Dataset, index: int, path: str | None) -> bytes:
    """A native frame's bytes from the value when byte-addressable (this is
    reached only when the frame could not be located in the file)."""
    rows, cols = int(ds.Rows), int(ds.Columns)
    bits = rows * cols * int(ds.get("SamplesPerPixel", 1)) * int(ds.BitsAllocated)
    if bits % 8 == 0:
        size = bits // 8
        return bytes(ds.PixelData[index * size : (index + 1) * size])
    return pack_bits(decode_frame(ds, index, path))


def _stored_frames(path: str, indices: list[int]) -> list[bytes] | None:
    """Frames straight from the file's bytes, when they can be located."""
    _, _, located = locate_frames(path)
    if located is None:
        return None
    with open(path, "rb") as fp:
        out = []
        for i in indices:
            parts = []
            for offset, length in located[i]:
                fp.seek(offset)
                parts.append(fp.read(length))
            out.append(b"".join(parts))
    return out


def _stored_codestreams(ds: Dataset) -> list[bytes]:
    """The encapsulated frames of an in-memory dataset, using its offset tables."""
    ext = None
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        ext = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
    n = number_of_frames(ds)
    return list(generate_frames(ds.PixelData, number_of_frames=n, extended_offsets=ext))


def _rle_frame(arr: np.ndarray, ds: Dataset) -> bytes:
    try:
        return RLELosslessEncoder.encode(
            arr,
            rows=int(ds.Rows),
            columns=int(ds.Columns),
            samples_per_pixel=int(ds.get("SamplesPerPixel", 1)),
            bits_allocated=int(ds.BitsAllocated),
            bits_stored=int(ds.get("BitsStored", ds.BitsAllocated)),
            pixel_representation=int(ds.get("PixelRepresentation", 0)),
            photometric_interpretation="RGB"
            if arr.ndim == 3
            else str(ds.PhotometricInterpretation),
            number_of_frames=1,
            planar_configuration=0,  # decoded arrays are always pixel-interleaved
        )
    except Exception as exc:  # noqa: BLE001
        raise NotAcceptable(f"cannot encode this image as RLE Lossless: {exc}") from None


@guarded
def transcode_frames(src: Source, frames: list[int] | None, target_ts: str) -> list[bytes]:
    """Frames (1-based; None: all) in ``target_ts``: raw little-endian pixel bytes
    for native syntaxes, the frame's codestream for compressed ones.  From a path,
    only the requested frames are read."""
    path = file_path(src)
    ds = load(src, lazy=path is not None)
    if "PixelData" not in ds:
        raise NotFound("the instance has no pixel data")
    ts, indices = source_ts(ds), _frame_indices(ds, frames)
    if not can_transcode(ts, target_ts):
        raise NotAcceptable(f"cannot convert {UID(ts).name} frames to {UID(target_ts).name}")
    as_stored = ts == target_ts or (ts in NATIVE and target_ts in NATIVE)
    if as_stored and path is not None and (found := _stored_frames(path, indices)) is not None:
        return found
    if ts == target_ts and ts not in _READABLE_NATIVE:
        every = _stored_codestreams(ds)
        return [every[i] for i in indices]
    if target_ts in NATIVE and ts in NATIVE:
        return [_native_frame_bytes(ds, i, path) for i in indices]
    decoded = (decode_frame(ds, i, path) for i in indices)
    if target_ts in NATIVE:
        return [_to_le(arr) for arr in decoded]
    if target_ts == RLELossless:
        return [_rle_frame(arr, ds) for arr in decoded]
    return [encode_frame(arr, ds, target_ts) for arr in decoded]


def _to_le(arr: np.ndarray) -> bytes:
    return arr.astype(arr.dtype.newbyteorder("<")).tobytes()
