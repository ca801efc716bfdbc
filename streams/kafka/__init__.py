"""Kafka plumbing: the one client configuration, topics, compacted-topic followers, the
schema topic, consumer lag, and the Kafka-backed catalog and unit register stores.
"""

from __future__ import annotations

from streams.kafka.catalog_store import MAX_EVENT_BYTES, CatalogStore, CatalogUnavailable
from streams.kafka.config import (
    SECURITY_PROPERTIES,
    KafkaConfig,
    StreamsConfig,
    idempotent_producer,
)
from streams.kafka.follower import CompactedView, ViewError
from streams.kafka.lag import GroupLag, group_lag
from streams.kafka.schema_topic import SchemaTopic
from streams.kafka.topics import CATALOG_MAX_MESSAGE_BYTES, Topics, ensure_topics
from streams.kafka.units_store import UnitsStore, UnitsUnavailable

__all__ = [
    "CATALOG_MAX_MESSAGE_BYTES",
    "MAX_EVENT_BYTES",
    "SECURITY_PROPERTIES",
    "CatalogStore",
    "CatalogUnavailable",
    "CompactedView",
    "GroupLag",
    "KafkaConfig",
    "SchemaTopic",
    "StreamsConfig",
    "Topics",
    "UnitsStore",
    "UnitsUnavailable",
    "ViewError",
    "ensure_topics",
    "group_lag",
    "idempotent_producer",
]
