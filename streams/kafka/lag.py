"""Consumer-group lag: the one home for "how far behind is a group"."""

from __future__ import annotations

from collections.abc import Callable

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

from streams.kafka.config import KafkaConfig

__all__ = ["GroupLag", "group_lag"]


class GroupLag:
    """Records of some topics a group has not committed, per partition, asked of the broker
    in three requests (committed offsets, earliest and latest offsets) through one admin
    client kept for the caller's life. A worker reports its lag every few seconds: a consumer
    made per topic each time cost a connection, a metadata request and two requests per
    partition, on the worker's two cores.

    A partition without a commit counts from its low watermark: records removed by
    retention are not lag. The offsets are those last committed: offsets sent in a
    transaction show once it commits, so what a transaction still open covers is lag. Not
    "stable" offsets: a busy worker always has a transaction open, and for every partition
    in it the broker answers ``UNSTABLE_OFFSET_COMMIT`` instead of an offset (the lag then
    read as the whole partition). A partition the broker answers with an error raises
    :class:`confluent_kafka.KafkaException`.
    """

    def __init__(self, kafka: KafkaConfig, timeout: float = 10.0) -> None:
        self._admin = AdminClient(kafka.admin())
        self._timeout = timeout

    def of(self, group: str, select: Callable[[str], bool]) -> dict[tuple[str, int], int]:
        """Per partition of every existing topic ``select`` takes."""
        meta = self._admin.list_topics(timeout=self._timeout).topics
        tps = [TopicPartition(t, p) for t in meta if select(t) for p in meta[t].partitions]
        if not tps:
            return {}
        asked = self._admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group, tps)],
            require_stable=False,
            request_timeout=self._timeout,
        )
        committed = {}
        for tp in asked[group].result(self._timeout).topic_partitions or []:
            if tp.error is not None:  # never counted as "nothing committed"
                raise KafkaException(tp.error)
            committed[(tp.topic, tp.partition)] = tp.offset
        earliest = OffsetSpec.earliest()  # type: ignore[no-untyped-call]
        latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
        low = self._admin.list_offsets(dict.fromkeys(tps, earliest), request_timeout=self._timeout)
        high = self._admin.list_offsets(dict.fromkeys(tps, latest), request_timeout=self._timeout)
        out = {}
        for tp in tps:
            k = (tp.topic, tp.partition)
            first = low[tp].result(self._timeout).offset
            end = high[tp].result(self._timeout).offset
            out[k] = max(0, end - max(committed.get(k, -1), first))
        return out


def group_lag(kafka: KafkaConfig, topic: str, group: str) -> dict[tuple[str, int], int]:
    """:meth:`GroupLag.of` one topic, once."""
    return GroupLag(kafka).of(group, topic.__eq__)
