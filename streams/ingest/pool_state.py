"""What each pool holds per key (去重与动态更新), articles 19 to 21: collect once, update
dynamically.

Per collect partition, one dict from the key's hash to its current version packed into one
int: ``version << 128 | observed_at_ms << 64 | content fingerprint``. That is about 120
bytes a key in CPython (a dict slot, a small int key, a 192-bit int value), against 235
for a dict of bytes keys to tuples. The key hash is Python's keyed SipHash of the key
bytes: an adversary cannot aim collisions at it, and the state is rebuilt in each process.

The state is derived from the pool topics alone (their records carry the packed value in
the :data:`STATE_HEADER` header), so a worker assigned a collect partition rebuilds it from
the matching pool partitions before it decides anything (:meth:`PoolState.restore`).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from enum import StrEnum

__all__ = [
    "SOURCE_HEADER",
    "STATE_HEADER",
    "PoolState",
    "Verdict",
    "content_fingerprint",
    "current_of",
    "pack_source",
    "pack_state",
    "unpack_source",
    "unpack_state",
]

#: Kafka header of every pool record: version, observed-at and fingerprint, 24 bytes
STATE_HEADER = "xy-state"
_STATE = struct.Struct(">qqQ")
#: Kafka header of evidence records (kept as collected): source partition, offset, topic
SOURCE_HEADER = "xy-source"
_SOURCE = struct.Struct(">iq")
_M64 = (1 << 64) - 1


class Verdict(StrEnum):
    UPDATE = "update"
    DUPLICATE = "DUPLICATE"
    STALE = "STALE"
    VERSION_CONFLICT = "VERSION_CONFLICT"


def current_of(packed: int | None) -> tuple[int, int]:
    """(version, observed-at) of a packed state value; (-1, -1) for none."""
    if packed is None:
        return -1, -1
    return packed >> 128, (packed >> 64) & _M64


def content_fingerprint(payload: bytes) -> bytes:
    """BLAKE2b-64 of the payload bytes: what the fact says, not how it travelled."""
    return hashlib.blake2b(payload, digest_size=8).digest()


def pack_source(topic: str, partition: int, offset: int) -> bytes:
    return _SOURCE.pack(partition, offset) + topic.encode()


def unpack_source(raw: bytes) -> tuple[str, int, int]:
    """(topic, partition, offset) of an evidence record's collected original."""
    partition, offset = _SOURCE.unpack_from(raw)
    return raw[_SOURCE.size :].decode(), partition, offset


def pack_state(version: int, observed_at_ms: int, fingerprint: bytes) -> bytes:
    return _STATE.pack(version, observed_at_ms, int.from_bytes(fingerprint, "big"))


def unpack_state(raw: bytes) -> tuple[int, int, int]:
    version, observed, fp = _STATE.unpack(raw)
    return version, observed, fp


class PoolState:
    """Current version per key, per collect partition."""

    def __init__(self) -> None:
        self._parts: dict[int, dict[int, int]] = {}

    def decide(
        self, partition: int, key: bytes, version: int, observed_at_ms: int, fingerprint: bytes
    ) -> tuple[Verdict, int | None]:
        """The verdict on an incoming version and the packed current value it was compared
        with (None for a new key: read it with :func:`current_of`). An update becomes the
        current version at once; :meth:`undo` takes it back if its output cannot be built."""
        keys = self._parts.setdefault(partition, {})
        h = hash(key)
        fp = int.from_bytes(fingerprint, "big")
        packed = (version << 128) | (observed_at_ms << 64) | fp
        cur = keys.get(h)
        if cur is None:
            keys[h] = packed
            return Verdict.UPDATE, None
        if cur & _M64 == fp:
            return Verdict.DUPLICATE, cur
        cver, cobs = cur >> 128, (cur >> 64) & _M64
        if version < cver or (version == cver and observed_at_ms < cobs):
            return Verdict.STALE, cur
        if version == cver and observed_at_ms == cobs:
            return Verdict.VERSION_CONFLICT, cur
        keys[h] = packed
        return Verdict.UPDATE, cur

    def undo(self, partition: int, key: bytes, previous: int | None) -> None:
        """Put back the value :meth:`decide` replaced."""
        keys = self._parts.setdefault(partition, {})
        if previous is None:
            keys.pop(hash(key), None)
        else:
            keys[hash(key)] = previous

    def restore(self, partition: int, records: Iterable[tuple[bytes, bytes]]) -> int:
        """Replace a partition's state with the latest of ``(key, state header)`` pairs in
        log order (a compacted pool partition, read to its end); returns the keys held."""
        keys: dict[int, int] = {}
        for key, raw in records:
            version, observed, fp = _STATE.unpack(raw)
            keys[hash(key)] = (version << 128) | (observed << 64) | fp
        self._parts[partition] = keys
        return len(keys)

    def drop(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self._parts.pop(p, None)

    def clear(self) -> None:
        self._parts.clear()

    def __len__(self) -> int:
        # a copy first: the committing thread counts while a restore may add a partition
        return sum(len(k) for k in list(self._parts.values()))

    def partitions(self) -> list[int]:
        return sorted(self._parts)
