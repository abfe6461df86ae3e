"""What every DIMSE handler needs, in one object handed to the handlers."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from pydicom.dataset import Dataset

from vna.archive.service import Archive
from vna.dimse.audit import Trail
from vna.dimse.net import LoopBridge
from vna.dimse.peers import PeerRegistry
from vna.settings import Settings


@dataclass(slots=True)
class HandlerContext:
    settings: Settings
    archive: Archive
    bridge: LoopBridge
    peers: PeerRegistry
    audit: Trail | None = None  # vna.audit.AuditTrail when the app keeps one
    # background work that must outlive a handler (storage commitment reports)
    workers: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=4, thread_name_prefix="vna-dimse")
    )


def status(code: int, comment: str = "") -> Dataset:
    """A status dataset; ErrorComment is LO, at most 64 characters."""
    ds = Dataset()
    ds.Status = code
    if comment:
        ds.ErrorComment = comment.replace("\\", "/")[:64]
    return ds
