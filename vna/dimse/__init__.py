"""DIMSE service: C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET and Storage Commitment
over the archive, plus the registry of known peers and its HTTP routes."""

from vna.dimse.api import PEERS, routes
from vna.dimse.peers import PeerRegistry
from vna.dimse.server import DimseService, dimse_cleanup_ctx

__all__ = ["PEERS", "DimseService", "PeerRegistry", "dimse_cleanup_ctx", "routes"]
