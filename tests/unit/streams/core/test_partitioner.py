"""The platform's partitioner matches Kafka's (the vectors of Kafka's own UtilsTest)."""

from __future__ import annotations

import pytest

from streams.core.partitioner import murmur2, partition_for


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


def test_partition_is_the_positive_hash_modulo_the_count() -> None:
    key = b"population.resident|220102199001011234"
    assert partition_for(key, 4) == (murmur2(key) & 0x7FFFFFFF) % 4
    assert {partition_for(f"k{i}".encode(), 4) for i in range(200)} == {0, 1, 2, 3}
