"""Where the verifier keeps a partition's authoritative values and verification counts.

:class:`RocksStore` (the worker's): a RocksDB database per assigned partition under
``<state dir>/verification/<group>/<partition>``, through ``rocksdict``. The database is a
cache of Kafka, never a source of truth: it is wiped and rebuilt from the pool and verified
partitions each time the partition is assigned, and deleted when it is revoked, so a crash
leaves nothing that could be read as state. Writes skip RocksDB's write-ahead log for that
reason. What it holds per key is the pool record's version, provider, record id and position
and the payload exactly as collected (about 40 bytes plus the payload, typically 150 to 400
bytes on disk before compression), and the verified count with its verifiers: on disk rather
than in memory, because a province's 24 million residents at a few hundred bytes each do not
fit a worker's memory.

:class:`MemoryStore`: the same in a dict (unit tests).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Protocol

__all__ = ["KeyValue", "MemoryStore", "RocksStore"]


class KeyValue(Protocol):
    def get(self, key: bytes) -> bytes | None: ...
    def put(self, key: bytes, value: bytes) -> None: ...
    def delete(self, key: bytes) -> None: ...
    def close(self) -> None: ...


class MemoryStore:
    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        self.data[key] = value

    def delete(self, key: bytes) -> None:
        self.data.pop(key, None)

    def close(self) -> None:
        self.data.clear()


class RocksStore:
    """A fresh RocksDB at ``path`` (whatever was there is deleted first)."""

    def __init__(self, path: Path) -> None:
        from rocksdict import Options, Rdict, WriteOptions

        self.path = path
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True, exist_ok=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        self._db = Rdict(str(path), options)
        unlogged: Any = WriteOptions()
        unlogged.disable_wal = True  # a cache of Kafka: rebuilt after a crash
        self._db.set_write_options(unlogged)

    def get(self, key: bytes) -> bytes | None:
        value = self._db.get(key)
        return value if isinstance(value, bytes) else None

    def put(self, key: bytes, value: bytes) -> None:
        self._db[key] = value

    def delete(self, key: bytes) -> None:
        del self._db[key]

    def close(self) -> None:
        """Close and delete the database: the next owner rebuilds it from Kafka."""
        self._db.close()
        shutil.rmtree(self.path, ignore_errors=True)
