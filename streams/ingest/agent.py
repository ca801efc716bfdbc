"""Ingest agent (采集汇聚): collect topic → pool, superseded, verification or rejected topic,
exactly once.

Each item of its stream is a batch read by :class:`~streams.ingest.reader.CollectReader`
(or a :class:`~streams.ingest.reader.Barrier` from a rebalance). A batch is decided, its
outputs go into the open transaction with the batch's offsets, and the transaction commits
when no batch waits or it is ``commit_interval_ms`` old. The commit runs on a thread while
the next batch is decided: the broker's acknowledgement no longer stalls the decisions.

librdkafka takes no output while a commit runs. A batch decided then waits with its
outcomes, and while another batch waits in the channel that one is decided too, up to
:data:`DECIDED_AHEAD` batches: a slow commit (a busy broker) leaves the decisions running
instead of stopping them. When no batch waits, the agent takes the commit's end and
produces at once: nothing decided waits for input that may not come.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import faust

from streams.ingest.decision import Outcome
from streams.ingest.runtime import die
from streams.kafka.batch_reader import Barrier, Offsets, crash_only, report_once, unpack

__all__ = ["DECIDED_AHEAD", "BatchSource", "Transactional", "register_ingest"]

#: batches decided while a commit runs, at most, before the agent waits for it
DECIDED_AHEAD = 8


class BatchSource(Protocol):
    channel: faust.ChannelT[Any]

    def group_metadata(self) -> object: ...
    def idle(self) -> bool: ...


class Transactional(Protocol):
    """What the agent needs of :class:`~streams.ingest.runtime.Runtime`."""

    metrics: Any

    def decide(self, messages: Any) -> list[Outcome]: ...
    def produce(self, outcomes: Sequence[Outcome], offsets: Offsets) -> None: ...
    def commit_due(self, idle: bool) -> bool: ...
    def commit(self, group_metadata: Callable[[], object], timeout: float = ...) -> int: ...


def register_ingest(
    app: faust.App,
    runtime: Transactional,
    source: BatchSource,
    on_fatal: Callable[[BaseException], None] = die,
) -> None:
    on_fatal = report_once(on_fatal)  # a failed commit: its callback, then its await
    metrics = runtime.metrics

    @app.agent(source.channel, name="ingest")
    @crash_only(on_fatal)
    async def ingest(items: faust.StreamT[Any]) -> None:
        loop = asyncio.get_running_loop()
        commit: asyncio.Future[int] | None = None
        read_at: list[float] = []  # when each batch of the open transaction was taken
        # decided while a commit ran, not produced yet: outcomes, offsets, when taken
        decided: list[tuple[list[Outcome], Offsets, float]] = []

        def start_commit() -> asyncio.Future[int]:
            fut = loop.run_in_executor(None, runtime.commit, source.group_metadata)

            def failed(f: asyncio.Future[int]) -> None:
                # At once, not at the next batch: none may come for a long time.
                if not f.cancelled() and f.exception() is not None:
                    on_fatal(f.exception())  # type: ignore[arg-type]

            fut.add_done_callback(failed)
            return fut

        async def finish() -> None:
            nonlocal commit
            if commit is not None:
                await commit  # a failure was reported by its callback
                done = time.monotonic()
                for t in read_at:
                    metrics.latency.observe(done - t)
                read_at.clear()
                commit = None

        def produce_decided() -> None:
            for outcomes, offsets, taken in decided:
                runtime.produce(outcomes, offsets)
                read_at.append(taken)
            decided.clear()

        def decide_ahead() -> bool:
            """Whether to leave what was decided for now and decide the next batch."""
            return (
                commit is not None
                and not commit.done()
                and len(decided) < DECIDED_AHEAD
                and not source.idle()  # a batch waits: the loop comes back at once
            )

        async for item in items:
            if isinstance(item, Barrier):
                await finish()
                produce_decided()
                commit = start_commit()
                try:
                    await finish()
                except BaseException:
                    item.release(False)
                    raise
                item.release(True)
                continue
            taken = time.monotonic()
            with metrics.batch_seconds.time():
                records, offsets = unpack(item)
                # Not held while the next batch is decided: the messages once unpacked, the
                # records once decided (the outcomes stay in `decided` until produced).
                del item
                try:
                    outcomes = runtime.decide(records)
                except Exception as exc:  # too many INTERNAL in a row
                    on_fatal(exc)
                    return
                del records
                decided.append((outcomes, offsets, taken))
                del outcomes
                if decide_ahead():
                    continue
                await finish()  # the previous commit ran while these batches were decided
                produce_decided()
                if runtime.commit_due(source.idle()):
                    commit = start_commit()
        await finish()
