"""The Faust application: built by a function from settings, never at import time."""

from __future__ import annotations

import logging

import faust

from streams.agents.ingest import register_ingest
from streams.collect import CollectReader
from streams.runtime import Runtime
from xiangyun.settings import Settings

__all__ = ["create_app", "run_worker"]

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> faust.App:
    return faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        key_serializer="raw",
        value_serializer="raw",
        store="memory://",
        topic_partitions=settings.partitions,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        # Faust resumes its channels only once its own group is assigned: a killed
        # worker must not hold that up for Faust's default 60 s.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=3.0,
    )


def run_worker(settings: Settings, runtime: Runtime | None = None) -> None:
    """Run the worker until SIGINT/SIGTERM: ingest agent, metrics endpoint, lag reports."""
    app = create_app(settings)
    runtime = runtime or Runtime(settings)
    runtime.start()
    runtime.metrics.serve(settings.metrics_port, settings.metrics_host)
    reader = CollectReader(app, settings, runtime.topics.collect)
    app.add_dependency(reader)
    register_ingest(app, runtime, reader)

    @app.timer(interval=5.0)  # type: ignore[untyped-decorator]
    async def report_lag() -> None:
        try:
            await app.loop.run_in_executor(None, runtime.report, settings.ingest_group)
        except Exception as exc:  # metrics are best effort; the flow goes on
            log.warning("lag report failed: %s", exc)

    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True)
    try:
        worker.execute_from_commandline()
    finally:
        runtime.close()
