"""The collect-topic reader: librdkafka reads whole batches of every principal's collect
topic and hands each batch to the ingest agent (:class:`~streams.kafka.batch_reader.BatchReader`).

One key, one owner: the reader subscribes to the collect topics by pattern with Kafka's
``range`` assignor, which gives partition ``p`` of every collect topic to the same worker
(they all have the same partition count; the ingest rejects a record its key's partition
does not match). That worker alone holds the pool state of partition ``p``.

What an assignment means for the pool state:

- assigned partitions get their pool state restored before any of their records is read
  (the range assignor rebalances eagerly: a partition revoked and assigned back in the same
  rebalance keeps its state, nobody else owned it in between);
- revoked partitions: the agent commits what it holds before the partition moves (a
  barrier); if it cannot, nothing of them commits and their state is dropped;
- lost partitions (the group went on without us): the open transaction is aborted and the
  worker exits; nothing it decided may be committed any more.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import faust
from confluent_kafka import Consumer, TopicPartition

from streams.kafka.batch_reader import BatchReader
from streams.kafka.config import StreamsConfig

__all__ = ["CollectReader"]


class CollectReader(BatchReader):
    """Consumer group ``config.ingest_group`` on the collect topics (``pattern``).

    ``restore(partitions)`` and ``drop(partitions)`` keep the pool state in step with the
    assignment; ``on_lost()`` must not return (it aborts and ends the process)."""

    def __init__(
        self,
        app: faust.App,
        config: StreamsConfig,
        pattern: str,
        *,
        restore: Callable[[list[int]], object] = lambda _p: None,
        drop: Callable[[list[int]], object] = lambda _p: None,
        on_lost: Callable[[list[int]], object] = lambda _p: None,
        role: str = "collect",
        **kwargs: Any,
    ) -> None:
        super().__init__(
            app,
            config,
            [pattern],
            role=role,
            restore=restore,
            drop=drop,
            on_lost=on_lost,
            **kwargs,
        )
        self.pattern = pattern
        self._revoked: set[int] = set()  # committed, kept until the next assignment

    def consumer_config(self) -> dict[str, Any]:
        return self.config.kafka.consumer(
            self.config.ingest_group,
            **{
                "enable.auto.commit": False,  # offsets commit inside the transactions
                # Committed offsets are fetched "stable" (KIP-447): a batch whose
                # transaction is still being committed is not read twice.
                "isolation.level": "read_committed",
                "fetch.max.bytes": 52_428_800,
                # Partition p of every collect topic to one worker: one key, one owner.
                "partition.assignment.strategy": "range",
                # A new principal's topic is read within seconds, not five minutes.
                "topic.metadata.refresh.interval.ms": 5_000,
                # A killed worker's partitions move to the others within 10 s, not 45.
                "session.timeout.ms": 10_000,
            },
        )

    def _on_assign(self, c: Consumer, partitions: list[TopicPartition]) -> None:
        self._metadata = c.consumer_group_metadata()
        parts = sorted({tp.partition for tp in partitions})
        gone = sorted(self._revoked - set(parts))
        if gone:
            self._drop(gone)
        new = [p for p in parts if p not in self._revoked and p not in self.assigned]
        self._revoked = set()
        if new:
            self._restore(new)  # before any record of these partitions is read
        self.assigned = set(parts)

    def _on_revoke(self, c: Consumer, partitions: list[TopicPartition]) -> None:
        parts = sorted({tp.partition for tp in partitions})
        if not parts:
            return
        if self._committed_before_revoke(c, parts):
            self._revoked |= set(parts)  # dropped at the next assignment unless it keeps them
        else:
            # The agent is gone (stopping) or stuck: nothing of these partitions commits.
            self._lost(parts)
            self._drop(parts)
        self.assigned.difference_update(parts)
