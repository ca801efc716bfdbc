"""The producer a source system (department registry, city platform) publishes with.

It registers every writer schema on the schema topic before the first record that uses
it, keys records ``resource_id|subject_id``, and is idempotent, so its own retries never
duplicate a record in the collect topic.
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
        self.sent = 0

    def register(self, schemas: Iterable[Schema]) -> int:
        """Publish writer schemas (waits for the broker) so consumers can decode."""
        return self.schema_topic.publish(schemas)

    def _on_delivery(self, err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            self._failures.append(str(err))

    def send(self, key: bytes | None, value: bytes, topic: str | None = None) -> None:
        while True:
            try:
                self._producer.produce(
                    topic or self.topics.collect, value, key, on_delivery=self._on_delivery
                )
                break
            except BufferError:
                self._producer.poll(0.05)
        self.sent += 1
        if self.sent % 10000 == 0:
            self._producer.poll(0)

    def send_all(
        self,
        records: Iterable[tuple[bytes | None, bytes]],
        *,
        total: int = 0,
        progress: bool = True,
        topic: str | None = None,
    ) -> int:
        """Send every (key, value), showing a rate line; returns the count sent."""
        start = time.monotonic()
        n = 0
        for key, value in records:
            self.send(key, value, topic)
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
