"""The schema registry topic: every writer schema, keyed by its CRC-64-AVRO fingerprint.

Producers publish a schema (and wait for the broker's ack) before the first record that
uses it; consumers follow the compacted topic, and on an unknown fingerprint sync once
with it before they reject, so a record is never refused for a schema already published.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from concurrent.futures import Future

from confluent_kafka import Producer

from streams.kafka.config import KafkaConfig
from streams.kafka.follower import CompactedView
from streams.wire.codec import Schema, SchemaRegistry

__all__ = ["SchemaTopic"]


class SchemaTopic:
    def __init__(self, kafka: KafkaConfig, topic: str, registry: SchemaRegistry) -> None:
        self.kafka = kafka
        self.topic = topic
        self.registry = registry
        self._view: CompactedView | None = None

    def publish(self, schemas: Iterable[Schema], timeout: float = 30.0) -> int:
        """Write schemas to the topic and wait until the broker has them all."""
        producer = Producer(self.kafka.producer())
        failures: list[str] = []

        def on_delivery(err: object, _msg: object) -> None:
            if err is not None:
                failures.append(str(err))

        count = 0
        for s in schemas:
            value = json.dumps({"name": s.name, "schema": json.loads(s.canonical)}).encode()
            producer.produce(
                self.topic,
                key=f"{s.fingerprint:016x}".encode(),
                value=value,
                on_delivery=on_delivery,
            )
            self.registry.add(s)
            count += 1
        left = producer.flush(timeout)
        if left or failures:
            raise RuntimeError(
                f"could not publish {left or len(failures)} schemas to {self.topic}: "
                f"{failures[:3]}; is Kafka up (`xiangyun stack status`)?"
            )
        return count

    def _apply(self, key: bytes, value: bytes | None) -> None:
        if value is None:
            return
        body = json.loads(value)
        schema = Schema.parse(body["schema"])
        if f"{schema.fingerprint:016x}".encode() == key:
            self.registry.add(schema)

    def follow(self, timeout: float = 30.0) -> SchemaTopic:
        self._view = CompactedView(self.kafka, self.topic, self._apply).start(timeout)
        return self

    def refresh(self, timeout: float = 5.0) -> bool:
        """Catch up with the topic now; True when everything published so far is known."""
        return self._view.sync(timeout) if self._view is not None else False

    def refresh_soon(self, timeout: float = 5.0) -> Future[bool] | None:
        """:meth:`refresh` begun now on a thread (None before :meth:`follow`): it covers
        every schema published before this call."""
        return self._view.sync_soon(timeout) if self._view is not None else None

    def close(self) -> None:
        if self._view is not None:
            self._view.stop()
