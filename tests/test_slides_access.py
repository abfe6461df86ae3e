"""The tile-quiet access logger: slide opens and errors are logged, tile reads are not.
(tests/test_slides_serve.py checks the same on the log of a running ``vna serve``.)"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from vna.slides.access import REDACTED, TileQuietAccessLogger, TileResponse

SID = "0123456789abcdef0123456789abcdef"


def log_lines(
    path: str,
    status: int = 200,
    method: str = "GET",
    fmt: str = "%r %s",
    cls: type[web.Response] = web.Response,
) -> list[str]:
    """What the logger writes for one request (nothing, or one line)."""
    records: list[logging.LogRecord] = []
    logger = logging.getLogger(f"test-access-{path}-{status}-{fmt}")
    logger.setLevel(logging.INFO)
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    TileQuietAccessLogger(logger, fmt).log(
        make_mocked_request(method, path), cls(status=status), 0.001
    )
    return [r.getMessage() for r in records]


def logged(path: str, status: int = 200, method: str = "GET") -> bool:
    return bool(log_lines(path, status, method))


def test_tiles_are_not_logged():
    """The tile routes answer a tile with a TileResponse (200 or 304)."""
    for status in (200, 304):
        assert not log_lines(f"/slides/{SID}_files/12/3_4.jpeg", status, cls=TileResponse)
        assert not log_lines(f"/iiif/3/{SID}/0,0,512,512/256,/0/default.jpg", cls=TileResponse)


def test_slide_opens_errors_and_the_rest_are_logged():
    assert logged(f"/slides/{SID}.dzi")
    assert logged(f"/iiif/3/{SID}/info.json")
    assert logged(f"/iiif/3/{SID}/manifest.json")
    assert logged(f"/slides/{SID}")
    assert logged(f"/slides/{SID}_files/99/0_0.jpeg", 404)
    assert logged("/dicom-web/studies")
    assert logged("/slides", 202, "POST")


def _line(path: str) -> str:
    [line] = log_lines(path, 303, fmt=web.AccessLogger.LOG_FORMAT)
    return line


def test_share_tokens_are_blanked_out():
    token = "q3Zt0y8Xh2kP1-abcDEF_ghiJKLmnoPQRstuVWXyz012"
    line = _line(f"/share/{token}")
    assert token not in line
    assert '"GET /share/[token] HTTP/1.1" 303' in line
    assert token not in _line(f"/share/{token}?pin=1")
    # the share session's own routes, and everything else, are logged as they are
    assert "GET /share/download HTTP/1.1" in _line("/share/download")
    assert "GET /dicom-web/studies?PatientID=7 HTTP/1.1" in _line("/dicom-web/studies?PatientID=7")


def test_tokens_are_blanked_whichever_logger_was_made_first():
    """aiohttp caches compiled log formats across logger classes: a plain logger
    made first (as the test servers' are) must not make ours log tokens."""
    fmt = '%a "%r" %s (a format no other test compiles)'
    web.AccessLogger(logging.getLogger("test-access-plain"), fmt)
    records: list[logging.LogRecord] = []
    logger = logging.getLogger("test-access-after-plain")
    logger.setLevel(logging.INFO)
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    token = "Zq3t0y8Xh2kP1-abcDEF_ghiJKLmnoPQRstuVWXyz012"
    TileQuietAccessLogger(logger, fmt).log(
        make_mocked_request("GET", f"/share/{token}"), web.Response(status=303), 0.001
    )
    [record] = records
    assert token not in record.getMessage() and REDACTED in record.getMessage()
