"""The ingest decision (采集校验) for one collected record, free of Kafka and Faust.

Every record ends in exactly one :class:`Outcome`: accepted into its resource's pool,
kept as verification evidence (a non-authoritative source, article 20), or rejected with
a reason code and its original bytes. No input makes :meth:`Ingestor.process` raise.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from streams.catalog.model import Catalog, Resource
from streams.catalog.spec import check_fields, check_subject, subject_of
from streams.core.channel import Channel
from streams.core.pools import Pool
from streams.core.reasons import Reason
from streams.core.regions import PROVINCE, city_of, is_region
from streams.kafka.topics import Topics
from streams.wire.codec import CodecError, Schema, SchemaRegistry, decode, encode, read_fingerprint
from streams.wire.envelope import EnvelopeCodec, record_key

__all__ = ["IngestRejection", "Ingestor", "Outcome", "OutcomeKind", "SpecOf", "file_spec_loader"]

log = logging.getLogger(__name__)

MAX_RECORD_BYTES = 1_048_576

#: the reader schema (collection spec) of a resource's version
SpecOf = Callable[[Resource], Schema]


def file_spec_loader(schema_dir: Path) -> SpecOf:
    """A :data:`SpecOf` reading ``schema_dir / resource.schema`` (unit tests, the generator).
    A running worker takes the spec stored in the catalog instead
    (:meth:`streams.kafka.catalog_store.CatalogStore.spec`), so editing a file cannot change it."""
    return lambda resource: Schema.load(schema_dir / resource.schema)


#: key, value, topic, partition, offset of one collected record
Message = tuple[bytes | None, bytes | None, str, int, int]


class OutcomeKind(StrEnum):
    ACCEPTED = "accepted"
    VERIFICATION = "verification"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: OutcomeKind
    topic: str
    key: bytes | None
    value: bytes
    pool: Pool | None = None
    reason: Reason | None = None
    resource_id: str = ""


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
    ) -> None:
        self.codec = codec
        self.registry: SchemaRegistry = codec.registry
        self.catalog = catalog
        self.topics = topics
        self.spec_of = spec_of
        self._refresh = refresh_schemas
        self._rejected_schema = rejected_schema or codec.registry.add(
            Schema.load(schema_dir / "rejected.avsc")
        )
        self._specs: dict[tuple[str, int], Schema] = {}
        self._pool_topics = topics.pools

    # -- the decision ------------------------------------------------------------------
    def process_batch(self, messages: Iterable[Message]) -> list[Outcome]:
        """Decide a batch. An unknown writer fingerprint costs one sync with the schema
        topic per batch, not one per record: those records are decided again after it."""
        refresh, self._refresh = self._refresh, None
        try:
            batch = list(messages)
            outcomes = [self.process(*m) for m in batch]
            unknown = [i for i, o in enumerate(outcomes) if o.reason is Reason.UNKNOWN_SCHEMA]
            if unknown and refresh is not None:
                refresh()
                for i in unknown:
                    outcomes[i] = self.process(*batch[i])
        finally:
            self._refresh = refresh
        return outcomes

    def process(
        self,
        key: bytes | None,
        value: bytes | None,
        topic: str = "",
        partition: int = -1,
        offset: int = -1,
    ) -> Outcome:
        try:
            return self._decide(key, value)
        except IngestRejection as rej:
            return self.reject(rej.reason, rej.detail, key, value, topic, partition, offset)
        except CodecError as err:
            return self.reject(err.reason, err.detail, key, value, topic, partition, offset)
        except Exception as exc:  # a bug must not lose the record: reject it, keep going
            log.exception("ingest: unexpected error at %s[%s]@%s", topic, partition, offset)
            return self.reject(
                Reason.UNDECODABLE,
                f"internal: {type(exc).__name__}: {exc}",
                key,
                value,
                topic,
                partition,
                offset,
            )

    def _decide(self, key: bytes | None, value: bytes | None) -> Outcome:
        if not value:
            raise IngestRejection(Reason.MALFORMED, "empty value")
        if len(value) > MAX_RECORD_BYTES:
            raise IngestRejection(Reason.OVERSIZED, f"{len(value)} bytes > {MAX_RECORD_BYTES}")
        # The envelope's fields, not an Envelope: building the frozen dataclass cost a tenth
        # of the decision. Same checks and errors as codec.decode(value).
        (
            _,  # record_id
            resource_id,
            subject_id,
            provider,
            region,
            channel,
            _,  # observed_at_ms
            _,  # version
            payload_bytes,
            consent_ref,
        ) = self.codec.decode_values(value, self._writer_of(value))
        env_key = record_key(resource_id, subject_id)
        if key != env_key:
            raise IngestRejection(Reason.KEY_MISMATCH, f"key {key!r:.80} is not {env_key!r:.80}")
        resource = self._resource(resource_id)
        self._check_envelope(region, channel, consent_ref, resource)
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
        if provider != resource.provider:
            # Not the authoritative source: keep as evidence, never as the pool's truth.
            return Outcome(
                OutcomeKind.VERIFICATION,
                self.topics.verification,
                key,
                value,
                resource.pool,
                None,
                resource.id,
            )
        return Outcome(
            OutcomeKind.ACCEPTED,
            self._pool_topics[resource.pool],
            key,
            value,
            resource.pool,
            None,
            resource.id,
        )

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
        )


def _region_within(region: str, scope: str) -> bool:
    """A provincial resource takes records collected anywhere in the province (cities
    pre-aggregate and forward, article 20); a city's resource only from that city."""
    if region == scope:
        return True
    if not is_region(region):
        return False
    return scope == PROVINCE or city_of(region) == scope
