"""``vna serve --workers N``: the primary accepts, and hands connections out in turn.

Each serving process used to listen on the port itself (SO_REUSEPORT), and the
kernel hashed every new connection to one of them.  A sender with a few
long-lived connections then often loaded one process far more than the other:
four keep-alive STOW-RS connections came out 3 + 1 in four runs of six, so one
process did three quarters of the work while the other idled.  Node.js' cluster
module hands connections out round-robin from its primary for the same reason.

Here only the primary listens.  It passes each accepted connection's descriptor
(``SCM_RIGHTS`` over a socketpair) to the next process in turn, itself included,
and the process that gets it serves it with its own aiohttp server, exactly as
if it had accepted it.  A worker reports ready once it serves; the primary
starts accepting when every worker has (or after ``READY_TIMEOUT``), so a
server that answers has all its processes.  A worker that dies drops out of the
turn; a worker whose primary dies stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import ssl
from collections.abc import Callable

from aiohttp import web

log = logging.getLogger(__name__)

READY = b"r"
READY_TIMEOUT = 60.0  # seconds the primary waits for its workers before serving
BACKLOG = 1024


def make_listener(host: str, port: int) -> socket.socket:
    """The one listening socket of a multi-process server (IPv4 or IPv6 host)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=BACKLOG)


class _Connections:
    """Serves accepted sockets with a runner's aiohttp server (TLS if configured)."""

    def __init__(self, runner: web.AppRunner, ssl_context: ssl.SSLContext | None) -> None:
        assert runner.server is not None
        self._factory = runner.server
        self._ssl = ssl_context
        self._tasks: set[asyncio.Task] = set()  # a handshake in progress is referenced

    def serve(self, conn: socket.socket) -> None:
        conn.setblocking(False)
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._adopt(loop, conn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _adopt(self, loop: asyncio.AbstractEventLoop, conn: socket.socket) -> None:
        try:
            await loop.connect_accepted_socket(self._factory, conn, ssl=self._ssl)
        except (OSError, ssl.SSLError) as exc:  # the peer left, or a failed TLS handshake
            log.debug("connection dropped before it was served: %s", exc)
            conn.close()


class AcceptSite(web.BaseSite):
    """The primary's site: accepts on ``listener`` and deals connections out to
    itself and the workers at the other end of ``channels``, in turn."""

    def __init__(
        self,
        runner: web.AppRunner,
        listener: socket.socket,
        channels: list[socket.socket],
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self._listener = listener
        self._waiting = {ch.fileno(): ch for ch in channels}  # not ready yet
        self._ready: list[socket.socket] = []
        self._all_ready = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._next = 0

    @property
    def name(self) -> str:
        host, port = self._listener.getsockname()[:2]
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._listener.setblocking(False)
        for ch in self._waiting.values():
            ch.setblocking(False)
            loop.add_reader(ch.fileno(), self._on_channel, ch)
        if not self._waiting:
            self._all_ready.set()
        self._task = loop.create_task(self._accept_loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        loop = asyncio.get_running_loop()
        for ch in [*self._waiting.values(), *self._ready]:
            loop.remove_reader(ch.fileno())
            ch.close()
        self._listener.close()
        await super().stop()

    def _on_channel(self, ch: socket.socket) -> None:
        """A worker said it is ready, or its end closed (it died)."""
        try:
            data = ch.recv(64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data and READY in data and ch.fileno() in self._waiting:
            self._ready.append(self._waiting.pop(ch.fileno()))
        elif not data:
            self._drop(ch)
        if not self._waiting:
            self._all_ready.set()

    def _drop(self, ch: socket.socket) -> None:
        log.warning("a serving process is gone: its share of connections goes to the others")
        asyncio.get_running_loop().remove_reader(ch.fileno())
        self._waiting.pop(ch.fileno(), None)
        if ch in self._ready:
            self._ready.remove(ch)
        ch.close()

    async def _accept_loop(self) -> None:
        try:
            await asyncio.wait_for(self._all_ready.wait(), READY_TIMEOUT)
        except TimeoutError:
            log.warning(
                "%d serving process(es) not ready: serving without them", len(self._waiting)
            )
        local = _Connections(self._runner, self._ssl_context)  # type: ignore[arg-type]
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(self._listener)
            except OSError as exc:  # out of descriptors, a connection reset before accept
                log.warning("accept failed: %s", exc)
                await asyncio.sleep(0.05)
                continue
            self._deal(conn, local)

    def _deal(self, conn: socket.socket, local: _Connections) -> None:
        turn = self._next % (len(self._ready) + 1)
        self._next = turn + 1
        if turn == 0:
            local.serve(conn)
            return
        ch = self._ready[turn - 1]
        try:
            socket.send_fds(ch, [b"c"], [conn.fileno()])
        except BlockingIOError:  # that worker is far behind: serve it here
            local.serve(conn)
            return
        except OSError:
            self._drop(ch)
            local.serve(conn)
            return
        conn.close()  # the worker holds its own descriptor now


class ReceiveSite(web.BaseSite):
    """A worker's site: serves the connections its primary passes over ``channel``."""

    def __init__(
        self,
        runner: web.AppRunner,
        channel: socket.socket,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self._channel = channel
        self._conns: _Connections | None = None

    @property
    def name(self) -> str:
        return "connections passed by the primary"

    async def start(self) -> None:
        await super().start()
        self._conns = _Connections(self._runner, self._ssl_context)  # type: ignore[arg-type]
        self._channel.setblocking(False)
        asyncio.get_running_loop().add_reader(self._channel.fileno(), self._on_channel)
        self._channel.send(READY)

    async def stop(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_reader(self._channel.fileno())
        self._channel.close()
        await super().stop()

    def _on_channel(self) -> None:
        try:
            msg, fds, _, _ = socket.recv_fds(self._channel, 64, 64)
        except BlockingIOError:
            return
        except OSError:
            msg, fds = b"", []
        assert self._conns is not None
        for fd in fds:
            self._conns.serve(socket.socket(fileno=fd))
        if not msg and not fds:  # the primary is gone: stop as on SIGTERM
            asyncio.get_running_loop().remove_reader(self._channel.fileno())
            os.kill(os.getpid(), signal.SIGTERM)


def run_sites(
    app: web.Application,
    make_sites: Callable[[web.AppRunner], list[web.BaseSite]],
    *,
    loop: asyncio.AbstractEventLoop,
    access_log_class: type[web.AbstractAccessLogger],
    print_fn: Callable[[str], None] | None = None,
) -> None:
    """``web.run_app`` for sites it cannot make: set up, serve until SIGINT or
    SIGTERM, then clean up (the app's cleanup contexts included)."""

    async def main() -> None:
        runner = web.AppRunner(app, handle_signals=True, access_log_class=access_log_class)
        await runner.setup()
        try:
            for site in make_sites(runner):
                await site.start()
            if print_fn is not None:
                names = ", ".join(sorted(str(s.name) for s in runner.sites))
                print_fn(f"======== Running on {names} ========\n(Press CTRL+C to quit)")
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    asyncio.set_event_loop(loop)
    task = loop.create_task(main())
    try:
        loop.run_until_complete(task)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(task)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
