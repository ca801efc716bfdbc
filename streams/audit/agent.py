"""The access log's checkpointer and data tracker in a Faust worker.

Every librdkafka and Redis call blocks, so the checkpointer runs on the service's own
single thread, never on the event loop. A log that no longer matches its last checkpoint is
reported and left unsigned; the worker goes on serving.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable
from typing import Any

import faust
import mode
import redis

from streams.audit.log import AuditError, Checkpointer, EntrySink
from streams.audit.signing import load_or_create_key
from streams.audit.tracker import Tracker
from streams.kafka.config import StreamsConfig

__all__ = ["AuditService", "register_audit"]

log = logging.getLogger(__name__)


class AuditService(mode.Service):
    """Starts the checkpointer, runs it while the worker runs, stops it on shutdown."""

    def __init__(self, make: Callable[[], Checkpointer], *, poll_s: float, **kw: Any) -> None:
        super().__init__(**kw)
        self._make = make
        self.poll_s = poll_s
        self.checkpointer: Checkpointer | None = None
        self.failed: str | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="audit")

    async def call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def on_stop(self) -> None:
        if self.checkpointer is not None:
            await self.call(self.checkpointer.stop)
        self._pool.shutdown(wait=False)

    @mode.Service.task
    async def _follow(self) -> None:
        while not self.should_stop and self.checkpointer is None:
            try:
                self.checkpointer = await self.call(lambda: self._make().start())
            except AuditError as exc:  # tampering: never sign it; say so and stop
                self.failed = str(exc)
                log.error("access log: %s", exc)
                return
            except Exception:  # Kafka away for a moment: try again
                log.exception("access log: checkpointer could not start; retrying")
                await self.sleep(2.0)
        while not self.should_stop and self.checkpointer is not None:
            try:
                await self.call(self.checkpointer.run_once, self.poll_s)
            except AuditError as exc:
                self.failed = str(exc)
                log.error("access log: %s", exc)
                return
            except Exception:  # Redis or Kafka away for a moment
                log.exception("access log: step failed; retrying")
                await self.sleep(1.0)


def register_audit(
    app: faust.App,
    config: StreamsConfig,
    *,
    tracker: bool = True,
    redis_client: redis.Redis | None = None,
) -> AuditService:
    """Run the access log's checkpointer (and the data tracker's follower) in ``app``'s
    worker. The signing key is ``config.audit_key_file`` (made on first use)."""
    key_file = config.audit_key_file
    if key_file is None:
        raise ValueError("no audit_key_file in the configuration: the checkpoints need a key")

    def make() -> Checkpointer:
        key = load_or_create_key(key_file)
        sinks: list[EntrySink] = []
        if tracker:
            sinks.append(Tracker(config, redis_client))
        return Checkpointer(config, key, sinks=sinks)

    poll_s = min(0.5, config.audit_checkpoint_interval_ms / 2000)
    service = AuditService(make, poll_s=poll_s)
    app.add_dependency(service)
    return service
