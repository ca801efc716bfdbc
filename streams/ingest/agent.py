"""Ingest agent (采集汇聚): collect topic → pool, verification or rejected topic.

Each item of its stream is a batch read by :class:`~streams.ingest.reader.CollectReader`. The
batch is decided, its outputs produced and flushed; only then are its offsets stored, so a
worker killed at any point re-reads what it had not written.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import faust
from confluent_kafka import Message

from streams.ingest.reader import CollectReader
from streams.ingest.runtime import DeliveryError, Runtime, die_on_delivery_failure

__all__ = ["register_ingest"]


class BatchSource(Protocol):
    channel: faust.ChannelT[Sequence[Message]]

    def done(self, messages: Sequence[Message]) -> None: ...


def register_ingest(app: faust.App, runtime: Runtime, source: BatchSource | CollectReader) -> None:
    metrics = runtime.metrics

    @app.agent(source.channel, name="ingest")
    async def ingest(batches: faust.StreamT[Sequence[Message]]) -> None:
        async for messages in batches:
            with metrics.batch_seconds.time():
                outcomes = runtime.decide(
                    (m.key(), m.value(), m.topic() or "", m.partition() or 0, m.offset() or 0)
                    for m in messages
                )
                runtime.emit(outcomes)
                try:
                    await runtime.flush_async()
                except DeliveryError as exc:
                    die_on_delivery_failure(exc)
            source.done(messages)
