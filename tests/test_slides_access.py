"""The tile-quiet access logger: slide opens and errors are logged, tile reads are not."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from vna.slides.access import TileQuietAccessLogger

SID = "0123456789abcdef0123456789abcdef"


def logged(path: str, status: int = 200, method: str = "GET") -> bool:
    records: list[logging.LogRecord] = []
    logger = logging.getLogger(f"test-access-{path}-{status}")
    logger.setLevel(logging.INFO)
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    TileQuietAccessLogger(logger, "%r %s").log(
        make_mocked_request(method, path), web.Response(status=status), 0.001
    )
    return bool(records)


def test_tiles_are_not_logged():
    assert not logged(f"/slides/{SID}_files/12/3_4.jpeg")
    assert not logged(f"/slides/{SID}_files/12/3_4.jpeg", 304)
    assert not logged(f"/iiif/3/{SID}/0,0,512,512/256,/0/default.jpg")


def test_slide_opens_errors_and_the_rest_are_logged():
    assert logged(f"/slides/{SID}.dzi")
    assert logged(f"/iiif/3/{SID}/info.json")
    assert logged(f"/iiif/3/{SID}/manifest.json")
    assert logged(f"/slides/{SID}")
    assert logged(f"/slides/{SID}_files/99/0_0.jpeg", 404)
    assert logged("/dicom-web/studies")
    assert logged("/slides", 202, "POST")
