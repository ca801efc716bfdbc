"""The ingest decision (采集校验) for one collected record, free of Kafka and Faust.

Every record ends in exactly one :class:`Outcome`: accepted into its resource's pool as a
new version with its provenance, superseded (a duplicate, stale or conflicting version:
:mod:`streams.ingest.pool_state`), kept as verification evidence (a non-authoritative
source, article 20), or rejected with a reason code and its original bytes. No input makes
:meth:`Ingestor.process` raise; an error of the platform's own is ``INTERNAL``, counted in
:attr:`Ingestor.internal_errors_in_a_row`, never blamed on the data.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable
from enum import StrEnum
from pathlib import Path
from typing import NamedTuple

from streams.catalog.model import Catalog, Resource
from streams.catalog.spec import check_fields, check_subject, subject_of
from streams.core.channel import Channel
from streams.core.pools import Pool
from streams.core.reasons import Reason
from streams.core.regions import PROVINCE, city_of, is_region
from streams.ingest.pool_state import (
    SOURCE_HEADER,
    STATE_HEADER,
    PoolState,
    StateTable,
    Verdict,
    content_fingerprint,
    current_of,
    pack_source,
    pack_state,
)
from streams.kafka.partitioner import partition_for
from streams.kafka.topics import Topics
from streams.units.model import UnitKind, UnitRegister
from streams.wire.codec import (
    CodecError,
    Schema,
    SchemaRegistry,
    decode,
    encode,
    read_fingerprint,
    values_writer,
)
from streams.wire.envelope import EnvelopeCodec, record_key

__all__ = ["IngestRejection", "Ingestor", "Outcome", "OutcomeKind", "SpecOf", "file_spec_loader"]

log = logging.getLogger(__name__)

_UUID = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z"
)

MAX_RECORD_BYTES = 1_048_576

#: consent reference, subject, resource, observed-at → why it is not in force, or None
ConsentCheck = Callable[[str | None, str, str, int], Reason | None]

#: the reader schema (collection spec) of a resource's version
SpecOf = Callable[[Resource], Schema]


def _once(sync: Callable[[], object] | None) -> Callable[[], object] | None:
    """``sync``, run on the first call only (a batch syncs a topic at most once)."""
    if sync is None:
        return None
    done = False

    def once() -> object:
        nonlocal done
        if done:
            return False
        done = True
        return sync()

    return once


def file_spec_loader(schema_dir: Path) -> SpecOf:
    """A :data:`SpecOf` reading ``schema_dir / resource.schema`` (unit tests, the generator).
    A running worker takes the spec stored in the catalog instead
    (:meth:`streams.kafka.catalog_store.CatalogStore.spec`), so editing a file cannot change it."""
    return lambda resource: Schema.load(schema_dir / resource.schema)


#: key, value, topic, partition, offset of one collected record
Message = tuple[bytes | None, bytes | None, str, int, int]


class OutcomeKind(StrEnum):
    ACCEPTED = "accepted"
    SUPERSEDED = "superseded"
    VERIFICATION = "verification"
    REJECTED = "rejected"


class Outcome(NamedTuple):
    """One output record. ``partition`` is the source partition (-1: let the client
    choose): every outcome topic is partitioned like the collect topic, so the pool
    partition ``p`` holds exactly the keys of collect partition ``p``. A named tuple: one
    is made per record, and a frozen dataclass took five times as long to make."""

    kind: OutcomeKind
    topic: str
    key: bytes | None
    value: bytes
    pool: Pool | None = None
    reason: Reason | None = None
    resource_id: str = ""
    partition: int = -1
    headers: list[tuple[str, str | bytes | None]] | None = None
    #: the providing unit, for metrics: only a unit the catalog names (a label must never
    #: take a value from the data: hostile strings, unbounded cardinality)
    unit: str = ""


class IngestRejection(Exception):
    """Internal: a check failed; carries the reason code."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class Ingestor:
    """Checks records against the envelope schema, the catalog and the collection specs.

    ``catalog`` returns the catalog snapshot to decide with (read once per record);
    ``schema_dir`` holds the platform's own schemas (``rejected.avsc``); ``spec_of`` gives
    the reader schema of a resource's version, read once per version: in a worker the spec
    stored in the catalog (:meth:`streams.kafka.catalog_store.CatalogStore.spec`), never a file.
    """

    def __init__(
        self,
        codec: EnvelopeCodec,
        catalog: Callable[[], Catalog],
        topics: Topics,
        schema_dir: Path,
        *,
        spec_of: SpecOf,
        refresh_schemas: Callable[[], bool] | None = None,
        rejected_schema: Schema | None = None,
        pool_state: StateTable | None = None,
        max_clock_skew_ms: int = 300_000,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        units: Callable[[], UnitRegister] | None = None,
        partitions: int = 0,
        consent: ConsentCheck | None = None,
        refresh_consents: Callable[[], object] | None = None,
    ) -> None:
        self.codec = codec
        self.registry: SchemaRegistry = codec.registry
        self.catalog = catalog
        self.topics = topics
        self.spec_of = spec_of
        self._refresh: Callable[[], object] | None = refresh_schemas
        self._rejected_schema = rejected_schema or codec.registry.add(
            Schema.load(schema_dir / "rejected.avsc")
        )
        self._pool_schema = codec.registry.add(Schema.load(schema_dir / "pool_record.avsc"))
        self._superseded_schema = codec.registry.add(Schema.load(schema_dir / "superseded.avsc"))
        # One of these per record: written from the values, no dict made
        self._write_pool_record = values_writer(self._pool_schema, _POOL_RECORD_FIELDS)
        self._write_superseded = values_writer(self._superseded_schema, _SUPERSEDED_FIELDS)
        self.state = pool_state if pool_state is not None else PoolState()
        #: the register of units; None: no unit checks (unit tests of the decision alone)
        self.units = units
        #: partitions of every collect topic (0: not checked): Kafka's partitioner must put
        #: a record's key where it arrived, so one owner decides every record of a key
        self.partitions = partitions
        #: the consents on record (article 18); None: a non-empty reference suffices
        self.consent = consent
        #: reads the consents topic to its end: a consent published just before the record
        #: that names it may not have reached the book yet
        self._refresh_consents = refresh_consents
        self._principals: dict[str, str | None] = {}
        self.max_clock_skew_ms = max_clock_skew_ms
        self._clock_ms = clock_ms
        self._specs: dict[tuple[str, int], Schema] = {}
        self._pool_topics = topics.pools
        #: unexpected errors since the last record decided without one
        self.internal_errors_in_a_row = 0
        self._units: frozenset[str] = frozenset()
        self._units_of: object = None
        # _check_unit's verdicts for the register snapshot _verdicts_of
        self._verdicts: dict[tuple[str, str, Channel, str, str], _UnitVerdict] = {}
        self._verdicts_of: tuple[object, object] = (None, None)

    # -- the decision ------------------------------------------------------------------
    def process_batch(self, messages: Iterable[Message]) -> list[Outcome]:
        """Decide a batch, in order. An unknown writer fingerprint costs one sync with the
        schema topic per batch, not one per record, and an unknown consent one sync with
        the consents topic: at the first record that needs it, which is then decided
        again, so the pool state changes in the order the outcomes are written."""
        schemas, consents = self._refresh, self._refresh_consents
        self._refresh, self._refresh_consents = _once(schemas), _once(consents)
        try:
            return [self.process(*m) for m in messages]
        finally:
            self._refresh, self._refresh_consents = schemas, consents

    def process(
        self,
        key: bytes | None,
        value: bytes | None,
        topic: str = "",
        partition: int = -1,
        offset: int = -1,
    ) -> Outcome:
        try:
            out = self._decide(key, value, topic, partition, offset)
        except IngestRejection as rej:
            out = self.reject(rej.reason, rej.detail, key, value, topic, partition, offset)
        except CodecError as err:
            out = self.reject(err.reason, err.detail, key, value, topic, partition, offset)
        except Exception as exc:  # our bug, not bad data: keep the record, say so, count it
            log.exception("ingest: unexpected error at %s[%s]@%s", topic, partition, offset)
            self.internal_errors_in_a_row += 1
            return self.reject(
                Reason.INTERNAL,
                f"internal: {type(exc).__name__}: {exc}",
                key,
                value,
                topic,
                partition,
                offset,
            )
        self.internal_errors_in_a_row = 0
        return out

    def _decide(
        self, key: bytes | None, value: bytes | None, topic: str, partition: int, offset: int
    ) -> Outcome:
        if not value:
            raise IngestRejection(Reason.MALFORMED, "empty value")
        if len(value) > MAX_RECORD_BYTES:
            raise IngestRejection(Reason.OVERSIZED, f"{len(value)} bytes > {MAX_RECORD_BYTES}")
        # The envelope's fields, not an Envelope: building the frozen dataclass cost a tenth
        # of the decision. Same checks and errors as codec.decode(value).
        (
            record_id,
            resource_id,
            subject_id,
            provider,
            region,
            channel,
            observed_at_ms,
            version,
            payload_bytes,
            consent_ref,
        ) = self.codec.decode_values(value, self._writer_of(value))
        env_key = record_key(resource_id, subject_id)
        if key != env_key:
            raise IngestRejection(Reason.KEY_MISMATCH, f"key {key!r:.80} is not {env_key!r:.80}")
        if self.partitions and partition >= 0:
            home = partition_for(key, self.partitions)
            if home != partition:
                raise IngestRejection(
                    Reason.WRONG_PARTITION,
                    f"key belongs in partition {home}, not {partition}: publish with Kafka's "
                    f"default partitioner (murmur2; librdkafka: partitioner=murmur2_random)",
                )
        if not _UUID.match(record_id):
            raise IngestRejection(
                Reason.INVALID_RECORD_ID, f"record_id {record_id!r:.60} is not a UUID"
            )
        # Before anything can pin a key: one record with the largest version or a time far
        # ahead would otherwise make every later record of its subject stale.
        if version < 0:
            raise IngestRejection(Reason.INVALID_VERSION, f"version {version} is negative")
        now = self._clock_ms()
        if observed_at_ms < 0 or observed_at_ms > now + self.max_clock_skew_ms:
            raise IngestRejection(
                Reason.INVALID_TIME,
                f"observed_at_ms {observed_at_ms} is before 1970 or more than "
                f"{self.max_clock_skew_ms // 1000} s ahead of the platform's clock",
            )
        resource = self._resource(resource_id)
        self._check_envelope(region, channel, consent_ref, resource)
        if resource.consent_required and self.consent is not None:
            failed = self.consent(consent_ref, subject_id, resource_id, observed_at_ms)
            if failed is Reason.CONSENT_UNKNOWN and self._refresh_consents is not None:
                self._refresh_consents()  # published a moment before this record?
                failed = self.consent(consent_ref, subject_id, resource_id, observed_at_ms)
            if failed is not None:
                raise IngestRejection(
                    failed,
                    f"{resource.id}: consent {consent_ref!r:.60} is not in force for this "
                    f"subject at the observed time ({failed.value})",
                )
        authoritative, principal = self._check_unit(provider, region, channel, resource, topic)
        spec = self._spec(resource)  # registers the spec: its own payloads need no lookup
        # codec.decode_payload(env, spec), the writer looked up once
        payload = decode(payload_bytes, self._writer_of(payload_bytes), spec)
        failure = check_subject(resource, subject_id)
        if failure:
            raise IngestRejection(Reason.INVALID_SUBJECT, f"{resource.id}: {failure}")
        failure = check_fields(resource, payload)
        if failure:
            raise IngestRejection(Reason.FIELD_RULE, f"{resource.id}: {failure}")
        if subject_of(resource, payload) != subject_id:
            # The key must name the payload's own subject, or compaction files it elsewhere.
            raise IngestRejection(
                Reason.INVALID_SUBJECT,
                f"{resource.id}: subject_id is not the payload's {resource.subject}",
            )
        if not authoritative:
            # Not the authoritative source: keep as evidence, never as the pool's truth.
            return Outcome(
                OutcomeKind.VERIFICATION,
                self.topics.verification,
                key,
                value,
                resource.pool,
                None,
                resource.id,
                partition,
                [(SOURCE_HEADER, pack_source(topic, partition, offset))],
                provider if provider in self._known_units() else "unknown",
            )
        fingerprint = content_fingerprint(payload_bytes)
        state = pack_state(version, observed_at_ms, fingerprint)
        verdict, previous = self.state.decide(partition, key, state)
        if verdict is not Verdict.UPDATE:
            current_version, current_observed = current_of(previous)
            superseded = self._write_superseded(
                verdict.value,
                resource_id,
                subject_id,
                record_id,
                provider,
                version,
                observed_at_ms,
                current_version,
                current_observed,
                topic,
                partition,
                offset,
                now,
            )
            return Outcome(
                OutcomeKind.SUPERSEDED,
                self.topics.superseded,
                key,
                superseded,
                resource.pool,
                Reason(verdict.value),
                resource.id,
                partition,
                None,
                provider,
            )
        try:
            pool_value = self._write_pool_record(
                resource_id,
                subject_id,
                version,
                observed_at_ms,
                fingerprint,
                record_id,
                provider,
                principal,
                channel.value,
                region,
                consent_ref,
                now,
                topic,
                partition,
                offset,
                resource.version,
                0,  # verification_count: the verifier counts confirmations
                payload_bytes,
            )
        except BaseException:
            self.state.undo(partition, key, previous)
            raise
        return Outcome(
            OutcomeKind.ACCEPTED,
            self._pool_topics[resource.pool],
            key,
            pool_value,
            resource.pool,
            None,
            resource.id,
            partition,
            [(STATE_HEADER, state)],
            provider,
        )

    def _check_unit(
        self, provider: str, region: str, channel: Channel, resource: Resource, topic: str
    ) -> tuple[bool, str]:
        """:meth:`_unit_verdict`, remembered per register and catalog snapshot: a source
        sends many records with the same provider, region, channel, resource and topic."""
        if self.units is None:
            return provider == resource.provider, ""
        units = self.units()
        snapshot = (units, self.catalog())
        if snapshot[0] is not self._verdicts_of[0] or snapshot[1] is not self._verdicts_of[1]:
            self._verdicts = {}
            self._verdicts_of = snapshot
        memo = self._verdicts
        k = (provider, region, channel, resource.id, topic)
        verdict = memo.get(k)
        if verdict is None:
            try:
                verdict = self._unit_verdict(units, provider, region, channel, resource, topic)
            except IngestRejection as rej:
                verdict = rej
            if len(memo) >= _MAX_VERDICTS:  # the keys come from the data: stay bounded
                memo.clear()
            memo[k] = verdict
        if isinstance(verdict, IngestRejection):
            raise IngestRejection(verdict.reason, verdict.detail)
        return verdict

    def _unit_verdict(
        self,
        units: UnitRegister,
        provider: str,
        region: str,
        channel: Channel,
        resource: Resource,
        topic: str,
    ) -> tuple[bool, str]:
        """Who sent it (article 22): a unit in force, under the principal whose topic
        carried it, collecting in its own region; COMMISSIONED exactly when a registered
        third party collected it. Returns whether the record is the resource's authoritative
        data (from its provider, a unit collecting for it, or a third party it commissioned)
        and the principal."""
        unit = units.in_force(provider)
        if unit is None:
            raise IngestRejection(
                Reason.UNREGISTERED_PROVIDER,
                f"provider {provider!r:.60} is not a registered unit (`xiangyun units list`)",
            )
        principal = self._principal_of_topic(topic)
        if principal is not None and units.principal_of(unit.code) != principal:
            raise IngestRejection(
                Reason.PROVIDER_NOT_IN_PRINCIPAL,
                f"{unit.code} does not collect under {principal}, whose topic this is",
            )
        if not _region_within(region, unit.region):
            raise IngestRejection(
                Reason.REGION_MISMATCH,
                f"region {region!r:.20} is outside {unit.code}'s region {unit.region}",
            )
        third_party = unit.kind is UnitKind.THIRD_PARTY
        if (channel is Channel.COMMISSIONED) != third_party:
            raise IngestRejection(
                Reason.COMMISSION_MISMATCH,
                f"channel {channel.value} from {unit.code}: COMMISSIONED records name the "
                f"registered third party that collected them as provider, and only those",
            )
        accountable = units.accountable_of(unit.code)
        authoritative = accountable == resource.provider or resource.id in unit.duties
        return authoritative, principal or ""

    def _principal_of_topic(self, topic: str) -> str | None:
        known = self._principals
        if topic not in known:
            known[topic] = self.topics.principal_of(topic)
        return known[topic]

    def _known_units(self) -> frozenset[str]:
        """Units the catalog names (departments and providers), per catalog snapshot."""
        catalog = self.catalog()
        if catalog is not self._units_of:
            self._units = frozenset(u for r in catalog for u in (r.provider, r.department))
            self._units_of = catalog
        return self._units

    def _writer_of(self, data: bytes) -> Schema:
        """``registry.writer_of(data)``, refreshing the registry first if it lacks the
        fingerprint (a schema registered since it was last read)."""
        fp = read_fingerprint(data)
        writer = self.registry.get(fp)
        if writer is None:
            if self._refresh is not None:
                self._refresh()
                writer = self.registry.get(fp)
            if writer is None:
                raise CodecError(Reason.UNKNOWN_SCHEMA, f"no schema with fingerprint {fp:016x}")
        return writer

    def _resource(self, resource_id: str) -> Resource:
        catalog = self.catalog()
        resource = catalog.get(resource_id)
        if resource is None:
            raise IngestRejection(Reason.UNKNOWN_RESOURCE, f"{resource_id!r:.120} not in catalog")
        if not resource.in_force:
            raise IngestRejection(
                Reason.RESOURCE_NOT_IN_FORCE, f"{resource.id} is {resource.status.value}"
            )
        return resource

    @staticmethod
    def _check_envelope(
        region: str, channel: Channel, consent_ref: str | None, resource: Resource
    ) -> None:
        if not _region_within(region, resource.region):
            raise IngestRejection(
                Reason.REGION_MISMATCH,
                f"{resource.id}: region {region!r:.20} is outside {resource.region}",
            )
        if channel not in resource.channels:
            raise IngestRejection(
                Reason.CHANNEL_NOT_ALLOWED,
                f"{resource.id}: channel {channel.value} not in "
                f"{sorted(c.value for c in resource.channels)}",
            )
        if resource.consent_required and not (consent_ref or "").strip():
            raise IngestRejection(Reason.CONSENT_MISSING, f"{resource.id} requires consent_ref")

    def _spec(self, resource: Resource) -> Schema:
        k = (resource.id, resource.version)
        spec = self._specs.get(k)
        if spec is None:
            spec = self.registry.add(self.spec_of(resource))
            self._specs[k] = spec
        return spec

    # -- rejection ---------------------------------------------------------------------
    def reject(
        self,
        reason: Reason,
        detail: str,
        key: bytes | None,
        value: bytes | None,
        topic: str,
        partition: int,
        offset: int,
    ) -> Outcome:
        record = {
            "reason": reason.value,
            "detail": detail[:1000],
            "source_topic": topic,
            "source_partition": partition,
            "source_offset": offset,
            "original_key": key,
            "original_value": value,
            "rejected_at_ms": int(time.time() * 1000),
        }
        return Outcome(
            OutcomeKind.REJECTED,
            self.topics.rejected,
            key,
            encode(self._rejected_schema, record),
            None,
            reason,
            "",
            partition if topic else -1,
        )


#: whether the record is authoritative and its principal, or why it is refused
_UnitVerdict = tuple[bool, str] | IngestRejection

#: unit verdicts remembered at most (per register snapshot)
_MAX_VERDICTS = 10_000

#: PoolRecord's fields (pool_record.avsc), in order
_POOL_RECORD_FIELDS = (
    "resource_id",
    "subject_id",
    "version",
    "observed_at_ms",
    "content_fingerprint",
    "record_id",
    "provider",
    "principal",
    "channel",
    "region",
    "consent_ref",
    "accepted_at_ms",
    "source_topic",
    "source_partition",
    "source_offset",
    "catalog_version",
    "verification_count",
    "payload",
)

#: SupersededRecord's fields (superseded.avsc), in order
_SUPERSEDED_FIELDS = (
    "reason",
    "resource_id",
    "subject_id",
    "record_id",
    "provider",
    "version",
    "observed_at_ms",
    "current_version",
    "current_observed_at_ms",
    "source_topic",
    "source_partition",
    "source_offset",
    "decided_at_ms",
)


def _region_within(region: str, scope: str) -> bool:
    """A provincial resource takes records collected anywhere in the province (cities
    pre-aggregate and forward, article 20); a city's resource only from that city."""
    if region == scope:
        return True
    if not is_region(region):
        return False
    return scope == PROVINCE or city_of(region) == scope
