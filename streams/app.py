"""The Faust application: built by a function from config, never at import time."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable

import faust

from monitoring.metrics import ExchangeMetrics, QualityMetrics, VerificationMetrics, ViewMetrics
from streams.audit.agent import register_audit
from streams.exchange.agent import register_exchange
from streams.ingest.agent import register_ingest
from streams.ingest.reader import CollectReader
from streams.ingest.runtime import Runtime, die, settle_collector
from streams.kafka.catalog_store import CatalogStore
from streams.kafka.config import KafkaConfig, StreamsConfig
from streams.quality.agent import register_quality
from streams.verification import register_verifier
from streams.views import Materializer, register_materializer

__all__ = ["IngestAgent", "broker_credentials", "create_app", "run_worker"]

log = logging.getLogger(__name__)


def broker_credentials(kafka: KafkaConfig) -> faust.types.auth.CredentialsT | None:
    """The Faust (aiokafka) side of :class:`KafkaConfig`'s security properties."""
    sec = kafka.security
    protocol = sec.get("security.protocol", "PLAINTEXT").upper()
    if protocol == "PLAINTEXT":
        return None
    context = None
    if protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=sec.get("ssl.ca.location"))
        if "ssl.certificate.location" in sec:
            context.load_cert_chain(
                sec["ssl.certificate.location"],
                sec.get("ssl.key.location"),
                sec.get("ssl.key.password"),
            )
        if sec.get("ssl.endpoint.identification.algorithm", "https") == "none":
            context.check_hostname = False
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    return faust.SASLCredentials(
        username=sec.get("sasl.username"),
        password=sec.get("sasl.password"),
        mechanism=sec.get("sasl.mechanism", "PLAIN"),
        ssl_context=context,
    )


def _faust_datadir(config: StreamsConfig) -> str:
    path = str(config.state_dir / "faust" / config.app_id)
    return path.replace("{", "{{").replace("}", "}}")


def create_app(config: StreamsConfig) -> faust.App:
    return faust.App(
        config.app_id,
        broker=[f"kafka://{h}" for h in config.kafka.bootstrap.split(",")],
        broker_client_id=config.kafka.client_id,
        broker_credentials=broker_credentials(config.kafka),
        key_serializer="raw",
        value_serializer="raw",
        store="memory://",
        # Under the state directory, not `{app_id}-data` in whatever directory the worker
        # was started from; braces doubled: Faust formats the path with its settings.
        datadir=_faust_datadir(config),
        topic_partitions=config.partitions,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        # Faust resumes its channels only once its own group is assigned: a killed
        # worker must not hold that up for Faust's default 60 s.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=3.0,
    )


#: how the ingest agent is registered on the app, given its runtime and reader
IngestAgent = Callable[[faust.App, Runtime, CollectReader], None]


def run_worker(
    config: StreamsConfig, runtime: Runtime | None = None, ingest: IngestAgent = register_ingest
) -> None:
    """Run the worker until SIGINT/SIGTERM: ingest agent, metrics endpoint, lag reports.
    ``ingest`` registers the ingest agent (the benchmark's at-least-once baseline brings
    its own; everything else about the worker stays the same)."""
    app = create_app(config)
    app.conf.datadir.parent.mkdir(parents=True, exist_ok=True)  # Faust makes the last level
    runtime = runtime or Runtime(config)
    runtime.start()
    runtime.metrics.serve(config.metrics_port, config.metrics_host)
    stopping = False

    def lost(partitions: list[int]) -> None:
        # Whatever the agent decided for these partitions may not commit any more, and
        # the pool state may be ahead of Kafka: abort, and restart clean unless stopping.
        try:
            runtime.abort()
        finally:
            if not (stopping or reader.stopping):
                die(RuntimeError(f"lost partitions {partitions} of the collect topics"))

    reader = CollectReader(
        app,
        config,
        runtime.topics.collect_pattern,
        restore=runtime.restore,
        drop=runtime.drop,
        on_lost=lost,
    )
    app.add_dependency(reader)
    ingest(app, runtime, reader)
    agents = config.agents
    # The Redis views of the pools, read from the pool topics read_committed.
    if "views" in agents:
        register_materializer(
            app,
            config,
            Materializer(config, runtime.registry, ViewMetrics(runtime.metrics.registry)),
        )
    # The access log's signed checkpoints and its data-tracker index.
    if "audit" in agents:
        register_audit(app, config)
    # Data quality per resource and unit, from the outcome topics read_committed.
    if "quality" in agents:
        catalog = runtime.catalog
        register_quality(
            app,
            config,
            registry=runtime.registry,
            catalog=catalog,
            units=(lambda: [u.code for u in catalog.unit_register()])
            if isinstance(catalog, CatalogStore)
            else None,
            metrics=QualityMetrics(runtime.metrics.registry),
        )
    # The exchange: requests answered and subscriptions delivered, each with its entry in
    # the access log, in one transaction (one worker at a time holds the exchange's lease).
    if "exchange" in agents:
        register_exchange(app, config, ExchangeMetrics(runtime.metrics.registry))
    # Multi-source verification: evidence against the pools, exactly once.
    verifier = None
    if "verify" in agents:
        verifier = register_verifier(
            app,
            config,
            metrics=VerificationMetrics(runtime.metrics.registry),
            registry=runtime.registry,
        )

    @app.task  # type: ignore[untyped-decorator]
    async def freeze_startup_objects() -> None:
        settle_collector()  # start-up objects never die; batches in flight live for long

    @app.timer(interval=5.0)  # type: ignore[untyped-decorator]
    async def report_lag() -> None:
        try:
            await app.loop.run_in_executor(None, runtime.report, config.ingest_group)
        except Exception as exc:  # metrics are best effort; the flow goes on
            log.warning("lag report failed: %s", exc)

    worker = faust.Worker(app, loglevel=config.log_level, quiet=True)
    try:
        worker.execute_from_commandline()
    finally:
        stopping = True
        if verifier is not None:
            verifier.close()
        runtime.close()
