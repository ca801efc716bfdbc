"""The one configuration of every Kafka client, and of the stream library as a whole.

:class:`KafkaConfig` builds the producer, consumer and admin configurations: bootstrap,
client id and the security properties (``security.protocol``, ``sasl.*``, ``ssl.*``) reach
every client from here, so a broker with TLS or SASL needs no change anywhere else.
:class:`StreamsConfig` is the small frozen object the library takes; the application
builds it from its settings (the library never reads the environment).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from confluent_kafka import Consumer, Producer

__all__ = [
    "AGENTS",
    "SECURITY_PROPERTIES",
    "KafkaConfig",
    "StreamsConfig",
    "idempotent_producer",
]

#: librdkafka properties that carry transport security; anything else is refused
SECURITY_PROPERTIES = frozenset(
    {
        "security.protocol",
        "sasl.mechanism",
        "sasl.username",
        "sasl.password",
        "ssl.ca.location",
        "ssl.certificate.location",
        "ssl.key.location",
        "ssl.key.password",
        "ssl.endpoint.identification.algorithm",
    }
)

#: the agents a worker can run besides the ingest
AGENTS = frozenset({"views", "audit", "quality", "exchange", "verify"})

#: a rejected record carries up to 1 MiB of original bytes plus its reason
MAX_MESSAGE_BYTES = 4_194_304


def _frozen(mapping: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True, slots=True)
class KafkaConfig:
    """Bootstrap servers, client id and security properties shared by every client."""

    bootstrap: str = "127.0.0.1:9092"
    client_id: str = "xiangyun"
    security: Mapping[str, str] = field(default_factory=lambda: _frozen({}))

    def __post_init__(self) -> None:
        unknown = set(self.security) - SECURITY_PROPERTIES
        if unknown:
            raise ValueError(
                f"not a Kafka security property: {sorted(unknown)}; "
                f"known: {sorted(SECURITY_PROPERTIES)}"
            )
        object.__setattr__(self, "security", _frozen(self.security))

    def common(self) -> dict[str, Any]:
        return {"bootstrap.servers": self.bootstrap, "client.id": self.client_id, **self.security}

    def producer(self, **overrides: Any) -> dict[str, Any]:
        """acks=all and idempotence: the client's own retries never duplicate or reorder."""
        conf: dict[str, Any] = {
            **self.common(),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "batch.num.messages": 10000,
            "compression.type": "lz4",
            "message.max.bytes": MAX_MESSAGE_BYTES,
            "queue.buffering.max.messages": 500_000,
            # Kafka's own partitioner (the Java client's): one key, one partition number
            # in every collect topic (streams.kafka.partitioner checks it).
            "partitioner": "murmur2_random",
        }
        conf.update(overrides)
        return conf

    def transactional_producer(self, transactional_id: str, **overrides: Any) -> dict[str, Any]:
        """:meth:`producer` with a transactional id: a new instance fences the old one.

        A transaction begun right after the last one committed is refused with
        CONCURRENT_TRANSACTIONS until the broker has written the markers, and retried after
        ``retry.backoff.ms``: librdkafka's 100 ms default made every back-to-back commit
        take over 100 ms (the Java client backs off 20 ms there, KAFKA-5477); at 10 ms a
        transactional round trip still took 14 ms at the median against 6 ms for a plain
        one. The markers are written within a millisecond or two: retry after 1 ms,
        doubling up to 5 ms."""
        return self.producer(
            **{
                "transactional.id": transactional_id,
                "retry.backoff.ms": 1,
                "retry.backoff.max.ms": 5,
                **overrides,
            }
        )

    def consumer(self, group: str, **overrides: Any) -> dict[str, Any]:
        """A consumer that does not stall: librdkafka's default 1 s fetch-queue backoff
        leaves a fast reader idle most of each second once its prefetch queue is empty."""
        conf: dict[str, Any] = {
            **self.common(),
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.queue.backoff.ms": 10,
        }
        conf.update(overrides)
        return conf

    def admin(self, **overrides: Any) -> dict[str, Any]:
        return {**self.common(), **overrides}


@dataclass(frozen=True, slots=True)
class StreamsConfig:
    """What the stream library needs to run: built by the application from its settings."""

    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    topic_prefix: str = "xy"
    partitions: int = 4
    app_id: str = "xiangyun"
    batch_size: int = 2000
    # Where the shipped files are: the application passes them (Settings.streams); the
    # defaults are a checkout's folders, relative to the working directory.
    schema_dir: Path = Path("schemas/avro")
    catalog_dir: Path = Path("catalog")
    units_dir: Path = Path("units")
    redis_url: str = "redis://127.0.0.1:6379/0"
    log_level: str = "WARNING"
    metrics_port: int = 9108
    #: the agents a worker runs besides the ingest (a deployment may split them over
    #: processes: each keeps its own consumer group and transactions)
    agents: frozenset[str] = field(default_factory=lambda: AGENTS)
    metrics_host: str = "127.0.0.1"
    #: how far ahead of the platform's clock an observed-at time may be
    max_clock_skew_ms: int = 300_000
    #: the longest an ingest transaction stays open while batches keep coming (when none
    #: waits, it commits at once)
    commit_interval_ms: int = 300
    #: a killed worker's open transaction is aborted by the broker after this
    transaction_timeout_ms: int = 10_000
    #: consecutive INTERNAL outcomes after which the worker stops
    max_internal_errors: int = 100
    #: the access log's checkpointer signs a new tree head this often (if the log grew)
    audit_checkpoint_interval_ms: int = 2000
    #: the Ed25519 key that signs the access log's checkpoints (PKCS#8 PEM, mode 0600);
    #: None: no key configured, the checkpointer cannot run
    audit_key_file: Path | None = None

    #: the starter sharing lists (`xiangyun policy bootstrap`)
    policy_dir: Path = Path("policy")
    #: a request for more subjects than this is a bulk copy and needs an approval
    policy_bulk_threshold: int = 100
    #: the platform key of keyed-hash masks (HMAC-SHA256); empty: keyed hashes are refused
    policy_mask_key: str = field(default="", repr=False)

    #: the quality agent writes its snapshot topic (and sets its gauges) this often
    quality_snapshot_interval_ms: int = 5000
    #: how often the exchange looks for new request topics (new departments), ms
    exchange_metadata_refresh_ms: int = 5000
    #: the process's local state (the verifier keeps its per-partition RocksDB below it)
    state_dir: Path = field(default_factory=lambda: Path.cwd() / ".stack")
    #: evidence waiting for an authoritative value, per partition; the oldest is dropped
    verify_pending_max: int = 20_000

    def __post_init__(self) -> None:
        if not 100 <= self.audit_checkpoint_interval_ms <= 3_600_000:
            raise ValueError(
                f"audit_checkpoint_interval_ms={self.audit_checkpoint_interval_ms}: 100 to 3600000"
            )
        if not 100 <= self.quality_snapshot_interval_ms <= 3_600_000:
            raise ValueError(
                f"quality_snapshot_interval_ms={self.quality_snapshot_interval_ms}: 100 to 3600000"
            )
        if not 1 <= self.verify_pending_max <= 10_000_000:
            raise ValueError(f"verify_pending_max={self.verify_pending_max}: 1 to 10000000")

    @property
    def ingest_group(self) -> str:
        """Consumer group of the ingest on the collect topic (Faust's own group is app_id)."""
        return f"{self.app_id}.ingest"

    @property
    def exchange_group(self) -> str:
        """Consumer group of the exchange on the request topics and the pool topics."""
        return f"{self.app_id}.exchange"

    @property
    def verify_group(self) -> str:
        """Consumer group of the verifier on the verification and pool topics."""
        return f"{self.app_id}.verify"


def idempotent_producer(kafka: KafkaConfig, **overrides: Any) -> Producer:
    """A :class:`Producer` from :meth:`KafkaConfig.producer` (librdkafka property
    overrides passed as ``**{"linger.ms": 10}``)."""
    return Producer(kafka.producer(**overrides))


def consumer(kafka: KafkaConfig, group: str, **overrides: Any) -> Consumer:
    return Consumer(kafka.consumer(group, **overrides))
