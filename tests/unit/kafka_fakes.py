"""Stand-ins for the confluent_kafka objects agents and readers read, shared by the unit
tests of both."""

from __future__ import annotations

from typing import Any

__all__ = ["FakeMessage", "FakeProducer"]


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


class FakeProducer:
    """confluent_kafka.Producer's produce and poll, with its signature (positions and
    names); each produced message goes to :meth:`produced`."""

    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int = -1,
        callback: Any = None,
        on_delivery: Any = None,
        timestamp: int = 0,
        headers: Any = None,
    ) -> None:
        self.produced(topic, value, partition, on_delivery or callback)

    def produced(self, topic: str, value: bytes | None, partition: int, on_delivery: Any) -> None:
        raise NotImplementedError

    def poll(self, _t: float) -> int:
        return 0
