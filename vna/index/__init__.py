"""The metadata index (see vna.index.base for the interface and records)."""

from vna.index.factory import make_index
from vna.index.sqlite import SqliteIndex

__all__ = ["SqliteIndex", "make_index"]
