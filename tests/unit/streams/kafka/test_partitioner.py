"""The platform's partitioner matches Kafka's (the vectors of Kafka's own UtilsTest)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.kafka.partitioner import _python_partition, murmur2, partition_for


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("21", -973932308),
        ("foobar", -790332482),
        ("a-little-bit-long-string", -985981536),
        ("a-little-bit-longer-string", -1486304829),
        ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        ("abc", 479470107),
    ],
)
def test_murmur2_equals_kafka(text: str, expected: int) -> None:
    assert murmur2(text.encode()) == expected


def kafka_murmur2(data: bytes) -> int:
    """Kafka's ``Utils.murmur2`` transcribed line by line from its Java source."""
    m, mask = 0x5BD1E995, 0xFFFFFFFF
    h = (0x9747B28C ^ len(data)) & mask
    words = len(data) // 4
    for (k,) in struct.iter_unpack("<I", data[: words * 4]):
        k = (k * m) & mask
        k ^= k >> 24
        k = (k * m) & mask
        h = ((h * m) & mask) ^ k
    tail, base = len(data) & 3, words * 4
    if tail == 3:
        h ^= data[base + 2] << 16
    if tail >= 2:
        h ^= data[base + 1] << 8
    if tail >= 1:
        h ^= data[base]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


@given(st.binary(max_size=300))
def test_murmur2_equals_the_java_algorithm_on_any_bytes(data: bytes) -> None:
    assert murmur2(data) == kafka_murmur2(data)


def test_partition_is_the_positive_hash_modulo_the_count() -> None:
    key = b"population.resident|220102199001011234"
    assert partition_for(key, 4) == (murmur2(key) & 0x7FFFFFFF) % 4
    assert {partition_for(f"k{i}".encode(), 4) for i in range(200)} == {0, 1, 2, 3}
    for n in (1, 3, 7, 12):
        assert all(
            partition_for(f"k{i}".encode(), n) == (kafka_murmur2(f"k{i}".encode()) & 0x7FFFFFFF) % n
            for i in range(300)
        )


def test_the_partition_comes_from_librdkafka_itself() -> None:
    # The installed client's own partitioner (the Python hash is only the fallback)
    assert partition_for is not _python_partition
    with pytest.raises(ValueError, match="at least 1"):
        partition_for(b"k", 0)
