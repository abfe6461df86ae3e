"""What every DIMSE handler needs, in one object handed to the handlers."""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pynetdicom import evt

from vna.archive.service import Archive
from vna.dimse.audit import Trail
from vna.dimse.net import LoopBridge
from vna.dimse.peers import PeerRegistry
from vna.settings import Peer, Settings


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


NOT_AUTHORIZED = 0x0124  # PS3.7 C.4: Refused: Not Authorized


def _same_host(host: str, address: str) -> bool:
    if host == address:
        return True
    try:  # a configured name: compare what it resolves to (a handler thread may block)
        return socket.gethostbyname(host) == address
    except OSError:
        return False


def authorize(
    ctx: HandlerContext, event: evt.Event, action: str
) -> tuple[Peer | None, Dataset | None]:
    """The calling peer, and the refusal to answer with when it may not ``action``.

    A known peer (AE title) is held to its permissions and must call from its
    host.  An unknown caller gets here only when ``allowed_calling_aes`` leaves
    the service open (otherwise its association was rejected): it is not scoped."""
    requestor = event.assoc.requestor
    calling = requestor.ae_title.strip()
    peer = ctx.peers.get(calling)
    if peer is None:
        return None, None
    if not _same_host(peer.host, str(requestor.address)):
        return peer, status(NOT_AUTHORIZED, f"{calling} must call from {peer.host}")
    if action not in peer.permissions:
        return peer, status(NOT_AUTHORIZED, f"{calling} is not permitted to {action}")
    return peer, None


def peer_sites(peer: Peer | None) -> list[str] | None:
    """What a caller may see: its site's, or everything for an unscoped caller."""
    return [peer.site] if peer is not None and peer.site else None
