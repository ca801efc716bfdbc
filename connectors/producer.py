"""The producer a source system (department registry, city platform) publishes with.

It registers every writer schema on the schema topic before the first record that uses
it, keys records ``resource_id|subject_id``, publishes to its principal's collect topic
(``<prefix>.collect.<principal>``: the topic is who publishes) with Kafka's own partitioner,
and is idempotent, so its own retries never duplicate a record in the collect topic.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaError

from streams.kafka.config import StreamsConfig, idempotent_producer
from streams.kafka.schema_topic import SchemaTopic
from streams.kafka.topics import Topics
from streams.wire.codec import Schema

__all__ = ["PublishError", "SourceProducer"]


class PublishError(RuntimeError):
    """Records could not be written to the collect topic."""


class SourceProducer:
    def __init__(self, config: StreamsConfig, schema_topic: SchemaTopic, **conf: Any) -> None:
        self.topics = Topics.of(config)
        self.schema_topic = schema_topic
        self._producer = idempotent_producer(
            config.kafka, **{"linger.ms": 10, "queue.buffering.max.messages": 1_000_000, **conf}
        )
        self._failures: list[str] = []
        self._topics: dict[str, str] = {}
        self.sent = 0

    def register(self, schemas: Iterable[Schema]) -> int:
        """Publish writer schemas (waits for the broker) so consumers can decode."""
        return self.schema_topic.publish(schemas)

    def _on_delivery(self, err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            self._failures.append(str(err))

    def collect_topic(self, principal: str) -> str:
        """The principal's collect topic; a principal without one is refused at once (not
        after the delivery timeout): register it and create its topic first."""
        topic = self._topics.get(principal)
        if topic is None:
            topic = self.topics.collect(principal)
            meta = self._producer.list_topics(topic, timeout=10).topics.get(topic)
            if meta is None or meta.error is not None or not meta.partitions:
                raise PublishError(
                    f"principal {principal!r:.40} has no collect topic {topic}: register the "
                    f"unit (`xiangyun units submit`), then create it (`xiangyun topics`)"
                )
            self._topics[principal] = topic
        return topic

    def send(self, principal: str, key: bytes | None, value: bytes) -> None:
        topic = self.collect_topic(principal)
        while True:
            try:
                self._producer.produce(topic, value, key, on_delivery=self._on_delivery)
                break
            except BufferError:
                self._producer.poll(0.05)
        self.sent += 1
        if self.sent % 10000 == 0:
            self._producer.poll(0)

    def send_all(
        self,
        records: Iterable[tuple[str, bytes | None, bytes]],
        *,
        total: int = 0,
        progress: bool = True,
    ) -> int:
        """Send every (principal, key, value), showing a rate line; returns the count sent."""
        start = time.monotonic()
        n = 0
        for principal, key, value in records:
            self.send(principal, key, value)
            n += 1
            if progress and n % 20000 == 0:
                _rate_line("published", n, total, start)
        self.flush()
        if progress:
            _rate_line("published", n, total, start, end="\n")
        return n

    def flush(self, timeout: float = 120.0) -> None:
        left = self._producer.flush(timeout)
        if left or self._failures:
            raise PublishError(
                f"{left} records undelivered, failures: {self._failures[:3]}; "
                "is Kafka up (`xiangyun stack status`)?"
            )


def _rate_line(what: str, n: int, total: int, start: float, end: str = "\r") -> None:
    elapsed = max(time.monotonic() - start, 1e-9)
    of = f"/{total:,}" if total else ""
    print(f"  {what} {n:,}{of} records, {n / elapsed:,.0f}/s", end=end, file=sys.stderr, flush=True)
