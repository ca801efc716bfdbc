"""The platform's partitioner matches Kafka's (the vectors of Kafka's own UtilsTest)."""

from __future__ import annotations

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


@given(st.binary(max_size=300), st.integers(min_value=1, max_value=10_000))
def test_the_python_hash_and_librdkafka_agree_on_any_key(key: bytes, partitions: int) -> None:
    # two implementations, one of them the client's own: the fallback is the same function
    assert _python_partition(key, partitions) == partition_for(key, partitions)


def test_partition_is_the_positive_hash_modulo_the_count() -> None:
    key = b"population.resident|220102199001011234"
    assert partition_for(key, 4) == (murmur2(key) & 0x7FFFFFFF) % 4
    assert {partition_for(f"k{i}".encode(), 4) for i in range(200)} == {0, 1, 2, 3}


def test_the_partition_comes_from_librdkafka_itself() -> None:
    # The installed client's own partitioner (the Python hash is only the fallback)
    assert partition_for is not _python_partition
    with pytest.raises(ValueError, match="at least 1"):
        partition_for(b"k", 0)
