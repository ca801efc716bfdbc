"""How a source system records consents (article 18) on the consents topic.

Each consent is keyed by its id on the compacted consents topic, so the topic keeps the
latest state of every consent: :meth:`ConsentPublisher.grant` publishes a consent,
:meth:`ConsentPublisher.withdraw` publishes it again withdrawn from a time on,
:meth:`ConsentPublisher.erase` leaves a tombstone (the consent is then unknown). The
producer is idempotent, so its own retries never reorder a grant and its withdrawal.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaError

from streams.core.consent import CONSENT_SCHEMA_NAME, Consent
from streams.kafka.config import StreamsConfig, idempotent_producer
from streams.kafka.topics import Topics
from streams.wire.codec import Schema, SchemaRegistry, encode

__all__ = ["ConsentPublishError", "ConsentPublisher"]


class ConsentPublishError(RuntimeError):
    """Consents could not be written to the consents topic."""


class ConsentPublisher:
    """Publishes consents, withdrawals and erasures; :meth:`flush` (or leaving the ``with``
    block) waits until the broker has them all."""

    def __init__(
        self, config: StreamsConfig, *, registry: SchemaRegistry | None = None, **conf: Any
    ) -> None:
        self.topic = Topics.of(config).consents
        registry = registry or SchemaRegistry.from_dir(config.schema_dir)
        self.schema: Schema = registry.by_name(CONSENT_SCHEMA_NAME)
        self._producer = idempotent_producer(config.kafka, **conf)
        self._failures: list[str] = []
        self.sent = 0

    def _on_delivery(self, err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            self._failures.append(str(err))

    def _send(self, key: bytes, value: bytes | None) -> None:
        while True:
            try:
                self._producer.produce(self.topic, value, key, on_delivery=self._on_delivery)
                break
            except BufferError:
                self._producer.poll(0.05)
        self.sent += 1

    def encode(self, consent: Consent) -> bytes:
        return encode(self.schema, consent.to_avro())

    def grant(self, consents: Consent | Iterable[Consent]) -> int:
        """Publish consents as they stand (a grant, or any later state); returns the count."""
        items = [consents] if isinstance(consents, Consent) else list(consents)
        for consent in items:
            self._send(consent.key, self.encode(consent))
        return len(items)

    def withdraw(self, consent: Consent, at_ms: int) -> Consent:
        """Publish ``consent`` withdrawn from ``at_ms`` on; returns the withdrawn consent.
        Records observed before ``at_ms`` stay lawfully collected."""
        withdrawn = consent.withdrawn(at_ms)
        self._send(withdrawn.key, self.encode(withdrawn))
        return withdrawn

    def erase(self, consent_id: str) -> None:
        """A tombstone: the consent is removed from the topic (after compaction) and from
        every book following it; a record citing it is then CONSENT_UNKNOWN."""
        self._send(consent_id.encode(), None)

    def flush(self, timeout: float = 30.0) -> None:
        left = self._producer.flush(timeout)
        if left or self._failures:
            raise ConsentPublishError(
                f"{left} consents undelivered, failures: {self._failures[:3]}; "
                "is Kafka up (`xiangyun stack status`)?"
            )

    def __enter__(self) -> ConsentPublisher:
        return self

    def __exit__(self, et: object, ev: object, tb: object) -> None:
        if et is None:
            self.flush()
