"""The verifier's reader: one librdkafka consumer on the verification topic and every pool
topic, read committed, handing whole batches to the verifier agent
(:class:`~streams.kafka.batch_reader.BatchReader`).

Co-partitioning: the group uses the ``range`` assignor. It assigns each subscribed topic on
its own, partitions in order over the members sorted by member id, so topics with the same
partition count are split identically: the member that gets verification partition ``p``
gets partition ``p`` of every pool topic, whose keys are the same (every outcome goes to
its collect record's partition). ``cooperative-sticky`` and ``roundrobin`` give no such
promise. ``range`` is an eager protocol: at each rebalance every partition is revoked (the
agent commits what it holds at a barrier) and the whole new assignment is restored before
anything of it is read; the verifier's restores are bounded by the pool partitions' size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import faust
from confluent_kafka import Consumer, TopicPartition

from streams.kafka.batch_reader import BatchReader
from streams.kafka.config import StreamsConfig

__all__ = ["VerificationReader"]


class VerificationReader(BatchReader):
    """Consumer group ``config.verify_group`` on ``topics`` (co-partitioned).

    ``restore(partitions)`` and ``drop(partitions)`` keep the verifier's state in step with
    the assignment (partition numbers: each stands for that partition of every topic);
    ``on_lost()`` must not return unless the worker stops."""

    def __init__(
        self,
        app: faust.App,
        config: StreamsConfig,
        topics: list[str],
        *,
        restore: Callable[[list[int]], object] = lambda _p: None,
        drop: Callable[[list[int]], object] = lambda _p: None,
        on_lost: Callable[[list[int]], object] = lambda _p: None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            app,
            config,
            topics,
            role="verification",
            restore=restore,
            drop=drop,
            on_lost=on_lost,
            **kwargs,
        )
        self.topics = topics

    def consumer_config(self) -> dict[str, Any]:
        return self.config.kafka.consumer(
            self.config.verify_group,
            **{
                "enable.auto.commit": False,  # offsets commit inside the transactions
                "isolation.level": "read_committed",
                "partition.assignment.strategy": "range",  # co-partitions: see the module
                "session.timeout.ms": 10_000,
            },
        )

    def _on_assign(self, c: Consumer, partitions: list[TopicPartition]) -> None:
        self._metadata = c.consumer_group_metadata()
        parts = sorted({tp.partition for tp in partitions})
        if parts:
            self._restore(parts)  # before any record of these partitions is read
            self.assigned.update(parts)

    def _on_revoke(self, c: Consumer, partitions: list[TopicPartition]) -> None:
        parts = sorted({tp.partition for tp in partitions})
        if not parts:
            return
        if not self._committed_before_revoke(c, parts):
            self._lost(parts)
        self._drop(parts)
        self.assigned.difference_update(parts)
