"""The platform's partitioner: Kafka's murmur2 (the Java client's default, librdkafka's
``murmur2_random``), so a key lands in the same partition number whichever principal's
collect topic carries it and whichever client a source system uses.

One key, one owner: the ingest checks every collected record against it, so the worker that
owns partition ``p`` of every collect topic holds every record of its keys.

:func:`partition_for` calls librdkafka's own ``rd_kafka_msg_partitioner_murmur2`` (public
API, in the library confluent-kafka loads) through :class:`ctypes.PyDLL`, which keeps the
GIL for the call: the hash in Python cost a tenth of the ingest's time per record, and a C
extension that releases the GIL for so short a call waits up to a switch interval (5 ms) to
get it back whenever another thread runs. Without librdkafka's library file it computes the
same hash in Python (:func:`murmur2`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import confluent_kafka

__all__ = ["murmur2", "partition_for"]

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's ``Utils.murmur2``: 32-bit MurmurHash2 with seed 0x9747b28c, as a signed int."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    words = length // 4
    for k in struct.unpack_from(f"<{words}I", data) if words else ():
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = length & 3
    base = words * 4
    if tail == 3:
        h ^= data[base + 2] << 16
    if tail >= 2:
        h ^= data[base + 1] << 8
    if tail >= 1:
        h ^= data[base]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def _python_partition(key: bytes, partitions: int) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def _librdkafka_partitioner() -> Callable[[bytes, int], int] | None:
    """librdkafka's murmur2 partitioner, or None if its library cannot be found."""
    package = Path(confluent_kafka.__file__).parent
    candidates = [str(p) for p in sorted(package.parent.glob("confluent_kafka.libs/librdkafka*"))]
    system = ctypes.util.find_library("rdkafka")
    if system:
        candidates.append(system)
    for path in candidates:
        try:
            fn = ctypes.PyDLL(path).rd_kafka_msg_partitioner_murmur2
        except (OSError, AttributeError):
            continue
        fn.restype = ctypes.c_int32
        fn.argtypes = [
            ctypes.c_void_p,  # the topic: unused by this partitioner
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_int32,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]

        def partition(key: bytes, partitions: int, _fn: Any = fn) -> int:
            if partitions < 1:  # librdkafka would divide by zero
                raise ValueError(f"partitions must be at least 1, not {partitions}")
            return int(_fn(None, key, len(key), partitions, None, None))

        # Trust it only if it agrees with Kafka's own test vector.
        if partition(b"a-little-bit-long-string", 1_000_003) == _python_partition(
            b"a-little-bit-long-string", 1_000_003
        ):
            return partition
    return None


#: the partition of ``key`` among ``partitions``, as Kafka's default partitioner picks it:
#: ``toPositive(murmur2(key)) % partitions``
partition_for: Callable[[bytes, int], int] = _librdkafka_partitioner() or _python_partition
