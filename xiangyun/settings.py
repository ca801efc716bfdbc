"""One frozen, validated settings object, read from ``XIANGYUN_*`` environment variables.

Every component takes a :class:`Settings`; nothing reads the environment elsewhere.
An ``XIANGYUN_`` variable that names no setting is refused, so a typo never passes silently.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xiangyun_data
from streams.kafka.config import AGENTS, KafkaConfig, StreamsConfig

__all__ = ["PREFIX", "ConfigError", "Settings"]

PREFIX = "XIANGYUN_"


def _default_state_dir() -> Path:
    """``.stack`` of the source checkout, or of the current folder when installed."""
    return (xiangyun_data.CHECKOUT or Path.cwd()) / ".stack"


class ConfigError(ValueError):
    """A setting is unknown or has a value it cannot take."""


_HOSTPORT = re.compile(r"^[\w.\-]+:\d{1,5}$")
_SECURITY_FIELDS = frozenset(
    {
        "kafka_security_protocol",
        "kafka_sasl_mechanism",
        "kafka_sasl_username",
        "kafka_sasl_password",
        "kafka_ssl_ca_location",
        "kafka_ssl_certificate_location",
        "kafka_ssl_key_location",
        "kafka_ssl_key_password",
        "kafka_ssl_endpoint_identification_algorithm",
    }
)
_SECRETS = frozenset({"kafka_sasl_password", "kafka_ssl_key_password", "policy_mask_key"})
_PROTOCOLS = frozenset({"", "PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"})
_MECHANISMS = frozenset({"", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", "OAUTHBEARER"})
_TOPIC_PREFIX = re.compile(r"^[A-Za-z0-9._\-]{1,100}$")


@dataclass(frozen=True, slots=True)
class Settings:
    """Configuration of every Xiangyun process (broker, workers, CLI, benchmarks)."""

    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_controller_port: int = 9093
    redis_url: str = "redis://127.0.0.1:6379/0"
    prometheus_port: int = 9090
    metrics_port: int = 9108
    metrics_host: str = "127.0.0.1"
    topic_prefix: str = "xy"
    partitions: int = 4
    app_id: str = "xiangyun"
    state_dir: Path = field(default_factory=_default_state_dir)
    schema_dir: Path = field(default_factory=xiangyun_data.schema_dir)
    catalog_dir: Path = field(default_factory=xiangyun_data.catalog_dir)
    units_dir: Path = field(default_factory=xiangyun_data.units_dir)
    kafka_heap: str = "1g"
    batch_size: int = 2000
    log_level: str = "WARNING"
    max_clock_skew_s: int = 300
    # 300, not 100: under load a transaction per 100 ms cost the worker 7-9 % (BENCHMARKS.md)
    commit_interval_ms: int = 300
    transaction_timeout_ms: int = 10_000
    max_internal_errors: int = 100
    #: the agents a worker runs besides the ingest: `all`, or some of views, audit,
    #: quality, exchange, verify (comma separated; `none` for the ingest alone)
    worker_agents: str = "all"
    # The access log: how often its tree head is signed, and the signing key (PKCS#8 PEM,
    # mode 0600; empty: <state dir>/audit/signing-key.pem, made on first use).
    audit_checkpoint_interval_ms: int = 2000
    audit_key_file: str = ""
    # The sharing policy: starter lists, bulk-copy threshold, key of keyed-hash masks.
    policy_dir: Path = field(default_factory=xiangyun_data.policy_dir)
    policy_bulk_threshold: int = 100
    policy_mask_key: str = ""
    # Data quality (article 22): how often the quality agent writes its snapshot topic.
    quality_snapshot_interval_ms: int = 5000
    # The exchange: how often it looks for new departments' request topics.
    exchange_metadata_refresh_ms: int = 5000
    # Multi-source verification: evidence waiting for an authoritative value, per partition
    # (past it the oldest is dropped and counted).
    verify_pending_max: int = 20_000
    # Transport security of every Kafka client, passed through to librdkafka (and Faust).
    kafka_security_protocol: str = ""
    kafka_sasl_mechanism: str = ""
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = ""
    kafka_ssl_ca_location: str = ""
    kafka_ssl_certificate_location: str = ""
    kafka_ssl_key_location: str = ""
    kafka_ssl_key_password: str = ""
    kafka_ssl_endpoint_identification_algorithm: str = ""

    def __post_init__(self) -> None:
        if not _HOSTPORT.match(self.kafka_bootstrap.split(",")[0]):
            raise ConfigError(
                f"XIANGYUN_KAFKA_BOOTSTRAP={self.kafka_bootstrap!r}: expected host:port"
            )
        if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(
                f"XIANGYUN_REDIS_URL={self.redis_url!r}: expected redis://host:port/db"
            )
        for name in ("kafka_controller_port", "prometheus_port", "metrics_port"):
            port = getattr(self, name)
            if not 0 < port < 65536:
                raise ConfigError(f"XIANGYUN_{name.upper()}={port}: not a TCP port")
        if not _TOPIC_PREFIX.match(self.topic_prefix):
            raise ConfigError(
                f"XIANGYUN_TOPIC_PREFIX={self.topic_prefix!r}: use letters, digits, '.', '_', '-'"
            )
        if not 1 <= self.partitions <= 256:
            raise ConfigError(f"XIANGYUN_PARTITIONS={self.partitions}: between 1 and 256")
        if not 1 <= self.batch_size <= 100_000:
            raise ConfigError(f"XIANGYUN_BATCH_SIZE={self.batch_size}: between 1 and 100000")
        if not 0 <= self.max_clock_skew_s <= 86_400:
            raise ConfigError(f"XIANGYUN_MAX_CLOCK_SKEW_S={self.max_clock_skew_s}: 0 to 86400")
        if not 1 <= self.commit_interval_ms <= 60_000:
            raise ConfigError(f"XIANGYUN_COMMIT_INTERVAL_MS={self.commit_interval_ms}: 1 to 60000")
        if not 1_000 <= self.transaction_timeout_ms <= 900_000:
            raise ConfigError(
                f"XIANGYUN_TRANSACTION_TIMEOUT_MS={self.transaction_timeout_ms}: 1000 to 900000"
            )
        if self.agent_set - AGENTS:
            raise ConfigError(
                f"XIANGYUN_WORKER_AGENTS={self.worker_agents!r}: all, none, or some of "
                f"{', '.join(sorted(AGENTS))}"
            )
        if self.max_internal_errors < 1:
            raise ConfigError(f"XIANGYUN_MAX_INTERNAL_ERRORS={self.max_internal_errors}: >= 1")
        if not 100 <= self.audit_checkpoint_interval_ms <= 3_600_000:
            raise ConfigError(
                f"XIANGYUN_AUDIT_CHECKPOINT_INTERVAL_MS={self.audit_checkpoint_interval_ms}: "
                "100 to 3600000"
            )
        if self.audit_key_file and self.audit_key_file.endswith(("/", "\\")):
            raise ConfigError(
                f"XIANGYUN_AUDIT_KEY_FILE={self.audit_key_file!r}: a file, not a folder"
            )
        if not 100 <= self.quality_snapshot_interval_ms <= 3_600_000:
            raise ConfigError(
                f"XIANGYUN_QUALITY_SNAPSHOT_INTERVAL_MS={self.quality_snapshot_interval_ms}: "
                "100 to 3600000"
            )
        if not 1 <= self.policy_bulk_threshold <= 10_000_000:
            raise ConfigError(
                f"XIANGYUN_POLICY_BULK_THRESHOLD={self.policy_bulk_threshold}: 1 to 10000000"
            )
        if self.policy_mask_key and len(self.policy_mask_key.encode()) < 16:
            raise ConfigError(
                "XIANGYUN_POLICY_MASK_KEY: at least 16 bytes (a random key, e.g. "
                "`python3 -c 'import secrets; print(secrets.token_hex(32))'`), or unset"
            )
        if not 100 <= self.exchange_metadata_refresh_ms <= 3_600_000:
            raise ConfigError(
                f"XIANGYUN_EXCHANGE_METADATA_REFRESH_MS={self.exchange_metadata_refresh_ms}: "
                "100 to 3600000"
            )
        if not 1 <= self.verify_pending_max <= 10_000_000:
            raise ConfigError(
                f"XIANGYUN_VERIFY_PENDING_MAX={self.verify_pending_max}: 1 to 10000000"
            )
        if self.kafka_security_protocol.upper() not in _PROTOCOLS:
            raise ConfigError(
                f"XIANGYUN_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol!r}: one of "
                f"{', '.join(sorted(p for p in _PROTOCOLS if p))}"
            )
        if self.kafka_sasl_mechanism.upper() not in _MECHANISMS:
            raise ConfigError(
                f"XIANGYUN_KAFKA_SASL_MECHANISM={self.kafka_sasl_mechanism!r}: one of "
                f"{', '.join(sorted(m for m in _MECHANISMS if m))}"
            )
        if self.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ConfigError(
                f"XIANGYUN_LOG_LEVEL={self.log_level!r}: DEBUG, INFO, WARNING or ERROR"
            )

    @property
    def agent_set(self) -> frozenset[str]:
        """The agents a worker runs besides the ingest."""
        raw = self.worker_agents.strip().lower()
        if raw == "all":
            return AGENTS
        if raw in ("", "none"):
            return frozenset()
        return frozenset(a.strip() for a in raw.split(",") if a.strip())

    @property
    def kafka(self) -> KafkaConfig:
        """Every Kafka client's configuration: bootstrap, client id, security."""
        security = {
            f.name.removeprefix("kafka_").replace("_", "."): getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name in _SECURITY_FIELDS and getattr(self, f.name)
        }
        return KafkaConfig(self.kafka_bootstrap, client_id=self.app_id, security=security)

    @property
    def streams(self) -> StreamsConfig:
        """The stream library's configuration (the library never reads settings itself)."""
        return StreamsConfig(
            kafka=self.kafka,
            topic_prefix=self.topic_prefix,
            partitions=self.partitions,
            app_id=self.app_id,
            batch_size=self.batch_size,
            schema_dir=self.schema_dir,
            catalog_dir=self.catalog_dir,
            units_dir=self.units_dir,
            redis_url=self.redis_url,
            log_level=self.log_level,
            metrics_port=self.metrics_port,
            metrics_host=self.metrics_host,
            max_clock_skew_ms=self.max_clock_skew_s * 1000,
            commit_interval_ms=self.commit_interval_ms,
            transaction_timeout_ms=self.transaction_timeout_ms,
            max_internal_errors=self.max_internal_errors,
            agents=self.agent_set,
            audit_checkpoint_interval_ms=self.audit_checkpoint_interval_ms,
            audit_key_file=self.audit_key_path,
            policy_dir=self.policy_dir,
            policy_bulk_threshold=self.policy_bulk_threshold,
            policy_mask_key=self.policy_mask_key,
            quality_snapshot_interval_ms=self.quality_snapshot_interval_ms,
            exchange_metadata_refresh_ms=self.exchange_metadata_refresh_ms,
            state_dir=self.state_dir,
            verify_pending_max=self.verify_pending_max,
        )

    @property
    def audit_key_path(self) -> Path:
        """The access log's signing key: XIANGYUN_AUDIT_KEY_FILE, else in the state folder."""
        if self.audit_key_file:
            return Path(self.audit_key_file).expanduser().resolve()
        return self.state_dir / "audit" / "signing-key.pem"

    @property
    def ingest_group(self) -> str:
        """Consumer group of the ingest on the collect topic (Faust's own group is app_id)."""
        return f"{self.app_id}.ingest"

    @property
    def kafka_port(self) -> int:
        return int(self.kafka_bootstrap.split(",")[0].rsplit(":", 1)[1])

    @property
    def redis_port(self) -> int:
        hostport = self.redis_url.split("://", 1)[1].split("/", 1)[0]
        return int(hostport.rsplit(":", 1)[1]) if ":" in hostport else 6379

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``XIANGYUN_*`` variables; unknown ones raise :class:`ConfigError`."""
        env = os.environ if environ is None else environ
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, raw in env.items():
            if not key.startswith(PREFIX):
                continue
            name = key[len(PREFIX) :].lower()
            if name not in fields:
                known = ", ".join(PREFIX + n.upper() for n in fields)
                raise ConfigError(f"unknown setting {key}; known settings: {known}")
            values[name] = _coerce(key, raw, fields[name])
        values.update(overrides)
        return cls(**values)

    def describe(self, *, reveal: bool = False) -> dict[str, str]:
        """Every setting with its environment variable name, for ``xiangyun config``."""
        return {
            PREFIX + f.name.upper(): "***"
            if f.name in _SECRETS and getattr(self, f.name) and not reveal
            else str(getattr(self, f.name))
            for f in dataclasses.fields(self)
        }


def _coerce(key: str, raw: str, f: dataclasses.Field[Any]) -> Any:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    try:
        if kind == "int":
            return int(raw)
        if kind == "Path":
            return Path(raw).expanduser().resolve()
    except ValueError as exc:
        raise ConfigError(f"{key}={raw!r}: {exc}") from exc
    return raw
