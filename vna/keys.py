"""Typed application keys shared by the app factory and the route modules."""

from __future__ import annotations

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractRoute

from vna.archive import Archive
from vna.index.base import Index
from vna.settings import Settings
from vna.storage.base import BlobStore

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", BlobStore)
INDEX = web.AppKey("index", Index)
ARCHIVE = web.AppKey("archive", Archive)
PERMISSIONS = web.AppKey("permissions", dict[AbstractRoute, str])
# True in the one serving process that owns the DIMSE service and background work
PRIMARY = web.AppKey("primary", bool)
# on a STOW-RS answer, for its audit record: (stored, failed, sorted study UIDs)
STOW_OUTCOME = web.ResponseKey("stow_outcome", tuple)
