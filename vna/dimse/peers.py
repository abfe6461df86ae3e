"""Known DICOM peers: where C-MOVE sends, where storage commitment reports go.

Two sources: the peers of the settings (read-only, they come back at every start)
and peers added at run time through the API, kept in ``peers.json`` in the data
dir so they survive a restart.  The registry is read from pynetdicom's handler
threads and written from the event loop, hence the lock; and the file is
re-read when another process (another ``--workers`` server) changed it.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

from vna.errors import BadRequest, Conflict, NotFound, StorageError
from vna.settings import PEER_PERMISSIONS, Peer

PEERS_FILE = "peers.json"


def check_ae_title(value: Any) -> str:
    """An AE title per PS3.5 (AE VR): 1-16 characters, no backslash or control
    characters, not only spaces.  Leading/trailing spaces are not significant."""
    if not isinstance(value, str):
        raise BadRequest("ae_title must be a string")
    title = value.strip()
    if not title or len(title) > 16:
        raise BadRequest(f"AE title must have 1 to 16 characters, got {value!r}")
    if "\\" in title or any(ord(c) < 32 or ord(c) > 126 for c in title):
        raise BadRequest(f"AE title may not contain backslash or control characters: {value!r}")
    return title


def make_peer(data: Any) -> Peer:
    """A Peer from untrusted JSON: ``{"ae_title", "host", "port"}`` and optionally
    ``"site"``, ``"permissions"`` (a subset of store, find, retrieve) and ``"tls"``."""
    if not isinstance(data, dict):
        raise BadRequest("a peer is a JSON object with ae_title, host and port")
    unknown = set(data) - {"ae_title", "host", "port", "site", "permissions", "tls"}
    if unknown:
        raise BadRequest(f"unknown peer field(s): {', '.join(sorted(unknown))}")
    host = data.get("host")
    if not isinstance(host, str) or not host.strip() or any(c.isspace() for c in host.strip()):
        raise BadRequest("host must be a non-empty host name or address")
    port = data.get("port")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise BadRequest("port must be an integer from 1 to 65535")
    site = data.get("site")
    if site is not None and (not isinstance(site, str) or not site.strip()):
        raise BadRequest("site must be a non-empty string")
    perms = data.get("permissions", list(PEER_PERMISSIONS))
    if not isinstance(perms, list) or not set(perms) <= set(PEER_PERMISSIONS):
        raise BadRequest(f"permissions must be a list drawn from {', '.join(PEER_PERMISSIONS)}")
    tls = data.get("tls", False)
    if not isinstance(tls, bool):
        raise BadRequest("tls must be true or false")
    return Peer(
        ae_title=check_ae_title(data.get("ae_title")),
        host=host.strip(),
        port=port,
        site=site.strip() if site else None,
        permissions=sorted(set(perms), key=PEER_PERMISSIONS.index),
        tls=tls,
    )


class PeerRegistry:
    """Configured peers plus run-time peers persisted in ``{data}/peers.json``."""

    def __init__(self, configured: list[Peer], path: str | Path | None = None) -> None:
        self._lock = threading.Lock()
        self._configured = {p.ae_title.strip(): p for p in configured}
        self._path = Path(path) if path is not None else None
        self._stamp: tuple[int, int] | None = None
        self._runtime: dict[str, Peer] = {}
        self._refresh()

    @classmethod
    def from_settings(cls, settings: Any) -> PeerRegistry:
        return cls(list(settings.peers), Path(settings.data).resolve() / PEERS_FILE)

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            st = self._path.stat() if self._path is not None else None
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size) if st else None

    def _refresh(self) -> None:
        """(Re)load the run-time peers when the file changed since last seen.
        Called with the lock held (or from __init__)."""
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return
        peers: list[Peer] = []
        if stamp is not None:
            try:
                items = json.loads(self._path.read_text(encoding="utf-8"))  # type: ignore[union-attr]
                peers = [make_peer(item) for item in items]
            except (OSError, ValueError) as exc:
                raise StorageError(f"cannot read the peers file {self._path}: {exc}") from None
        self._runtime = {p.ae_title: p for p in peers}
        self._stamp = stamp

    def _save(self) -> None:
        if self._path is None:
            return
        body = json.dumps([asdict(p) for p in self._runtime.values()], indent=2)
        tmp = self._path.with_suffix(".tmp")
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(body, encoding="utf-8")
            os.replace(tmp, self._path)  # atomic: a crash never leaves half a file
        except OSError as exc:
            raise StorageError(f"cannot write the peers file {self._path}: {exc}") from None
        self._stamp = self._file_stamp()

    def get(self, ae_title: str) -> Peer | None:
        title = ae_title.strip()
        with self._lock:
            self._refresh()
            return self._configured.get(title) or self._runtime.get(title)

    def titles(self) -> set[str]:
        with self._lock:
            self._refresh()
            return set(self._configured) | set(self._runtime)

    def list(self) -> list[dict[str, Any]]:
        """Every peer as JSON, with where it comes from (config or api)."""
        with self._lock:
            self._refresh()
            rows = [{**asdict(p), "source": "config"} for p in self._configured.values()]
            rows += [
                {**asdict(p), "source": "api"}
                for t, p in self._runtime.items()
                if t not in self._configured
            ]
        return sorted(rows, key=lambda r: r["ae_title"])

    def add(self, peer: Peer) -> None:
        """Add or update a run-time peer; configured peers are read-only."""
        with self._lock:
            self._refresh()
            if peer.ae_title in self._configured:
                raise Conflict(f"peer {peer.ae_title} comes from the configuration file")
            self._runtime[peer.ae_title] = peer
            self._save()

    def remove(self, ae_title: str) -> None:
        title = ae_title.strip()
        with self._lock:
            self._refresh()
            if title in self._configured:
                raise Conflict(f"peer {title} comes from the configuration file")
            if title not in self._runtime:
                raise NotFound(f"no such peer: {title}")
            del self._runtime[title]
            self._save()
