"""The materializer in a Faust worker: a service whose task applies batch after batch.

Every librdkafka and Redis call of the materializer blocks, so each runs on the service's
own single thread (one thread uses the consumer), never on the event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from typing import Any

import faust
import mode

from streams.kafka.config import StreamsConfig
from streams.views.materializer import Materializer

__all__ = ["MaterializerService", "register_materializer"]

log = logging.getLogger(__name__)


class MaterializerService(mode.Service):
    """Starts the materializer, runs it while the worker runs, stops it on shutdown."""

    def __init__(self, materializer: Materializer, *, poll_s: float = 0.5, **kw: Any) -> None:
        super().__init__(**kw)
        self.materializer = materializer
        self.poll_s = poll_s
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pool-view")

    async def call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def on_start(self) -> None:
        await self.call(self.materializer.start)

    async def on_stop(self) -> None:
        await self.call(self.materializer.stop)
        self._pool.shutdown(wait=False)

    @mode.Service.task
    async def _apply(self) -> None:
        while not self.should_stop:
            try:
                await self.call(self.materializer.run_once, self.poll_s)
            except Exception:  # Redis away for a moment: retry, the offsets are in Redis
                log.exception("pool view: batch failed; retrying")
                await self.sleep(1.0)

    async def report(self) -> None:
        try:
            await self.call(self.materializer.report)
        except Exception as exc:  # metrics are best effort
            log.warning("pool view lag report failed: %s", exc)


def register_materializer(
    app: faust.App, config: StreamsConfig, materializer: Materializer, *, interval: float = 5.0
) -> MaterializerService:
    """Run ``materializer`` in ``app``'s worker and report its lag every ``interval`` s."""
    service = MaterializerService(materializer, poll_s=min(1.0, config.batch_size / 2000))
    app.add_dependency(service)

    @app.timer(interval=interval)  # type: ignore[untyped-decorator]
    async def report_view_lag() -> None:
        await service.report()

    return service
