"""Tile reads in the audit trail: one row per (caller, slide, outcome) per five minutes,
whatever mix of Deep Zoom and IIIF URLs the viewer uses (vna.audit.requests)."""

from __future__ import annotations

import time

import requests

from tests.test_slides_iiif import TILE, add_slide, server, svs  # noqa: F401 (fixtures)
from vna.index.security import AuditQuery
from vna.keys import INDEX


def views(server) -> list:  # noqa: F811
    return server.call(server.app[INDEX].find_audit(AuditQuery(action="view", limit=1000)))


def wait_for_view(server, slide_id: str) -> list:  # noqa: F811
    """All view rows, once the one of ``slide_id`` is written: the trail writes in
    order, so every view recorded before it is written too."""
    deadline = time.monotonic() + 60
    while True:
        rows = views(server)
        if any(r.slide_id == slide_id for r in rows):
            return rows
        assert time.monotonic() < deadline, "the view was never recorded"
        time.sleep(0.2)


def test_tile_reads_are_recorded_once_per_slide_and_outcome(server, svs):  # noqa: F811
    first, second = add_slide(server, svs), add_slide(server, svs)
    base = f"{server.url}/iiif/3/{first['id']}"
    urls = [
        f"{server.url}/slides/{first['id']}_files/10/{c}_0.jpeg?build={first['build_id']}"
        for c in range(3)
    ]
    urls += [f"{base}/{TILE}", f"{base}~{first['build_id']}/{TILE}"]
    for url in urls * 3:
        assert requests.get(url, timeout=30).status_code == 200
    outside = f"{server.url}/slides/{first['id']}_files/10/99_99.jpeg"
    for _ in range(3):
        assert requests.get(outside, timeout=30).status_code == 404
    # the second slide's view, read last, is written after everything before it
    assert requests.get(f"{server.url}/iiif/3/{second['id']}/{TILE}", timeout=30).ok
    rows = wait_for_view(server, second["id"])
    got = sorted((r.slide_id, r.outcome, r.who) for r in rows)
    assert got == sorted(
        [
            (first["id"], "success", "dev"),
            (first["id"], "failure", "dev"),
            (second["id"], "success", "dev"),
        ]
    )
    tile_row = next(r for r in rows if r.slide_id == first["id"] and r.outcome == "success")
    assert tile_row.status == 200 and tile_row.route.startswith("/slides/")
