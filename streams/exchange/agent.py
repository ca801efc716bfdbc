"""The exchange in a Faust worker: a reader of the request and pool topics, a service that
holds the lease, and the agent that decides batch after batch, exactly once.

As in the ingest (:mod:`streams.ingest.agent`): librdkafka reads whole batches on its own
thread (:class:`RequestReader`), the agent takes each batch from a Faust channel, decides it
on the exchange's worker thread (policy, Redis view: blocking calls stay off the event
loop), adds the outputs and the batch's offsets to the open transaction and commits it on a
thread while the next batch is decided. A revocation's barrier commits what is held before
partitions move; lost partitions abort and end the worker; a failed commit ends it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import faust
import mode
import redis
from confluent_kafka import Consumer, Message, TopicPartition

from monitoring.metrics import ExchangeMetrics
from streams.exchange.lease import Lease
from streams.exchange.runtime import ExchangeRuntime
from streams.ingest.reader import CollectReader
from streams.ingest.runtime import die
from streams.kafka.batch_reader import Barrier, crash_only, report_once, unpack
from streams.kafka.config import StreamsConfig

__all__ = ["ExchangeService", "RequestReader", "register_exchange"]

log = logging.getLogger(__name__)


class RequestReader(CollectReader):
    """Consumer group ``config.exchange_group`` on every request topic (a regex: a new
    department's topic is picked up within ``exchange_metadata_refresh_ms``) and every pool
    topic (changes for the subscriptions), read_committed."""

    def __init__(
        self,
        app: faust.App,
        config: StreamsConfig,
        subscription: list[str],
        *,
        restore: Callable[[list[tuple[str, int]]], object],
        drop: Callable[[list[tuple[str, int]]], object],
        on_lost: Callable[[list[int]], object],
        **kwargs: Any,
    ) -> None:
        self._revoking: list[tuple[str, int]] = []
        self._restore_tps, self._drop_tps = restore, drop
        super().__init__(
            app,
            config,
            subscription[0],
            drop=lambda _p: self._drop_tps(self._revoking),
            on_lost=on_lost,
            role="exchange",
            on_demand=True,  # an answer waits for no batch read ahead of it
            **kwargs,
        )
        self.subscription = subscription  # the request pattern and every pool topic

    def consumer_config(self) -> dict[str, Any]:
        return self.config.kafka.consumer(
            self.config.exchange_group,
            **{
                "enable.auto.commit": False,  # offsets commit inside the transactions
                "isolation.level": "read_committed",
                "partition.assignment.strategy": "cooperative-sticky",
                "session.timeout.ms": 10_000,
                "topic.metadata.refresh.interval.ms": self.config.exchange_metadata_refresh_ms,
                # A request is small: answer it as soon as it is there.
                "fetch.wait.max.ms": 10,
            },
        )

    def _on_assign(self, c: Consumer, partitions: list[TopicPartition]) -> None:
        self._metadata = c.consumer_group_metadata()
        if partitions:
            self._restore_tps([(tp.topic, tp.partition) for tp in partitions])
            self.assigned.update(tp.partition for tp in partitions)

    def _on_revoke(self, c: Consumer, partitions: list[TopicPartition]) -> None:
        self._revoking = [(tp.topic, tp.partition) for tp in partitions]
        super()._on_revoke(c, partitions)


class ExchangeService(mode.Service):
    """Waits for the lease, starts the runtime and the reader, keeps the lease renewed."""

    def __init__(
        self,
        runtime: ExchangeRuntime,
        reader: RequestReader,
        lease: Lease,
        *,
        on_fatal: Callable[[BaseException], None] = die,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self.runtime = runtime
        self.reader = reader
        self.lease = lease
        self.on_fatal = on_fatal
        self.active = False
        self.stopping = False

    async def call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    @mode.Service.task
    async def _lead(self) -> None:
        waiting_since = time.monotonic()
        while not self.should_stop:
            try:
                if await self.call(self.lease.acquire):
                    break
            except Exception as exc:  # Redis away for a moment
                log.warning("exchange: lease: %s", exc)
            if time.monotonic() - waiting_since > 60:
                log.info("exchange: on standby, %s holds the lease", self.lease.holder_now())
                waiting_since = time.monotonic()
            await self.sleep(1.0)
        if self.should_stop:
            return
        try:
            await self.call(self.runtime.start)
        except Exception as exc:
            self.on_fatal(exc)
            return
        self.active = True
        self.runtime.metrics.active.set(1)
        await self.add_runtime_dependency(self.reader)
        renewed = time.monotonic()
        ttl_s = self.lease.ttl_ms / 1000
        while not self.should_stop:
            await self.sleep(ttl_s / 4)
            try:
                if not await self.call(self.lease.renew):
                    self.on_fatal(RuntimeError("the exchange lease was taken by another worker"))
                    return
                renewed = time.monotonic()
            except Exception as exc:  # Redis away: keep trying while the lease lasts
                log.warning("exchange: lease renewal: %s", exc)
                if time.monotonic() - renewed > ttl_s * 0.75:
                    self.on_fatal(RuntimeError(f"the exchange lease could not be renewed: {exc}"))
                    return

    async def on_stop(self) -> None:
        self.stopping = True
        self.runtime.metrics.active.set(0)
        if self.active:
            await self.reader.stop()
            await self.call(self.runtime.close)
        try:
            await self.call(self.lease.release)
        except Exception as exc:  # it lapses by itself
            log.warning("exchange: lease release: %s", exc)


def register_exchange(
    app: faust.App,
    config: StreamsConfig,
    metrics: ExchangeMetrics | None = None,
    *,
    redis_client: redis.Redis | None = None,
    on_fatal: Callable[[BaseException], None] = die,
) -> ExchangeService:
    """Run the exchange in ``app``'s worker (when this worker holds the exchange lease):
    requests answered, subscriptions delivered, every decision in the access log."""
    on_fatal = report_once(on_fatal)  # a failed commit: its callback, then its await
    runtime = ExchangeRuntime(config, metrics)
    topics = runtime.topics
    client = redis_client or redis.Redis.from_url(config.redis_url)
    lease = Lease(client, f"xiangyun:{topics.prefix}:exchange:lease", config.transaction_timeout_ms)
    service: ExchangeService | None = None

    def lost(partitions: list[int]) -> None:
        try:
            runtime.abort()
        finally:
            if service is None or not service.stopping:
                on_fatal(RuntimeError(f"the exchange lost partitions {partitions}"))

    reader = RequestReader(
        app,
        config,
        [topics.request_pattern, *topics.pools.values()],
        restore=runtime.restore,
        drop=runtime.drop,
        on_lost=lost,
    )
    service = ExchangeService(runtime, reader, lease, on_fatal=on_fatal)
    app.add_dependency(service)
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="exchange")
    request_topic = f"{topics.prefix}.request."

    @app.agent(reader.channel, name="exchange")
    @crash_only(on_fatal)
    async def exchange(items: faust.StreamT[Any]) -> None:
        loop = asyncio.get_running_loop()
        commit: asyncio.Future[int] | None = None

        def start_commit() -> asyncio.Future[int]:
            fut = loop.run_in_executor(None, runtime.commit, reader.group_metadata)

            def failed(f: asyncio.Future[int]) -> None:
                if not f.cancelled() and f.exception() is not None:
                    on_fatal(f.exception())  # type: ignore[arg-type]

            fut.add_done_callback(failed)
            return fut

        async def finish() -> None:
            nonlocal commit
            if commit is not None:
                await commit
                commit = None

        async for item in items:
            if isinstance(item, Barrier):
                await finish()
                commit = start_commit()
                try:
                    await finish()
                except BaseException:
                    item.release(False)
                    raise
                item.release(True)
                reader.ready()
                continue
            messages: Sequence[Message] = item
            batch, offsets = unpack(messages)
            try:
                steps = await loop.run_in_executor(pool, runtime.decide, batch)
            except Exception as exc:  # a bug: nothing of this batch may commit
                on_fatal(exc)
                return
            await finish()  # the previous commit ran while this batch was decided
            sent_at = [
                m.timestamp()[1] / 1000
                for m in messages
                if (m.topic() or "").startswith(request_topic) and m.timestamp()[1] > 0
            ]
            runtime.produce(steps, offsets, sent_at)
            if runtime.commit_due():
                commit = start_commit()
            reader.ready()  # read what arrived meanwhile: it is decided while this commits
        await finish()

    return service
