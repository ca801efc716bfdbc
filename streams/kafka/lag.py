"""Consumer-group lag: the one home for "how far behind is a group"."""

from __future__ import annotations

from confluent_kafka import Consumer, TopicPartition

from streams.kafka.config import KafkaConfig

__all__ = ["group_lag"]


def group_lag(kafka: KafkaConfig, topic: str, group: str) -> dict[tuple[str, int], int]:
    """Records of ``topic`` that ``group`` has not committed, per partition.

    A partition without a commit counts from its low watermark: records removed by
    retention are not lag.
    """
    c = Consumer(kafka.consumer(group))
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
