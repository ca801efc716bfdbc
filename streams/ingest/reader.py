"""The collect-topic reader: librdkafka reads whole batches of every principal's collect
topic and hands each batch to the ingest agent as one item of a Faust channel.

One key, one owner: the reader subscribes to the collect topics by pattern with Kafka's
``range`` assignor, which gives partition ``p`` of every collect topic to the same worker
(they all have the same partition count; the ingest rejects a record its key's partition
does not match). That worker alone holds the pool state of partition ``p``.

Why not a Faust topic stream: Faust's conductor spends about 65 µs on every message (a
task, a queue hop and an event per record), which caps one worker near 15,000 records/s
before any work is done. A batch per channel item pays that cost once per batch.

Offsets are never committed here: the agent commits them inside its transactions. The
reader handles the group's rebalances, on its own thread, inside ``consume``:

- assigned partitions get their pool state restored before any of their records is read
  (the range assignor rebalances eagerly: a partition revoked and assigned back in the same
  rebalance keeps its state, nobody else owned it in between);
- revoked partitions: a :class:`Barrier` goes through the channel behind every batch
  already handed over, and the agent commits what it holds before the partition moves;
- lost partitions (the group went on without us): the open transaction is aborted and the
  worker exits; nothing it decided may be committed any more.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import faust
import mode
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from streams.kafka.config import StreamsConfig
from streams.kafka.consume import read_available

__all__ = ["Barrier", "CollectReader", "KeepingChannel"]

log = logging.getLogger(__name__)

#: how long a revocation may wait for the agent to commit what it holds
BARRIER_TIMEOUT_S = 60.0


class KeepingChannel(faust.Channel):  # type: ignore[type-arg]
    """A Faust channel whose queues are never cleared. Faust clears a channel's queues when
    it resumes after a rebalance of its own group (``clear_on_resume``): a batch handed over
    would vanish while the batches after it commit their offsets past it. Here a batch
    handed over stays until the agent decides it; flow control only pauses the hand-over."""

    @property
    def queue(self) -> Any:
        if self._queue is None:
            maxsize = self.maxsize if self.maxsize is not None else 4
            self._queue = self.app.FlowControlQueue(maxsize=maxsize, clear_on_resume=False)
        return self._queue


class Barrier:
    """Commit everything handed over before me, then let the rebalance go on."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self.ok = False

    def release(self, ok: bool) -> None:
        self.ok = ok
        self._done.set()

    def wait(self, timeout: float) -> bool:
        return self._done.wait(timeout) and self.ok


class CollectReader(mode.Service):
    """Consumer group ``config.ingest_group`` on the collect topic.

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
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.pattern = pattern
        # A few batches in flight at most: memory stays bounded, the broker keeps the rest.
        self.channel: faust.ChannelT[Any] = KeepingChannel(app=app, maxsize=4)
        self._restore, self._drop, self._lost = restore, drop, on_lost
        self._consumer: Consumer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.assigned: set[int] = set()
        self._revoked: set[int] = set()  # committed, kept until the next assignment
        self._metadata: object | None = None

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

    def group_metadata(self) -> object:
        """The group metadata to commit offsets with, as the reader thread last saw it: a
        call into the consumer from another thread blocks while ``consume`` runs."""
        assert self._metadata is not None, "no metadata before the first assignment"
        return self._metadata

    def idle(self) -> bool:
        """No batch is waiting in the channel."""
        return bool(self.channel.queue.empty())

    async def on_start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._consumer = Consumer(self.consumer_config())
        self._consumer.subscribe(
            [self.pattern],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        self._thread = threading.Thread(target=self._run, name="collect-reader", daemon=True)
        self._thread.start()

    # -- rebalance callbacks, on the reader thread inside consume() -----------------------
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
        self._metadata = c.consumer_group_metadata()  # the generation that still owns them
        barrier = Barrier()
        loop = self._loop
        assert loop is not None
        if not self._put(barrier, loop) or not barrier.wait(BARRIER_TIMEOUT_S):
            # The agent is gone (stopping) or stuck: nothing of these partitions commits.
            log.warning("revoke of %s: in-flight batches not committed, aborted", parts)
            self._lost(parts)
            self._drop(parts)
        else:
            self._revoked |= set(parts)  # dropped at the next assignment unless it keeps them
        self.assigned.difference_update(parts)

    def _on_lost(self, _c: Consumer, partitions: list[TopicPartition]) -> None:
        self._lost([tp.partition for tp in partitions])

    # -- the read loop --------------------------------------------------------------------
    def _run(self) -> None:
        consumer, loop = self._consumer, self._loop
        assert consumer is not None and loop is not None
        try:
            while not self._stopping.is_set():
                try:
                    msgs = read_available(consumer, self.config.batch_size, 0.1)
                except KafkaException as exc:  # broker away: librdkafka reconnects
                    log.warning("collect reader: %s", exc)
                    continue
                if self.assigned:
                    self._metadata = consumer.consumer_group_metadata()
                batch = [m for m in msgs if not self._is_error(m)]
                if batch and not self._put(batch, loop):
                    # Never read past a batch the agent did not take: a later commit would
                    # skip it. Stopping: nothing more is read. Otherwise: fatal.
                    if self._stopping.is_set():
                        break
                    raise RuntimeError("the ingest agent did not take a batch")
        except Exception as exc:  # our own failure (a restore that cannot finish, a bug)
            log.critical("collect reader failed: %s", exc, exc_info=True)
            self._lost(sorted(self.assigned))  # aborts, and ends the worker unless stopping
        finally:
            consumer.close()  # revokes: the barrier commits what the agent holds

    @staticmethod
    def _is_error(m: Message) -> bool:
        err = m.error()
        if err is None:
            return False
        if err.code() != KafkaError._PARTITION_EOF:
            log.warning("collect reader: %s", err)
        return True

    def _put(self, item: object, loop: asyncio.AbstractEventLoop) -> bool:
        if loop.is_closed():
            return False
        fut = asyncio.run_coroutine_threadsafe(self._deliver(item), loop)
        deadline = time.monotonic() + BARRIER_TIMEOUT_S
        while True:  # the channel is full while the agent is busy: wait, but stay stoppable
            try:
                fut.result(0.5)
                return True
            except concurrent.futures.CancelledError:
                # Cancelled before it was put (a stop, or the app's own flow control): hand
                # it over again unless stopping; it was not taken, nothing read past it.
                if self._stopping.is_set() or loop.is_closed():
                    return False
                fut = asyncio.run_coroutine_threadsafe(self._deliver(item), loop)
                continue
            except concurrent.futures.TimeoutError:
                # A batch gives way to a stop; a barrier waits for the agent, boundedly.
                if isinstance(item, Barrier):
                    giving_up = time.monotonic() > deadline
                else:
                    giving_up = self._stopping.is_set()
                if giving_up or loop.is_closed():
                    fut.cancel()
                    return False

    async def _deliver(self, item: object) -> None:
        # A channel drops what is put while nobody subscribes: wait for the agent.
        while self.channel.subscriber_count == 0:
            await asyncio.sleep(0.01)
        await self.channel.put(item)  # type: ignore[arg-type]

    async def on_stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 90)
