"""Exports of stored instances: the streamed ZIP with a DICOMDIR (a share's
download, instead of a CD).

    async for chunk in dicom_zip(archive, records, deid=None): ...
"""

from vna.export.dicomdir import Directory, Entry, build
from vna.export.zipstream import deidentified_chunks, dicom_zip

__all__ = ["Directory", "Entry", "build", "deidentified_chunks", "dicom_zip"]
