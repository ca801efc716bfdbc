"""Topic names and their creation: one home for every topic the exchange uses.

Pool, schema, catalog, unit-register and policy snapshot topics are compacted: Kafka keeps
the latest value per key, so Redis views and agent state can always be rebuilt from Kafka.
The change logs of the catalog, the unit register and the sharing policy are append-only
and kept forever: they are the history.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from streams.core.pools import Pool
from streams.kafka.config import StreamsConfig

__all__ = [
    "CATALOG_MAX_MESSAGE_BYTES",
    "Topics",
    "ensure_conflict_topics",
    "ensure_department_topics",
    "ensure_topics",
]

#: a principal's unit code as it may stand in a topic name: '220000-GA', '220100-ZF'
_PRINCIPAL = re.compile(r"^\d{6}-[A-Z0-9]{1,16}$")
_COMPACT = {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"}
#: largest catalog record (one change, or one resource's bounded snapshot) the catalog writer
#: produces: within Kafka's default limits (a producer's message.max.bytes, 1,000,000 bytes;
#: a topic's max.message.bytes, 1 MiB), so the catalog topics need no special limit
CATALOG_MAX_MESSAGE_BYTES = 1_000_000
#: decisions of the exchange: the latest per request id, for 30 days (a retry after that is
#: a new request)
_DECISIONS = {
    "cleanup.policy": "compact,delete",
    "retention.ms": str(30 * 86_400_000),
    "min.compaction.lag.ms": "60000",
}
#: a unit code usable in a topic name (``220000-GA``)
_UNIT_TOPIC = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
#: the catalog change log: append-only, one partition, never deleted (it is the history)
_KEPT_FOREVER = {"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"}


@dataclass(frozen=True, slots=True)
class Topics:
    prefix: str

    @classmethod
    def of(cls, config: StreamsConfig) -> Topics:
        return cls(config.topic_prefix)

    def collect(self, principal: str) -> str:
        """Where a collecting principal (a provincial department, or a city platform that
        pre-aggregates for its units) publishes (采集); key ``resource_id|subject_id``. The
        topic is the publisher's identity: the ingest accepts from it only records of
        units under that principal."""
        if not _PRINCIPAL.match(principal):
            raise ValueError(f"not a principal's unit code: {principal!r:.60}")
        return f"{self.prefix}.collect.{principal}"

    @property
    def collect_pattern(self) -> str:
        """Every principal's collect topic, as a librdkafka subscription (a regex)."""
        return f"^{re.escape(self.prefix)}\\.collect\\.[^.]+$"

    def principal_of(self, topic: str) -> str | None:
        """The principal whose collect topic ``topic`` is; None for any other topic."""
        stem = f"{self.prefix}.collect."
        if not topic.startswith(stem):
            return None
        principal = topic[len(stem) :]
        return principal if _PRINCIPAL.match(principal) else None

    def is_collect(self, topic: str) -> bool:
        """Whether ``topic`` is a principal's collect topic."""
        return self.principal_of(topic) is not None

    def pool(self, pool: Pool) -> str:
        return f"{self.prefix}.pool.{pool.value}"

    @property
    def pools(self) -> dict[Pool, str]:
        return {p: self.pool(p) for p in Pool}

    @property
    def verification(self) -> str:
        """Evidence from non-authoritative sources (多源校核)."""
        return f"{self.prefix}.verification"

    @property
    def verified(self) -> str:
        """Compacted, partitioned like the pools: ``resource_id|subject_id`` → how often its
        authoritative version was confirmed, and by whom."""
        return f"{self.prefix}.verified"

    @property
    def verification_pending(self) -> str:
        """Compacted change log of the verifier's evidence waiting for an authoritative
        value, partitioned like the pools: ``resource_id|subject_id|record_id`` → the
        evidence's envelope bytes, a tombstone once compared or dropped."""
        return f"{self.prefix}.verification.pending"

    @property
    def conflicts_prefix(self) -> str:
        """Every providing unit's conflict topic starts with this."""
        return f"{self.prefix}.conflicts."

    def conflicts(self, unit: str) -> str:
        """Compacted by conflict id: conflicts raised with providing ``unit`` (it reads its
        own)."""
        return f"{self.conflicts_prefix}{unit}"

    @property
    def conflict_resolutions(self) -> str:
        """Compacted by conflict id, one partition: each conflict's resolution."""
        return f"{self.conflicts_prefix}resolutions"

    def is_conflicts(self, topic: str) -> bool:
        """A providing unit's conflict topic (not the resolutions topic)."""
        return topic.startswith(self.conflicts_prefix) and topic != self.conflict_resolutions

    @property
    def superseded(self) -> str:
        """Duplicates, stale versions and version conflicts: one small record each."""
        return f"{self.prefix}.superseded"

    @property
    def rejected(self) -> str:
        return f"{self.prefix}.rejected"

    @property
    def schemas(self) -> str:
        """Compacted: fingerprint → schema, read by every consumer."""
        return f"{self.prefix}.schemas"

    @property
    def catalog(self) -> str:
        """Compacted: resource id → its current catalog state (a bounded snapshot)."""
        return f"{self.prefix}.catalog"

    @property
    def catalog_changes(self) -> str:
        """Append-only, kept forever: one record per catalog change, keyed by resource id."""
        return f"{self.prefix}.catalog.changes"

    @property
    def access(self) -> str:
        """The access log (可追溯): append-only, one partition, kept forever; one entry per
        exchange decision, the leaves of its Merkle tree."""
        return f"{self.prefix}.access"

    @property
    def access_checkpoints(self) -> str:
        """Signed tree heads of the access log: append-only, one partition, kept forever."""
        return f"{self.prefix}.access.checkpoints"

    @property
    def policy(self) -> str:
        """Compacted: ``list/<region>/<kind>`` or ``approval/<id>`` → its current state."""
        return f"{self.prefix}.policy"

    @property
    def policy_changes(self) -> str:
        """Append-only, kept forever: one record per change of a sharing list or an
        approval (submitted, approved, rejected, granted, revoked, used)."""
        return f"{self.prefix}.policy.changes"

    @property
    def units(self) -> str:
        """Compacted: unit code → its current state in the unit register (a bounded snapshot)."""
        return f"{self.prefix}.units"

    @property
    def units_changes(self) -> str:
        """Append-only, kept forever: one record per change of the unit register, by code."""
        return f"{self.prefix}.units.changes"

    def request(self, department: str) -> str:
        """Where ``department`` writes its exchange requests: the requester is this topic
        (broker ACLs let only the department write it), never a field of the request."""
        return f"{self.prefix}.request.{department}"

    def reply(self, department: str) -> str:
        """Where the exchange answers ``department`` (and delivers its subscriptions)."""
        return f"{self.prefix}.reply.{department}"

    @property
    def request_pattern(self) -> str:
        """Every department's request topic, as a librdkafka subscription regex."""
        return "^" + self.prefix.replace(".", "\\.") + "\\.request\\..+"

    @property
    def exchange_decisions(self) -> str:
        """Compacted: ``requester|request_id`` → the answer given, written with it; its
        partition p holds the decisions of the requests of partition p of every request
        topic (a retry is answered from it, never decided twice). Kept 30 days."""
        return f"{self.prefix}.exchange.decisions"

    @property
    def exchange_subscriptions(self) -> str:
        """Compacted: subscription id → the subscription's current state."""
        return f"{self.prefix}.exchange.subscriptions"

    @property
    def consents(self) -> str:
        """Compacted: consent id → the consent's current state (article 18), published by
        source systems (:mod:`connectors.consent`), followed by every ingest worker."""
        return f"{self.prefix}.consents"

    @property
    def quality(self) -> str:
        """Compacted: ``resource|unit`` → the latest data-quality snapshot of that pair
        (article 22), written by the quality agent, read by `xiangyun quality`."""
        return f"{self.prefix}.quality"

    @property
    def outcomes(self) -> list[str]:
        """Every topic an ingested record can end in: the pools, superseded, verification,
        rejected."""
        return [*self.pools.values(), self.superseded, self.verification, self.rejected]

    def all(self) -> dict[str, dict[str, str]]:
        """Every topic with its configuration."""
        out: dict[str, dict[str, str]] = {
            self.verification: {},
            self.superseded: {},
        }
        # A rejected record keeps its original bytes, which may be near the 1 MiB limit.
        out[self.rejected] = {"max.message.bytes": "4194304"}
        for t in self.pools.values():
            out[t] = dict(_COMPACT)
        out[self.schemas] = dict(_COMPACT)
        # Catalog records are bounded (one change; one resource's snapshot): default limits.
        out[self.catalog] = dict(_COMPACT)
        out[self.catalog_changes] = dict(_KEPT_FOREVER)
        out[self.access] = dict(_KEPT_FOREVER)
        out[self.access_checkpoints] = dict(_KEPT_FOREVER)
        # The sharing lists and approvals are kept like the catalog.
        out[self.policy] = dict(_COMPACT)
        out[self.policy_changes] = dict(_KEPT_FOREVER)
        out[self.units] = dict(_COMPACT)
        out[self.units_changes] = dict(_KEPT_FOREVER)
        out[self.consents] = dict(_COMPACT)
        out[self.quality] = dict(_COMPACT)
        out[self.exchange_decisions] = dict(_DECISIONS)
        out[self.exchange_subscriptions] = dict(_COMPACT)
        # Multi-source verification: counts, waiting evidence and resolutions are kept per
        # key (conflict topics are made per providing unit: ensure_conflict_topics).
        out[self.verified] = dict(_COMPACT)
        out[self.verification_pending] = dict(_COMPACT)
        out[self.conflict_resolutions] = dict(_COMPACT)
        return out

    @property
    def single_partition(self) -> frozenset[str]:
        """Topics that must stay in one order: one partition each."""
        return frozenset(
            {
                self.schemas,
                self.catalog,
                self.catalog_changes,
                self.access,
                self.access_checkpoints,
                self.policy,
                self.policy_changes,
                self.units,
                self.units_changes,
                self.exchange_subscriptions,
                self.conflict_resolutions,
            }
        )


def ensure_conflict_topics(
    config: StreamsConfig, units: Iterable[str], timeout: float = 30.0
) -> list[str]:
    """Create the conflict topics of providing ``units`` that are missing (compacted, the
    configured partition count); their names. A unit code that cannot name a topic is
    refused."""
    topics = Topics.of(config)
    names = []
    for unit in units:
        if not _UNIT_TOPIC.match(unit) or unit == "resolutions":
            raise ValueError(f"unit code {unit!r:.40} cannot name a conflict topic")
        names.append(topics.conflicts(unit))
    _create(config, {n: dict(_COMPACT) for n in names}, frozenset(), timeout)
    return names


def ensure_topics(
    config: StreamsConfig,
    topics: Topics | None = None,
    timeout: float = 30.0,
    *,
    principals: Iterable[str] = (),
) -> None:
    """Create the missing topics, and a collect topic for each of ``principals``;
    existing ones are left as they are."""
    topics = topics or Topics.of(config)
    wanted = topics.all()
    for principal in principals:
        wanted[topics.collect(principal)] = {}
    _create(config, wanted, topics.single_partition, timeout)


def _create(
    config: StreamsConfig,
    wanted: dict[str, dict[str, str]],
    single_partition: frozenset[str],
    timeout: float,
) -> None:
    admin = AdminClient(config.kafka.admin())
    existing = set(admin.list_topics(timeout=timeout).topics)
    new = []
    for name, topic_config in wanted.items():
        if name in existing:
            continue
        # Schemas, catalog and access log are ordered: one partition.
        parts = 1 if name in single_partition else config.partitions
        new.append(NewTopic(name, num_partitions=parts, replication_factor=1, config=topic_config))
    if not new:
        return
    for name, fut in admin.create_topics(new, operation_timeout=timeout).items():
        try:
            fut.result(timeout)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise RuntimeError(f"could not create topic {name}: {exc}") from exc
    _wait_for_leaders(admin, [t.topic for t in new], timeout)


def ensure_department_topics(
    config: StreamsConfig, department: str, timeout: float = 30.0, *, request: bool = True
) -> None:
    """Create ``department``'s request and reply topics if they are missing (the data
    bureau does this when a department joins; ACLs then let only it write its request
    topic and read its reply topic). ``request`` False: the reply topic only."""
    topics = Topics.of(config)
    names = [topics.reply(department)] + ([topics.request(department)] if request else [])
    admin = AdminClient(config.kafka.admin())
    existing = set(admin.list_topics(timeout=timeout).topics)
    new = [
        NewTopic(n, num_partitions=config.partitions, replication_factor=1)
        for n in names
        if n not in existing
    ]
    if not new:
        return
    for name, fut in admin.create_topics(new, operation_timeout=timeout).items():
        try:
            fut.result(timeout)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise RuntimeError(f"could not create topic {name}: {exc}") from exc
    _wait_for_leaders(admin, [t.topic for t in new], timeout)


def _wait_for_leaders(admin: AdminClient, names: list[str], timeout: float) -> None:
    """A created topic takes a moment to get partition leaders; clients that ask for
    offsets before then get NOT_LEADER_FOR_PARTITION. Return once every partition has one."""
    deadline = time.monotonic() + timeout
    while True:
        meta = admin.list_topics(timeout=timeout).topics
        waiting = [
            n
            for n in names
            if n not in meta
            or not meta[n].partitions
            or any(p.leader < 0 for p in meta[n].partitions.values())
        ]
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"topics without a leader after {timeout}s: {waiting[:5]}")
        time.sleep(0.1)
