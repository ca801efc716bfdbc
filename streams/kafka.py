"""Kafka client configuration: one home, so every producer behaves the same way."""

from __future__ import annotations

from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from xiangyun.settings import Settings

__all__ = ["group_lag", "idempotent_producer"]


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


def group_lag(settings: Settings, topic: str, group: str) -> dict[tuple[str, int], int]:
    """Records of ``topic`` that ``group`` has not committed, per partition.

    A partition without a commit counts from its low watermark: records removed by
    retention are not lag.
    """
    c = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
        }
    )
    try:
        meta = c.list_topics(topic, timeout=10).topics[topic]
        tps = [TopicPartition(topic, p) for p in meta.partitions]
        out = {}
        for tp in c.committed(tps, timeout=10):
            low, high = c.get_watermark_offsets(tp, timeout=10)
            out[(tp.topic, tp.partition)] = max(0, high - max(tp.offset, low))
        return out
    finally:
        c.close()
