"""The collect-topic reader: librdkafka reads whole batches and hands each batch to the
ingest agent as one item of a Faust channel.

Why not a Faust topic stream: Faust's conductor spends about 65 µs on every message (a
task, a queue hop and an event per record), which caps one worker near 15,000 records/s
before any work is done. A batch per channel item pays that cost once per batch.

Offsets are stored only when the agent calls :meth:`CollectReader.done` after the batch's
outputs are acknowledged by the broker; librdkafka commits stored offsets every second and
on close. A crash re-reads what was not done: at-least-once, never lost.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
from collections.abc import Sequence
from typing import Any

import faust
import mode
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from streams.kafka.config import StreamsConfig

__all__ = ["CollectReader"]

log = logging.getLogger(__name__)


class CollectReader(mode.Service):
    """Consumer group ``config.ingest_group`` on the collect topic."""

    def __init__(self, app: faust.App, config: StreamsConfig, topic: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.topic = topic
        # A few batches in flight at most: memory stays bounded, the broker keeps the rest.
        self.channel: faust.ChannelT[Any] = app.channel(maxsize=4)
        self._consumer: Consumer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        # Offsets to store, handed from the agent to the reader thread: librdkafka's consumer
        # is used from that one thread only (a busy consume loop starves other callers).
        self._to_store: queue.SimpleQueue[list[TopicPartition]] = queue.SimpleQueue()

    def consumer_config(self) -> dict[str, Any]:
        return self.config.kafka.consumer(
            self.config.ingest_group,
            **{
                "enable.auto.commit": True,
                "auto.commit.interval.ms": 1000,
                "enable.auto.offset.store": False,  # stored by done(), after delivery
                "fetch.max.bytes": 52_428_800,
                "partition.assignment.strategy": "cooperative-sticky",
                # A killed worker's partitions move to the others within 10 s, not 45.
                "session.timeout.ms": 10_000,
            },
        )

    async def on_start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._consumer = Consumer(self.consumer_config())
        self._consumer.subscribe([self.topic])
        self._thread = threading.Thread(target=self._run, name="collect-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        consumer, loop = self._consumer, self._loop
        assert consumer is not None and loop is not None
        try:
            while not self._stopping.is_set():
                self._store_pending(consumer)
                try:
                    msgs = consumer.consume(self.config.batch_size, 0.1)
                except KafkaException as exc:  # broker away: librdkafka reconnects
                    log.warning("collect reader: %s", exc)
                    continue
                batch = [m for m in msgs if not self._is_error(m)]
                if batch:
                    self._hand_over(batch, loop)
        finally:
            self._store_pending(consumer)
            consumer.close()  # commits what was stored

    @staticmethod
    def _is_error(m: Message) -> bool:
        err = m.error()
        if err is None:
            return False
        if err.code() != KafkaError._PARTITION_EOF:
            log.warning("collect reader: %s", err)
        return True

    def _hand_over(self, batch: list[Message], loop: asyncio.AbstractEventLoop) -> None:
        fut = asyncio.run_coroutine_threadsafe(self._deliver(batch), loop)
        while True:  # the channel is full while the agent is busy: wait, but stay stoppable
            try:
                fut.result(0.5)
                return
            except concurrent.futures.TimeoutError:
                if self._stopping.is_set():
                    fut.cancel()
                    return

    async def _deliver(self, batch: list[Message]) -> None:
        # A channel drops what is put while nobody subscribes: wait for the agent.
        while self.channel.subscriber_count == 0:
            await asyncio.sleep(0.01)
        await self.channel.put(batch)  # type: ignore[arg-type]

    def done(self, messages: Sequence[Message]) -> None:
        """The batch's outputs are delivered: let its offsets be committed."""
        last: dict[tuple[str, int], int] = {}
        for m in messages:
            last[(m.topic() or "", m.partition() or 0)] = m.offset() or 0
        if last:
            self._to_store.put([TopicPartition(t, p, o + 1) for (t, p), o in last.items()])

    def _store_pending(self, consumer: Consumer) -> None:
        while True:
            try:
                offsets = self._to_store.get_nowait()
            except queue.Empty:
                return
            try:
                consumer.store_offsets(offsets=offsets)
            except KafkaException as exc:
                # Partition revoked meanwhile: its new owner re-reads the batch (at-least-once).
                log.info("collect reader: offsets not stored: %s", exc)

    async def on_stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 30)
