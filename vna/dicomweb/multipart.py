"""Streaming multipart/related responses (PS3.18 8.6.1.2)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterable

from aiohttp import web


class MultipartStream:
    """Writes parts to a StreamResponse as they come, never the whole body in memory."""

    def __init__(self, request: web.Request, part_type: str, **params: str) -> None:
        self.request = request
        self.boundary = secrets.token_hex(16)
        extra = "".join(f"; {k.replace('_', '-')}={v}" for k, v in params.items())
        self.response = web.StreamResponse(
            headers={
                "Content-Type": f'multipart/related; type="{part_type}"{extra}; boundary={self.boundary}'
            }
        )
        self.started = False

    async def _start(self) -> None:
        if not self.started:
            await self.response.prepare(self.request)
            self.started = True

    async def part(
        self, content_type: str, body: bytes | AsyncIterable[bytes], location: str = ""
    ) -> None:
        await self._start()
        head = f"--{self.boundary}\r\nContent-Type: {content_type}\r\n"
        if location:
            head += f"Content-Location: {location}\r\n"
        await self.response.write((head + "\r\n").encode())
        if isinstance(body, bytes | bytearray | memoryview):
            await self.response.write(bytes(body))
        else:
            async for chunk in body:
                await self.response.write(chunk)
        await self.response.write(b"\r\n")

    async def finish(self) -> web.StreamResponse:
        await self._start()
        await self.response.write(f"--{self.boundary}--\r\n".encode())
        await self.response.write_eof()
        return self.response
