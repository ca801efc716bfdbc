"""Kafka client configuration: one home, so every producer behaves the same way."""

from __future__ import annotations

from typing import Any

from confluent_kafka import Producer

from xiangyun.settings import Settings

__all__ = ["idempotent_producer"]


def idempotent_producer(settings: Settings, **overrides: Any) -> Producer:
    """acks=all and idempotence: the client's own retries never duplicate or reorder a record.

    ``overrides`` are librdkafka properties, e.g. ``{"linger.ms": 10}`` passed as
    ``**{"linger.ms": 10}``.
    """
    conf: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "batch.num.messages": 10000,
        "compression.type": "lz4",
        "message.max.bytes": 4_194_304,  # a rejected record carries up to 1 MiB of original
        "queue.buffering.max.messages": 500_000,
    }
    conf.update(overrides)
    return Producer(conf)
