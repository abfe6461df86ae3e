"""Opening an archive from settings: shared by the server and every CLI command."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from vna.archive.service import Archive
from vna.index import make_index
from vna.settings import Settings
from vna.storage import make_store


@asynccontextmanager
async def open_archive(settings: Settings) -> AsyncIterator[Archive]:
    store = make_store(settings.storage_url)
    await store.open()
    try:
        index = make_index(settings.index_url)
        await index.open()
        # bounded: parsing, hashing and transcoding never flood the machine
        executor = ThreadPoolExecutor(
            max_workers=max(4, 2 * (os.cpu_count() or 2)), thread_name_prefix="vna"
        )
        try:
            yield Archive(
                store,
                index,
                tmp_dir=settings.tmp_dir,
                executor=executor,
                policy=settings.duplicate_policy,
            )
        finally:
            executor.shutdown(wait=True)
            await index.close()
    finally:
        await store.close()
