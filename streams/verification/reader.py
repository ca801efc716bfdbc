"""The verifier's reader: one librdkafka consumer on the verification topic and every pool
topic, read committed, handing whole batches to the verifier agent through a Faust channel
(as the collect reader does for the ingest, for the same reason: Faust's per-message cost).

Co-partitioning: the group uses the ``range`` assignor. It assigns each subscribed topic on
its own, partitions in order over the members sorted by member id, so topics with the same
partition count are split identically: the member that gets verification partition ``p``
gets partition ``p`` of every pool topic, whose keys are the same (every outcome goes to
its collect record's partition). ``cooperative-sticky`` and ``roundrobin`` give no such
promise. ``range`` is an eager protocol: at each rebalance every partition is revoked (the
agent commits what it holds at a barrier) and the whole new assignment is restored before
anything of it is read; the verifier's restores are bounded by the pool partitions' size.

Offsets are never committed here: the agent commits them inside its transactions.
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

__all__ = ["Barrier", "VerificationReader"]

log = logging.getLogger(__name__)

#: how long a revocation may wait for the agent to commit what it holds
BARRIER_TIMEOUT_S = 60.0


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


class VerificationReader(mode.Service):
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
        super().__init__(**kwargs)
        self.config = config
        self.topics = topics
        self.channel: faust.ChannelT[Any] = app.channel(maxsize=4)
        self._restore, self._drop, self._lost = restore, drop, on_lost
        self._consumer: Consumer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.assigned: set[int] = set()
        self._metadata: object | None = None

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

    def group_metadata(self) -> object:
        assert self._metadata is not None, "no metadata before the first assignment"
        return self._metadata

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def idle(self) -> bool:
        return bool(self.channel.queue.empty())

    async def on_start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._consumer = Consumer(self.consumer_config())
        self._consumer.subscribe(
            self.topics,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        self._thread = threading.Thread(target=self._run, name="verify-reader", daemon=True)
        self._thread.start()

    # -- rebalance callbacks, on the reader thread inside consume() -----------------------
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
        self._metadata = c.consumer_group_metadata()
        barrier = Barrier()
        loop = self._loop
        assert loop is not None
        if not self._put(barrier, loop) or not barrier.wait(BARRIER_TIMEOUT_S):
            log.warning("verifier revoke of %s: in-flight batches not committed, aborted", parts)
            self._lost(parts)
        self._drop(parts)
        self.assigned.difference_update(parts)

    def _on_lost(self, _c: Consumer, partitions: list[TopicPartition]) -> None:
        self._lost(sorted({tp.partition for tp in partitions}))

    # -- the read loop --------------------------------------------------------------------
    def _run(self) -> None:
        consumer, loop = self._consumer, self._loop
        assert consumer is not None and loop is not None
        try:
            while not self._stopping.is_set():
                try:
                    msgs = read_available(consumer, self.config.batch_size, 0.1)
                except KafkaException as exc:
                    log.warning("verification reader: %s", exc)
                    continue
                if self.assigned:
                    self._metadata = consumer.consumer_group_metadata()
                batch = [m for m in msgs if not self._is_error(m)]
                if batch and not self._put(batch, loop):
                    if self._stopping.is_set():
                        break
                    raise RuntimeError("the verifier agent did not take a batch")
        except Exception as exc:
            log.critical("verification reader failed: %s", exc, exc_info=True)
            self._lost(sorted(self.assigned))
        finally:
            consumer.close()

    @staticmethod
    def _is_error(m: Message) -> bool:
        err = m.error()
        if err is None:
            return False
        if err.code() != KafkaError._PARTITION_EOF:
            log.warning("verification reader: %s", err)
        return True

    def _put(self, item: object, loop: asyncio.AbstractEventLoop) -> bool:
        if loop.is_closed():
            return False
        fut = asyncio.run_coroutine_threadsafe(self._deliver(item), loop)
        deadline = time.monotonic() + BARRIER_TIMEOUT_S
        while True:
            try:
                fut.result(0.5)
                return True
            except concurrent.futures.CancelledError:
                return False
            except concurrent.futures.TimeoutError:
                if isinstance(item, Barrier):
                    giving_up = time.monotonic() > deadline
                else:
                    giving_up = self._stopping.is_set()
                if giving_up or loop.is_closed():
                    fut.cancel()
                    return False

    async def _deliver(self, item: object) -> None:
        while self.channel.subscriber_count == 0:
            await asyncio.sleep(0.01)
        await self.channel.put(item)  # type: ignore[arg-type]

    async def on_stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 90)
