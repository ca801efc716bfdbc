"""The verifier agent (多源校核): verification and pool topics → verified counts, conflicts
and the pending change log, exactly once.

Each item of its stream is a batch read by
:class:`~streams.verification.reader.VerificationReader` (or a
:class:`~streams.verification.reader.Barrier` from a rebalance). A batch is decided, its
outputs go into the open transaction with the batch's offsets, and the transaction commits
when no batch waits or it is ``commit_interval_ms`` old, on a thread while the next batch is
decided.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

import faust
from confluent_kafka import Message

from monitoring.metrics import VerificationMetrics
from streams.kafka.batch_reader import Barrier, crash_only, next_offsets, report_once
from streams.kafka.config import StreamsConfig
from streams.verification.conflicts import ConflictTracker
from streams.verification.reader import VerificationReader
from streams.verification.runtime import VerifyRuntime, die
from streams.wire.codec import SchemaRegistry

__all__ = ["register_verifier"]

log = logging.getLogger(__name__)


def register_verifier(
    app: faust.App,
    config: StreamsConfig,
    *,
    metrics: VerificationMetrics | None = None,
    registry: SchemaRegistry | None = None,
    runtime: VerifyRuntime | None = None,
    on_fatal: Callable[[BaseException], None] = die,
    report_interval: float = 5.0,
) -> VerifyRuntime:
    """Run the verifier in ``app``'s worker: its reader, its agent and the tracker of open
    conflicts (metrics). Started with the worker; ``runtime.close()`` when it stops."""
    on_fatal = report_once(on_fatal)  # a failed commit: its callback, then its await
    runtime = runtime or VerifyRuntime(config, metrics, registry=registry)
    runtime.start()
    stopping = False

    def lost(partitions: list[int]) -> None:
        try:
            runtime.abort()
        finally:
            if not (stopping or reader.stopping):
                on_fatal(RuntimeError(f"verifier lost partitions {partitions}"))

    reader = VerificationReader(
        app,
        config,
        runtime.inputs,
        restore=runtime.restore,
        drop=runtime.drop,
        on_lost=lost,
    )
    app.add_dependency(reader)
    tracker = ConflictTracker(config)
    runtime.on_close.append(tracker.close)

    @app.agent(reader.channel, name="verify")
    @crash_only(on_fatal)
    async def verify(items: faust.StreamT[Any]) -> None:
        nonlocal stopping
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

        try:
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
                    continue
                messages: Sequence[Message] = item
                try:
                    outputs = runtime.decide(messages)
                except Exception as exc:  # our bug: crash-only, the next owner redoes it
                    log.exception("verifier: batch failed")
                    on_fatal(exc)
                    return
                await finish()
                runtime.produce(outputs, next_offsets(messages))
                if runtime.commit_due(reader.idle()):
                    commit = start_commit()
            await finish()
        finally:
            stopping = True

    @app.timer(interval=report_interval)  # type: ignore[untyped-decorator]
    async def report_conflicts() -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(None, tracker.report, runtime.metrics)
        except Exception as exc:  # metrics are best effort
            log.warning("open conflicts report failed: %s", exc)

    return runtime
