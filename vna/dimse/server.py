"""The DIMSE service: one pynetdicom AE in front of the archive.

pynetdicom runs each association in its own threads; the handlers stay thin and
call the archive's coroutines on the app's event loop through ``LoopBridge``, so
HTTP is never blocked by DIMSE work and the archive logic lives in one place.

    service = DimseService(settings, archive, asyncio.get_running_loop(), peers)
    service.start()            # non-blocking
    ...
    await asyncio.to_thread(service.stop)   # joins threads that wait on the loop
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from pynetdicom import AE, _config
from pynetdicom import events as evt
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer

from vna.archive.service import Archive
from vna.dimse import commitment, query, retrieve, store
from vna.dimse.audit import Trail, dimse_record, record
from vna.dimse.context import HandlerContext
from vna.dimse.net import (
    ACCEPTED_TRANSFER_SYNTAXES,
    LoopBridge,
    negotiation_contexts,
    set_nodelay,
)
from vna.dimse.peers import PeerRegistry
from vna.settings import Settings

log = logging.getLogger(__name__)

QR_MODELS = [
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
]


def configure_pynetdicom() -> None:
    """Process-wide pynetdicom switches the service relies on."""
    # received datasets go to disk as they arrive: bounded memory, bytes untouched
    _config.STORE_RECV_CHUNKED_DATASET = True
    # a file path given to send_c_store is sent as its raw dataset bytes
    _config.STORE_SEND_CHUNKED_DATASET = True
    # identifiers and datasets are logged by vna at its own level, not dumped
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    # pynetdicom logs several INFO lines per message: at hundreds of instances a
    # second that is real CPU.  Quiet unless someone set its level on purpose.
    pnd_log = logging.getLogger("pynetdicom")
    if pnd_log.level == logging.NOTSET:
        pnd_log.setLevel(logging.WARNING)


def supported_contexts() -> list[Any]:
    """The non-storage services.  Storage contexts are made per association for
    what the requestor proposes (``negotiation_contexts``): any storage class,
    known or not, in the requestor's transfer syntax order.  Listing the ~170
    storage classes here would also cost a deep copy of them per association
    (pynetdicom copies the server's contexts into each one), ~50-150 ms."""
    contexts = [build_context(Verification)]
    contexts += [build_context(uid, ACCEPTED_TRANSFER_SYNTAXES[:3]) for uid in QR_MODELS]
    contexts.append(build_context(StorageCommitmentPushModel))
    return contexts


class DimseService:
    def __init__(
        self,
        settings: Settings,
        archive: Archive,
        loop: asyncio.AbstractEventLoop,
        peers: PeerRegistry,
        *,
        reuse_port: bool = False,
        audit: Trail | None = None,
    ) -> None:
        """``reuse_port``: listen with SO_REUSEPORT, so several server processes
        (``vna serve --workers N``) share the DIMSE port and the kernel spreads
        associations over them -- past one process's GIL.
        ``audit``: the app's ``vna.audit.AuditTrail``; DIMSE operations are recorded."""
        self.settings = settings
        self.reuse_port = reuse_port
        self.ctx = HandlerContext(settings, archive, LoopBridge(loop), peers, audit)
        self.ae = AE(ae_title=settings.ae_title)
        self.ae.maximum_associations = settings.max_associations or 64
        self.ae.require_called_aet = True
        self.ae.maximum_pdu_size = 0  # no limit on what peers send us: fewer, larger PDUs
        self._server: ThreadedAssociationServer | None = None
        self._update_allowed()

    @property
    def port(self) -> int:
        """The bound port (useful when configured with port 0)."""
        if self._server is None:
            raise RuntimeError("the DIMSE service is not started")
        return int(self._server.server_address[1])

    def _update_allowed(self) -> None:
        """Calling AE restriction: when ``allowed_calling_aes`` is set, those and the
        known peers may associate; others get A-ASSOCIATE-RJ (rejected-permanent,
        service-user, "calling AE title not recognized") from pynetdicom's
        negotiation, which reads this list.  Refreshed before every negotiation, so
        peers added at run time (by any server process) count at once."""
        allowed = self.settings.allowed_calling_aes
        if allowed:
            self.ae.require_calling_aet = sorted(set(allowed) | self.ctx.peers.titles())

    def _prepare_negotiation(self, event: evt.Event) -> None:
        """EVT_REQUESTED (before negotiation): refresh the calling AE restriction,
        adjust the supported storage contexts to the request (``negotiation_contexts``)."""
        self._update_allowed()
        acceptor = event.assoc.acceptor
        proposed = event.assoc.requestor.primitive.presentation_context_definition_list
        acceptor.supported_contexts = negotiation_contexts(proposed, acceptor.supported_contexts)

    def _handlers(self) -> list[tuple[Any, ...]]:
        ctx = self.ctx
        return [
            (evt.EVT_CONN_OPEN, set_nodelay),
            (evt.EVT_REQUESTED, self._prepare_negotiation),
            (evt.EVT_REJECTED, _log_rejected, [ctx]),
            (evt.EVT_C_ECHO, _echo),
            (evt.EVT_C_STORE, store.handle_store, [ctx]),
            (evt.EVT_C_FIND, query.handle_find, [ctx]),
            (evt.EVT_C_GET, retrieve.handle_get, [ctx]),
            (evt.EVT_C_MOVE, retrieve.handle_move, [ctx]),
            (evt.EVT_N_ACTION, commitment.handle_action, [ctx]),
            (evt.EVT_DIMSE_SENT, commitment.on_dimse_sent),
        ]

    def start(self) -> None:
        """Listen (non-blocking); raises OSError when the address is taken."""
        configure_pynetdicom()
        host, port = self.settings.dimse_host_port
        tls = dimse_tls_context(self.settings)
        if self.reuse_port:
            self._server = self._start_shared((host, port), tls)
        else:
            self._server = self.ae.start_server(
                (host, port),
                block=False,
                evt_handlers=self._handlers(),
                contexts=supported_contexts(),
                ssl_context=tls,
            )
        log.info("DIMSE service %s listening on %s:%d", self.settings.ae_title, host, self.port)

    def _start_shared(
        self, address: tuple[str, int], tls: ssl.SSLContext | None
    ) -> ThreadedAssociationServer:
        """What ``AE.start_server(block=False)`` does, with a server class that
        sets SO_REUSEPORT before binding (pynetdicom has no option for it)."""
        server = self.ae.make_server(
            address,
            evt_handlers=self._handlers(),
            contexts=supported_contexts(),
            ssl_context=tls,
            server_class=_ReusePortServer,
        )
        thread = threading.Thread(target=server.serve_forever, name="vna-dimse", daemon=True)
        thread.start()
        self.ae._servers.append(server)  # as start_server does: shutdown() removes it
        return server

    def stop(self) -> None:
        """Stop listening and end the associations.  Blocking: run it in a thread,
        never on the event loop the handlers are waiting for."""
        if self._server is not None:
            # the server joins its association threads on close: abort them first,
            # or an idle peer holds the shutdown for the whole network timeout
            for assoc in self.ae.active_associations:
                assoc.abort()
            self._server.shutdown()
            self._server = None
        self.ctx.workers.shutdown(wait=True, cancel_futures=True)


class _ReusePortServer(ThreadedAssociationServer):
    def server_bind(self) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


def _echo(event: evt.Event) -> int:
    return 0x0000


REJECT_REASONS = {
    (1, 3): "calling AE title not recognized",
    (1, 7): "called AE title not recognized",
    (3, 2): "too many associations (local limit exceeded)",
}


def _log_rejected(event: evt.Event, ctx: HandlerContext) -> None:
    """Operators see why a peer could not associate (the peer gets A-ASSOCIATE-RJ)."""
    rj = event.assoc.acceptor.primitive
    reason = REJECT_REASONS.get((rj.result_source, rj.diagnostic), f"diagnostic {rj.diagnostic}")
    remote = event.assoc.requestor
    log.warning("association from %s (%s) rejected: %s", remote.ae_title, remote.address, reason)
    rec = dimse_record(event.assoc, "A-ASSOCIATE", "associate", "denied", 0, detail=reason)
    record(ctx.audit, rec, (rec.who, rec.ip, "associate"))


# -- wiring into the aiohttp app ---------------------------------------------------
def dimse_tls_context(settings: Settings) -> ssl.SSLContext | None:
    """DICOM TLS for the SCP when a certificate is configured; with a CA, peers
    must authenticate with a certificate it signed."""
    if not settings.dimse_tls_cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(settings.dimse_tls_cert, settings.dimse_tls_key or None)
    if settings.dimse_tls_ca:
        ctx.load_verify_locations(settings.dimse_tls_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def dimse_cleanup_ctx(
    settings_key: web.AppKey[Settings],
    archive_key: web.AppKey[Archive],
    peers_key: web.AppKey[PeerRegistry],
    *,
    serve: bool = True,
    reuse_port: bool = False,
    audit_key: web.AppKey[Any] | None = None,
) -> Any:
    """A cleanup context: the peer registry always (the API needs it), the DIMSE
    service when ``serve`` and ``settings.dimse`` are set.  With several server
    processes either serve DIMSE in one only (``serve=False`` elsewhere) or in all
    of them with ``reuse_port=True``.  ``audit_key``: where the app keeps its
    ``AuditTrail`` (vna.audit.trail.AUDIT).  Append it after the archive's and the
    audit trail's contexts."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[settings_key]
        peers = await asyncio.to_thread(PeerRegistry.from_settings, settings)
        app[peers_key] = peers
        service = None
        if serve and settings.dimse:
            loop = asyncio.get_running_loop()
            trail = app.get(audit_key) if audit_key is not None else None
            service = DimseService(
                settings, app[archive_key], loop, peers, reuse_port=reuse_port, audit=trail
            )
            await asyncio.to_thread(service.start)
        try:
            yield
        finally:
            if service is not None:
                await asyncio.to_thread(service.stop)

    return ctx
