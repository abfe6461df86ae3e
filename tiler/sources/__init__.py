"""Open any supported slide (file, DICOM WSI folder, or ZIP of either) as a SlideSource."""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile

from tiler.sources.base import SlideSource, SourceLevel
from vna.errors import SlideError

__all__ = ["SlideSource", "SourceLevel", "open_slide"]


def _is_dicom(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _dicom_files(folder: str) -> list[str]:
    out = []
    for root, _, names in os.walk(folder):
        out += [os.path.join(root, n) for n in names if _is_dicom(os.path.join(root, n))]
    return sorted(out)


def _open_folder(folder: str) -> SlideSource:
    files = _dicom_files(folder)
    if files:
        from tiler.sources.dicom_source import DicomSource

        return DicomSource(files)
    for root, _, names in os.walk(folder):
        for n in sorted(names):
            if n.lower().endswith(
                (".mrxs", ".svs", ".ndpi", ".tif", ".tiff", ".vms", ".scn", ".bif")
            ):
                return _open_file(os.path.join(root, n))
    raise SlideError("no slide found in folder")


def _open_file(path: str) -> SlideSource:
    if _is_dicom(path):
        from tiler.sources.dicom_source import DicomSource

        return DicomSource(_dicom_files(os.path.dirname(path)) or [path])
    from tiler.sources.openslide_source import OpenSlideSource

    return OpenSlideSource(path)


def _extract(path: str, dest: str) -> None:
    """Extract a ZIP refusing absolute or escaping member names (zip slip)."""
    root = os.path.realpath(dest)
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            target = os.path.realpath(os.path.join(root, info.filename))
            if not target.startswith(root + os.sep) and target != root:
                raise SlideError(f"unsafe path in ZIP: {info.filename!r}")
        zf.extractall(root)


class _TempDirSource:
    """A source opened from an extracted ZIP; closing it removes the extraction."""

    def __init__(self, inner: SlideSource, tmp: str) -> None:
        self._inner, self._tmp = inner, tmp

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self._inner, name)

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            shutil.rmtree(self._tmp, ignore_errors=True)


def open_slide(path: str) -> SlideSource:
    """Synchronously open a slide: a vendor file, a DICOM WSI folder/file, or a ZIP of those.

    MIRAX (.mrxs + its folder) and DICOM WSI series are uploaded as ZIPs: they are
    extracted to a temporary directory that the returned source's close() removes.
    """
    if os.path.isdir(path):
        return _open_folder(path)
    if not os.path.isfile(path):
        raise SlideError(f"no such slide file: {path}")
    if zipfile.is_zipfile(path) and not _is_dicom(path):
        tmp = tempfile.mkdtemp(prefix="vna-slide-")
        try:
            _extract(path, tmp)
            return _TempDirSource(_open_folder(tmp), tmp)  # type: ignore[return-value]
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, SlideError):
                raise
            raise SlideError(f"cannot open ZIP slide: {exc}") from exc
    return _open_file(path)
