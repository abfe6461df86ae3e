"""The audit trail's writer: events are queued on the event loop and appended to
the index in batches by one background task, so recording never waits on disk.
An event waits ``BATCH_WAIT`` for others to share its write.

Reads of tiles and frames would swamp the trail (a slide view is thousands of
requests), so they are recorded once per (who, slide or instance, 5 minutes):
first filtered here, in memory, so most tile reads cost nothing; then, for the
few that pass, in the index (vna.index.security.fresh_views), whose window all
the serving processes of ``--workers N`` share.
On a clean shutdown the queue is drained before the index closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Hashable

from aiohttp import web

from vna.audit.syslog import SyslogSink
from vna.auth.roles import PRINCIPAL
from vna.errors import VnaError
from vna.index.security import AuditRecord, SecurityIndex
from vna.keys import INDEX, SETTINGS

log = logging.getLogger(__name__)

DEDUPE_SECONDS = 300.0
MAX_BATCH = 500
BATCH_WAIT = 0.05  # seconds an event waits for others to share its write
PRUNE_AT = 100_000  # remembered (who, object) pairs before old ones are dropped
MAX_QUEUE = 200_000  # beyond this the index is not keeping up: events are logged instead
_STOP = None


class AuditTrail:
    def __init__(self, index: SecurityIndex, sink: SyslogSink | None = None) -> None:
        self.index = index
        self.sink = sink  # a syslog collector also gets every event
        self._queue: asyncio.Queue[tuple[AuditRecord, str | None] | None] = asyncio.Queue()
        self._recent: dict[Hashable, float] = {}
        self._prune_at = PRUNE_AT
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def record(self, rec: AuditRecord, dedupe: Hashable | None = None) -> bool:
        """Queue one event; False when it repeats ``dedupe`` within the window."""
        if dedupe is not None:
            last = self._recent.get(dedupe)
            if last is not None and rec.at - last < DEDUPE_SECONDS:
                return False
            self._recent[dedupe] = rec.at
            if len(self._recent) > self._prune_at:
                self._prune(rec.at)
        if self._queue.qsize() >= MAX_QUEUE:
            log.error("audit queue full, event not stored: %s", rec)
            return False
        self._queue.put_nowait((rec, None if dedupe is None else _key_text(dedupe)))
        return True

    def record_threadsafe(self, rec: AuditRecord, dedupe: Hashable | None = None) -> None:
        """``record`` from another thread (the DIMSE handlers run in pynetdicom's)."""
        if self._loop is None:
            raise RuntimeError("the audit trail is not started")
        self._loop.call_soon_threadsafe(self.record, rec, dedupe)

    def _prune(self, now: float) -> None:
        self._recent = {k: t for k, t in self._recent.items() if now - t < DEDUPE_SECONDS}
        # still big when busy: prune again only once it has doubled (amortised O(1))
        self._prune_at = max(PRUNE_AT, 2 * len(self._recent))

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name="vna-audit-writer")

    async def close(self) -> None:
        """Write everything queued, then stop."""
        if self._task is None:
            return
        self._queue.put_nowait(_STOP)
        await self._task
        self._task = None
        if self.sink is not None:
            await asyncio.to_thread(self.sink.close)

    async def _run(self) -> None:
        stop = False
        while not stop:
            batch = [await self._queue.get()]
            if batch[0] is not _STOP:
                # written at once, nearly every request's event had a transaction
                # (and an fsync) of its own beside the stores': the events of the
                # next moment share it instead (STOW-RS: 0.47 -> 0.44 ms CPU/instance)
                await asyncio.sleep(BATCH_WAIT)
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            stop = _STOP in batch
            await self._write([item for item in batch if item is not None])
        # anything recorded while the last batch was written
        rest = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not None:
                rest.append(item)
        await self._write(rest)

    async def _write(self, items: list[tuple[AuditRecord, str | None]]) -> None:
        if not items:
            return
        batch = [rec for rec, _ in items]
        keys = [key for _, key in items]
        for attempt in range(3):
            try:
                batch = await self.index.append_audit(batch, keys)
                break
            except VnaError:
                log.warning("audit write failed (attempt %d)", attempt + 1, exc_info=True)
                await asyncio.sleep(0.5 * (attempt + 1))
        else:
            for rec in batch:  # never silently: the log keeps what the index could not
                log.error("audit event not stored: %s", rec)
        if self.sink is not None:
            await asyncio.to_thread(self.sink.send, batch)


def _key_text(key: Hashable) -> str:
    parts = key if isinstance(key, tuple) else (key,)
    return "\x1f".join("" if p is None else str(p) for p in parts)


AUDIT = web.AppKey("audit", AuditTrail)


async def audit_ctx(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context; must come after the one opening the index (it closes first)."""
    settings = app[SETTINGS]
    sink = SyslogSink(settings.audit_syslog, settings.ae_title) if settings.audit_syslog else None
    trail = AuditTrail(app[INDEX], sink)
    app[AUDIT] = trail
    trail.start()
    try:
        yield
    finally:
        with contextlib.suppress(asyncio.CancelledError):
            await trail.close()


def base_record(request: web.Request, action: str, outcome: str) -> AuditRecord:
    p = request.get(PRINCIPAL)
    route = request.match_info.route.resource if request.match_info.route else None
    return AuditRecord(
        at=time.time(),
        who=p.name if p else "anonymous",
        who_kind=p.kind if p else "anonymous",
        role=p.role if p else "",
        ip=request.remote or "",
        action=action,
        outcome=outcome,
        method=request.method,
        route=route.canonical if route is not None else request.path,
    )


def record_event(
    request: web.Request, action: str, outcome: str, *, dedupe: Hashable | None = None, **fields
) -> None:
    """Record one event about this request (login, logout, admin changes...);
    ``fields`` set AuditRecord attributes (who, study_uid, detail...)."""
    trail = request.app.get(AUDIT)
    if trail is None:
        return
    rec = base_record(request, action, outcome)
    for name, value in fields.items():
        setattr(rec, name, value)
    trail.record(rec, dedupe)
