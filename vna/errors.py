"""One error tree for the whole archive.

Every layer raises a ``VnaError`` subclass (never a library exception) so the
edges can answer consistently: one table maps errors to HTTP status (used by the
route guard every HTTP handler is wrapped in, vna.web.edge) and one helper maps
them to DIMSE status.  Where a builtin fits, the subclass also inherits it so
ordinary ``except KeyError`` code keeps working.

Each error carries a DICOM failure reason (PS3.4 / PS3.18 FailureReason codes),
used in STOW-RS FailedSOPSequence and as the DIMSE status.
"""

from __future__ import annotations

# DICOM failure reasons (PS3.4 Annex B, PS3.18 Table 10.5.3-1)
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111
SOP_CLASS_NOT_SUPPORTED = 0x0122
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000
REFERENCED_TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122
STUDY_UID_MISMATCH = 0xC409  # PS3.18: "Referenced Study Instance UID mismatch"


class VnaError(Exception):
    """Base of every error vna raises on purpose."""

    failure_reason: int = PROCESSING_FAILURE

    def __init__(self, message: str = "", *, failure_reason: int | None = None) -> None:
        super().__init__(message)
        self.message = message or self.__class__.__name__
        if failure_reason is not None:
            self.failure_reason = failure_reason

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return self.message


class BadRequest(VnaError, ValueError):
    """The request is malformed (bad query key, bad UID, bad multipart...)."""

    failure_reason = CANNOT_UNDERSTAND


class InvalidDicom(BadRequest):
    """The bytes are not a readable DICOM dataset, or lack required attributes."""

    failure_reason = CANNOT_UNDERSTAND


class StudyMismatch(BadRequest):
    """STOW-RS to /studies/{uid} with an instance of another study."""

    failure_reason = STUDY_UID_MISMATCH


class UnsupportedMediaType(VnaError, ValueError):
    failure_reason = CANNOT_UNDERSTAND


class NotAcceptable(VnaError, ValueError):
    """No representation the server can produce matches the Accept header."""

    failure_reason = REFERENCED_TRANSFER_SYNTAX_NOT_SUPPORTED


class NotFound(VnaError, KeyError):
    pass


class AlreadyExists(VnaError, FileExistsError):
    pass


class Conflict(VnaError):
    """Different content under an existing SOP Instance UID, refused by policy."""

    failure_reason = DUPLICATE_SOP_INSTANCE


class Unauthorized(VnaError, PermissionError):
    pass


class Forbidden(VnaError, PermissionError):
    pass


class NotReady(VnaError):
    """The resource exists but is still being built (e.g. a slide pyramid)."""

    def __init__(self, message: str = "", *, retry_after: int = 2, progress: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.progress = progress


class StorageError(VnaError, OSError):
    """The blob store or index could not do its job (disk full, S3 down...)."""

    failure_reason = OUT_OF_RESOURCES


class IntegrityError(StorageError):
    """A blob's bytes no longer match the checksum recorded when it was stored."""

    failure_reason = PROCESSING_FAILURE


class SlideError(VnaError, ValueError):
    """A slide cannot be opened or converted (corrupt, truncated, unsupported)."""


class Cancelled(VnaError):
    pass


# The one table from error type to HTTP status; the most specific class wins.
HTTP_STATUS: dict[type[VnaError], int] = {
    BadRequest: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    NotAcceptable: 406,
    Conflict: 409,
    AlreadyExists: 409,
    UnsupportedMediaType: 415,
    SlideError: 422,
    NotReady: 503,
    StorageError: 503,
    IntegrityError: 500,
    Cancelled: 409,
    VnaError: 500,
}


def http_status(exc: VnaError) -> int:
    for cls in type(exc).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 500


def dimse_status(exc: BaseException) -> int:
    """The DIMSE status for a failed operation (C-STORE and friends)."""
    if isinstance(exc, VnaError):
        return exc.failure_reason
    if isinstance(exc, MemoryError | OSError):
        return OUT_OF_RESOURCES
    return PROCESSING_FAILURE
