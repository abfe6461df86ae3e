"""DICOM instances: parsing stored Part-10 files, transcoding and rendering.

parse_part10(path) -> ParsedInstance   identity, checksums, frame map, DICOM JSON
read_bulk(path, "bulk/7FE00010")       a BulkDataURI's bytes
write_part10_from_dataset_bytes(...)   wrap a received dataset, bytes untouched
transcode_part10 / transcode_frames    (vna.dicom.transcode)
render / thumbnail                     (vna.dicom.render)
"""

from vna.dicom.metadata import BULK_PREFIX, BULK_THRESHOLD
from vna.dicom.parse import (
    ParsedInstance,
    check_uid,
    parse_part10,
    parse_part10_bytes,
    valid_uid,
)
from vna.dicom.part10 import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    bulk_location,
    dataset_bytes,
    part10_header,
    read_bulk,
    write_part10_from_dataset_bytes,
)

__all__ = [
    "BULK_PREFIX",
    "BULK_THRESHOLD",
    "IMPLEMENTATION_CLASS_UID",
    "IMPLEMENTATION_VERSION_NAME",
    "ParsedInstance",
    "bulk_location",
    "check_uid",
    "dataset_bytes",
    "parse_part10",
    "parse_part10_bytes",
    "part10_header",
    "read_bulk",
    "valid_uid",
    "write_part10_from_dataset_bytes",
]
