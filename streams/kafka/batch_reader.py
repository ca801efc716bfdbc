"""Batches from librdkafka to a Faust agent: the one read loop of the ingest, the verifier
and the exchange.

A librdkafka consumer reads whole batches on a thread of its own and hands each batch to
an agent as one item of a Faust channel. Why not a Faust topic stream: Faust's conductor
spends about 65 µs on every message (a task, a queue hop and an event per record), which
caps one worker near 15,000 records/s before any work is done. A batch per channel item
pays that cost once per batch.

Offsets are never committed here: the agents commit them inside their transactions. The
group's rebalances run on the reader's thread, inside ``consume``; each reader says what
an assignment means for its state (``_on_assign``, ``_on_revoke``). A revocation puts a
:class:`Barrier` through the channel behind every batch already handed over, so the agent
commits what it holds before the partitions move; a lost assignment aborts.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import faust
import mode
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from streams.kafka.config import StreamsConfig
from streams.kafka.consume import read_available

__all__ = [
    "BARRIER_TIMEOUT_S",
    "Barrier",
    "BatchReader",
    "KeepingChannel",
    "Offsets",
    "Record",
    "crash_only",
    "next_offsets",
    "report_once",
    "unpack",
]

log = logging.getLogger(__name__)

#: how long a revocation may wait for the agent to commit what it holds
BARRIER_TIMEOUT_S = 60.0

#: the offsets a transaction covers: (topic, partition) -> the next offset to read
Offsets = dict[tuple[str, int], int]

#: a message as the decisions see it, free of Kafka: key, value, topic, partition, offset
Record = tuple[bytes | None, bytes | None, str, int, int]


def report_once(on_fatal: Callable[[BaseException], object]) -> Callable[[BaseException], None]:
    """``on_fatal`` called once per failure: a failed commit is reported by its callback at
    once and raised again where the agent awaits it."""
    seen: list[BaseException] = []

    def report(exc: BaseException) -> None:
        if not any(e is exc for e in seen):
            seen.append(exc)
            on_fatal(exc)

    return report


def crash_only(
    on_fatal: Callable[[BaseException], object],
) -> Callable[[Callable[[Any], Awaitable[None]]], Callable[[Any], Awaitable[None]]]:
    """An agent that fails mid-batch (its own bug, a producer gone fatal) ends the worker
    instead of being restarted by Faust's supervisor: a restarted agent would commit the
    next batch past the one it lost, or wait forever for an on-demand reader. What was not
    committed is read again by the partitions' next owner."""

    def wrap(agent: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
        @functools.wraps(agent)
        async def run(items: Any) -> None:
            try:
                await agent(items)
            except Exception as exc:
                log.critical("agent %s failed: %s", agent.__name__, exc, exc_info=True)
                on_fatal(exc)

        return run

    return wrap


def unpack(messages: Sequence[Message]) -> tuple[list[Record], Offsets]:
    """Each message as a :data:`Record`, and the next offset to read per partition: one
    pass, each accessor called once."""
    records: list[Record] = []
    add = records.append
    last: Offsets = {}
    for m in messages:
        record = (m.key(), m.value(), m.topic() or "", m.partition() or 0, m.offset() or 0)
        add(record)
        last[(record[2], record[3])] = record[4] + 1
    return records, last


def next_offsets(messages: Sequence[Message]) -> Offsets:
    """The next offset to read per partition, after ``messages``."""
    last: Offsets = {}
    for m in messages:
        last[(m.topic() or "", m.partition() or 0)] = (m.offset() or 0) + 1
    return last


class KeepingChannel(faust.Channel):  # type: ignore[type-arg]
    """A Faust channel whose queues are never cleared. Faust clears a channel's queues when
    it resumes after a rebalance of its own group (``clear_on_resume``): a batch handed over
    would vanish while the batches after it commit their offsets past it. Here a batch
    handed over stays until the agent decides it; flow control only pauses the hand-over."""

    @property
    def queue(self) -> Any:
        if self._queue is None:
            maxsize = self.maxsize if self.maxsize is not None else 1
            self._queue = self.app.FlowControlQueue(maxsize=maxsize, clear_on_resume=False)
        return self._queue

    def waiting(self) -> bool:
        """Whether an item put is not taken yet. Faust puts into the subscribers' queues,
        never into the channel's own, which is always empty: ask them."""
        root = self._root if self._root is not None else self
        return any(not s.queue.empty() for s in list(root._subscribers))


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


class BatchReader(mode.Service):
    """A consumer on ``subscription`` (topic names, or ``^`` patterns) whose batches go to
    the agent iterating :attr:`channel`.

    Subclasses give the consumer's configuration and what an assignment means
    (``_on_assign``, ``_on_revoke``); ``restore``, ``drop`` and ``on_lost`` are theirs to
    call with partition numbers. ``on_lost`` must not return unless the worker stops."""

    def __init__(
        self,
        app: faust.App,
        config: StreamsConfig,
        subscription: list[str],
        *,
        role: str,
        on_demand: bool = False,
        restore: Callable[[list[int]], object] = lambda _p: None,
        drop: Callable[[list[int]], object] = lambda _p: None,
        on_lost: Callable[[list[int]], object] = lambda _p: None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.subscription = subscription
        self.role = role  # "collect", "verification", ...: in logs and the thread's name
        # One batch waits at most while the agent decides another: what arrives meanwhile
        # waits in the client's queue and comes as one batch, not as a queue of small
        # batches each paying a commit (memory stays bounded, the broker keeps the rest).
        self._keeping = KeepingChannel(app=app, maxsize=1)
        self.channel: faust.ChannelT[Any] = self._keeping
        self._restore, self._drop, self._lost = restore, drop, on_lost
        self._consumer: Consumer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.assigned: set[int] = set()
        self._metadata: object | None = None
        # On demand: read only when the agent asks (ready()), so that a batch holds
        # everything that arrived until the agent could take it, not what arrived before
        # the batch ahead of it was taken (latency first: the exchange). Otherwise one batch
        # is read ahead while the agent decides (throughput first: the ingest).
        self._demand: threading.Event | None = threading.Event() if on_demand else None
        if self._demand is not None:
            self._demand.set()
        self._acknowledged: collections.deque[Offsets] = collections.deque()
        # A batch read and on its way into the channel: set by the reader thread before the
        # hand-over is scheduled, cleared on the event loop the moment the batch is in.
        self._handing_over = False

    def consumer_config(self) -> dict[str, Any]:
        raise NotImplementedError

    def group_metadata(self) -> object:
        """The group metadata to commit offsets with, as the reader thread last saw it: a
        call into the consumer from another thread blocks while ``consume`` runs."""
        assert self._metadata is not None, "no metadata before the first assignment"
        return self._metadata

    def acknowledge(self, offsets: Offsets) -> None:
        """Commit ``offsets`` outside any transaction: for an agent that acknowledges at
        least once (the benchmark's baseline). The reader thread commits them before it
        reads again: a call into the consumer from the agent's thread waits for ``poll``."""
        self._acknowledged.append(offsets)

    def _commit_acknowledged(self, consumer: Consumer) -> None:
        merged: Offsets = {}
        while self._acknowledged:
            merged.update(self._acknowledged.popleft())
        if not merged:
            return  # commit() without offsets would commit the consumer's positions
        tps = [TopicPartition(t, p, o) for (t, p), o in merged.items()]
        consumer.commit(offsets=tps, asynchronous=True)

    def ready(self) -> None:
        """The agent is done with its batch: an on-demand reader reads the next one now."""
        if self._demand is not None:
            self._demand.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def idle(self) -> bool:
        """No batch is waiting: none in the channel, none read and being handed over.

        The agent asks after it took a batch and decided it, without yielding to the event
        loop meanwhile: the next batch, read in the meantime, is then still on its way in,
        and the channel alone looked empty. Under full load the ingest committed after
        every other batch instead of once per commit interval. Cleared on the event loop
        when the batch is in the channel, never later: "not idle" always means a batch
        the agent will be handed."""
        return not self._handing_over and not self._keeping.waiting()

    async def on_start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._consumer = Consumer(self.consumer_config())
        self._consumer.subscribe(
            self.subscription,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        self._thread = threading.Thread(target=self._run, name=f"{self.role}-reader", daemon=True)
        self._thread.start()

    # -- rebalance callbacks, on the reader thread inside consume() -----------------------
    def _on_assign(self, c: Consumer, partitions: list[TopicPartition]) -> None:
        raise NotImplementedError

    def _on_revoke(self, c: Consumer, partitions: list[TopicPartition]) -> None:
        raise NotImplementedError

    def _on_lost(self, _c: Consumer, partitions: list[TopicPartition]) -> None:
        self._lost(sorted({tp.partition for tp in partitions}))

    def _committed_before_revoke(self, c: Consumer, parts: list[int]) -> bool:
        """Put a barrier behind every batch handed over and wait until the agent has
        committed them; False if it could not (it is gone, or stuck): nothing of ``parts``
        may commit then."""
        self._metadata = c.consumer_group_metadata()  # the generation that still owns them
        if self._stopping.is_set():
            # The worker stops its agents before its readers: no agent is left to take a
            # barrier (waiting for one held every stop for a minute, past any grace
            # period). What they did not commit is aborted, and read again by the next owner.
            log.info("%s reader: stopping, uncommitted batches of %s are left", self.role, parts)
            return False
        barrier = Barrier()
        loop = self._loop
        assert loop is not None
        if self._put(barrier, loop) and barrier.wait(BARRIER_TIMEOUT_S):
            return True
        log.warning("%s reader: revoke of %s: in-flight batches not committed", self.role, parts)
        return False

    # -- the read loop --------------------------------------------------------------------
    def _run(self) -> None:
        consumer, loop = self._consumer, self._loop
        assert consumer is not None and loop is not None
        try:
            demand = self._demand
            while not self._stopping.is_set():
                # Waiting for demand stays short: the agent asks after every batch, and a
                # consumer not polled for max.poll.interval.ms would leave the group.
                if demand is not None and not demand.wait(0.1):
                    continue
                self._commit_acknowledged(consumer)
                try:
                    msgs = read_available(consumer, self.config.batch_size, 0.1)
                except KafkaException as exc:  # broker away: librdkafka reconnects
                    log.warning("%s reader: %s", self.role, exc)
                    continue
                if self.assigned:
                    self._metadata = consumer.consumer_group_metadata()
                batch = [m for m in msgs if m.error() is None]
                if len(batch) != len(msgs):  # rare: say what they were
                    for m in msgs:
                        self._is_error(m)
                if batch and demand is not None:
                    demand.clear()  # until the agent is done with this one
                if batch and not self._hand_over(batch, loop):
                    # Never read past a batch the agent did not take: a later commit would
                    # skip it. Stopping: nothing more is read. Otherwise: fatal.
                    if self._stopping.is_set():
                        break
                    raise RuntimeError(f"the {self.role} agent did not take a batch")
        except Exception as exc:  # our own failure (a restore that cannot finish, a bug)
            log.critical("%s reader failed: %s", self.role, exc, exc_info=True)
            self._lost(sorted(self.assigned))  # aborts, and ends the worker unless stopping
        finally:
            consumer.close()  # revokes: the barrier commits what the agent holds

    def _is_error(self, m: Message) -> bool:
        err = m.error()
        if err is None:
            return False
        if err.code() != KafkaError._PARTITION_EOF:
            log.warning("%s reader: %s", self.role, err)
        return True

    def _hand_over(self, batch: list[Message], loop: asyncio.AbstractEventLoop) -> bool:
        self._handing_over = True
        try:
            return self._put(batch, loop)
        finally:
            self._handing_over = False

    def _put(self, item: object, loop: asyncio.AbstractEventLoop) -> bool:
        """Hand ``item`` to the agent; True once it is in the channel. The reader goes on
        the moment it is in, not when the event loop next turns to complete the hand-over's
        future: the agent decides a batch without yielding, and the next one would only be
        read after it (the agent then found nothing waiting, and committed)."""
        if loop.is_closed():
            return False
        put = threading.Event()
        fut = asyncio.run_coroutine_threadsafe(self._deliver(item, put), loop)
        deadline = time.monotonic() + BARRIER_TIMEOUT_S
        while True:  # the channel is full while the agent is busy: wait, but stay stoppable
            if put.wait(0.5):
                return True
            if fut.cancelled():
                # Cancelled before it was put (a stop, or the app's own flow control): hand
                # it over again unless stopping; it was not taken, nothing read past it.
                if self._stopping.is_set() or loop.is_closed():
                    return False
                fut = asyncio.run_coroutine_threadsafe(self._deliver(item, put), loop)
                continue
            if fut.done():
                fut.result()  # what the hand-over raised
                return put.is_set()
            # A batch gives way to a stop; a barrier waits for the agent, boundedly.
            if isinstance(item, Barrier):
                giving_up = time.monotonic() > deadline
            else:
                giving_up = self._stopping.is_set()
            if giving_up or loop.is_closed():
                fut.cancel()
                return put.is_set()  # it may have gone in meanwhile

    async def _deliver(self, item: object, put: threading.Event | None = None) -> None:
        # A channel drops what is put while nobody subscribes: wait for the agent.
        while self.channel.subscriber_count == 0:
            await asyncio.sleep(0.01)
        await self.channel.put(item)  # type: ignore[arg-type]
        # No await from here on: a batch in the channel is never also cancelled.
        if not isinstance(item, Barrier):
            self._handing_over = False
        if put is not None:
            put.set()

    async def on_stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 90)
