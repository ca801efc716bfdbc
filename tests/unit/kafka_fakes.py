"""Stand-ins for the confluent_kafka objects agents and readers read, shared by the unit
tests of both."""

from __future__ import annotations

__all__ = ["FakeMessage"]


class FakeMessage:
    """The part of confluent_kafka.Message the agent reads."""

    def __init__(self, key: bytes, value: bytes, offset: int) -> None:
        self._kv = (key, value)
        self._offset = offset

    def key(self) -> bytes:
        return self._kv[0]

    def value(self) -> bytes:
        return self._kv[1]

    def topic(self) -> str:
        return "unit.collect"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def error(self) -> None:
        return None
