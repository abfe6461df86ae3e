"""Plumbing shared by the DIMSE handlers: transfer syntaxes, sockets, the bridge
from pynetdicom's threads to the asyncio loop, and presentation contexts."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import ssl
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import events as evt
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.service_class import ServiceClass, StorageServiceClass
from pynetdicom.sop_class import register_uid, uid_to_service_class

from vna.settings import Peer, Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

UNCOMPRESSED = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
# What the storage SCP accepts.  The requestor's order decides among them, so a
# modality proposing JPEG 2000 first has its instances archived as JPEG 2000.
ACCEPTED_TRANSFER_SYNTAXES: list[str] = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
]
MAX_CONTEXTS = 128  # PS3.8: at most 128 presentation contexts (odd IDs 1..255)


def set_nodelay(event: evt.Event) -> None:
    """EVT_CONN_OPEN handler: without TCP_NODELAY every C-STORE response waits for
    Nagle's algorithm and delayed ACKs (45-90 ms each); pynetdicom never sets it."""
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:  # e.g. the peer already closed the connection
        log.debug("cannot set TCP_NODELAY: %s", exc)


NODELAY_HANDLERS = [(evt.EVT_CONN_OPEN, set_nodelay)]


def peer_tls_args(settings: Settings, peer: Peer) -> tuple[ssl.SSLContext, str] | None:
    """pynetdicom's ``tls_args`` for an association vna opens to ``peer``.

    The peer's certificate is checked against ``dimse_tls_ca`` (the CA that signs
    the hospital's DICOM nodes; the system store when unset) and its host name, so
    images never go to an impostor; vna shows its own DIMSE certificate, for
    peers that require mutual TLS."""
    if not peer.tls:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.dimse_tls_ca or None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.dimse_tls_cert:
        ctx.load_cert_chain(settings.dimse_tls_cert, settings.dimse_tls_key or None)
    return ctx, peer.host


class LoopBridge:
    """Runs archive coroutines on the app's event loop from pynetdicom's threads.

    The handler thread blocks on the result, the loop does not: the HTTP side
    keeps serving while a DIMSE association waits for storage."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float | None = 600.0) -> None:
        self.loop = loop
        self.timeout = timeout

    def __call__(self, coro: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(self.timeout)


def storage_context(abstract_syntax: str, syntaxes: list[str] | None = None) -> PresentationContext:
    """A supported storage context: both roles accepted, so C-GET requestors can
    take the SCP role for the sub-operations coming back to them."""
    cx = build_context(abstract_syntax, syntaxes or ACCEPTED_TRANSFER_SYNTAXES)
    cx.scu_role = True
    cx.scp_role = True
    return cx


# -- unknown and private SOP classes ------------------------------------------------
_registered: set[str] = set()
_register_lock = threading.Lock()
MAX_REGISTERED = 2000  # a bound: each proposal of a new UID adds to pynetdicom's tables


def is_storage_like(uid: str) -> bool:
    """Known storage classes, and any UID pynetdicom has no service for
    (private and future public storage classes)."""
    service = uid_to_service_class(uid)
    return service is ServiceClass or issubclass(service, StorageServiceClass)


def register_storage_uid(uid: str) -> bool:
    """Make pynetdicom route C-STOREs of ``uid`` to the storage service.

    pynetdicom routes a request by its SOP class; an unknown one gets the base
    ServiceClass and the association is aborted.  ``register_uid`` is its
    documented way to add private classes."""
    if uid_to_service_class(uid) is not ServiceClass:
        return True
    with _register_lock:
        if uid in _registered:
            return True
        if len(_registered) >= MAX_REGISTERED or not UID(uid).is_valid:
            return False
        keyword = "VnaStorage_" + re.sub(r"\W", "_", uid)
        register_uid(uid, keyword, StorageServiceClass)
        _registered.add(uid)
    return True


def requestor_order(proposed: list[str]) -> list[str]:
    """Our accepted syntaxes, those the requestor proposed first, in its order."""
    first = [str(ts) for ts in proposed if str(ts) in ACCEPTED_TRANSFER_SYNTAXES]
    return first + [ts for ts in ACCEPTED_TRANSFER_SYNTAXES if ts not in first]


def negotiation_contexts(
    proposed: list[PresentationContext], supported: list[PresentationContext]
) -> list[PresentationContext]:
    """The supported contexts for one association, adjusted to its request.

    - pynetdicom picks, among the syntaxes both sides list, the acceptor's first.
      For storage the requestor's first is what it holds (a modality offering
      JPEG 2000 then Explicit VR has a JPEG 2000 file): reorder to its preference,
      so instances are archived as they are, never converted on the way in.
    - every proposed storage class gets a context, private and unknown ones too:
      archived, not refused.
    """
    by_uid = {str(cx.abstract_syntax): cx for cx in supported}
    storage: dict[str, PresentationContext] = {}
    for cx in proposed:
        uid = str(cx.abstract_syntax)
        if uid in storage or not is_storage_like(uid):
            continue
        if uid not in by_uid and not register_storage_uid(uid):
            continue
        storage[uid] = storage_context(uid, requestor_order(cx.transfer_syntax))
    return [storage.get(uid, cx) for uid, cx in by_uid.items()] + [
        cx for uid, cx in storage.items() if uid not in by_uid
    ]
