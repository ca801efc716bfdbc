"""The verifier's decision (多源校核), free of Kafka clients: what one input record changes
and which records go out.

Per assigned partition ``p`` (verification partition ``p`` and pool partitions ``p`` hold
the same keys) it keeps

* the authoritative current value per key (the pool record: version, provider, record id,
  position and payload) and the verification count of that version with its verifiers, in a
  :class:`~streams.verification.store.KeyValue` store;
* the evidence waiting for an authoritative value, in memory, at most ``pending_max`` per
  partition (past it the oldest is dropped and counted); each one is also on the pending
  change log topic, written in the same transaction, so a restore finds it. One waiting
  record costs about 900 bytes in CPython with a 300-byte envelope (measured with
  tracemalloc: the envelope bytes, key, record id, the entry in the ordered dict and in the
  per-key index): the default cap of 20,000 bounds it near 18 MB per partition.

A pool record replaces the key's authoritative value; if the key had been verified at an
older version, a verified record with count 0 says the count was reset; the key's waiting
evidence is then compared. Evidence from a registered unit other than the authoritative
provider is compared at once if the key has an authoritative value, else it waits.
Agreement adds the verifier to the version's set (a verifier counts once per version);
disagreement raises a conflict on the provider's conflict topic.
"""

from __future__ import annotations

import json
import logging
import struct
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.kafka.topics import Topics
from streams.verification.compare import conflict_id, differing_fields, display
from streams.verification.store import KeyValue
from streams.wire.codec import CodecError, Schema, SchemaRegistry, decode, encode
from streams.wire.envelope import EnvelopeCodec, record_key

__all__ = [
    "SOURCE_HEADER",
    "Authority",
    "Output",
    "Pending",
    "VerifiedState",
    "Verifier",
]

log = logging.getLogger(__name__)

#: Kafka header of evidence records: collect partition and offset (written by the ingest)
SOURCE_HEADER = "xy-source"
_SOURCE = struct.Struct(">iq")
_AUTH = struct.Struct(">qiqH")
_A, _V = b"a", b"v"  # store key prefixes: authoritative value, verified state

Headers = list[tuple[str, str | bytes | None]]


@dataclass(frozen=True, slots=True)
class Output:
    """One record to produce (``value`` None: a tombstone; ``partition`` -1: by key)."""

    topic: str
    key: bytes
    value: bytes | None
    partition: int = -1
    headers: Headers | None = None


@dataclass(frozen=True, slots=True)
class Authority:
    """The authoritative current value of a key: its pool record."""

    version: int
    provider: str
    record_id: str
    pool_topic: str
    pool_partition: int
    pool_offset: int
    payload: bytes

    def pack(self) -> bytes:
        meta = json.dumps([self.provider, self.record_id, self.pool_topic]).encode()
        head = _AUTH.pack(self.version, self.pool_partition, self.pool_offset, len(meta))
        return head + meta + self.payload

    @classmethod
    def unpack(cls, raw: bytes) -> Authority:
        version, part, offset, n = _AUTH.unpack_from(raw)
        at = _AUTH.size
        provider, record_id, topic = json.loads(raw[at : at + n])
        return cls(version, provider, record_id, topic, part, offset, raw[at + n :])


@dataclass(slots=True)
class VerifiedState:
    version: int
    verifiers: list[str] = field(default_factory=list)
    last_verified_at_ms: int = 0

    def pack(self) -> bytes:
        return json.dumps([self.version, self.verifiers, self.last_verified_at_ms]).encode()

    @classmethod
    def unpack(cls, raw: bytes) -> VerifiedState:
        version, verifiers, at = json.loads(raw)
        return cls(version, list(verifiers), at)


@dataclass(frozen=True, slots=True)
class Pending:
    """Evidence waiting for an authoritative value: its envelope bytes as collected."""

    key: bytes
    record_id: str
    value: bytes
    source: bytes | None  # the SOURCE_HEADER value


def pending_key(key: bytes, record_id: str) -> bytes:
    return key + b"|" + record_id.encode()


class _Partition:
    def __init__(self, store: KeyValue) -> None:
        self.store = store
        self.pending: OrderedDict[bytes, Pending] = OrderedDict()
        self.by_key: dict[bytes, list[bytes]] = {}

    def add_pending(self, p: Pending) -> bytes:
        pk = pending_key(p.key, p.record_id)
        if pk in self.pending:
            self.pending.move_to_end(pk)
        else:
            self.by_key.setdefault(p.key, []).append(pk)
        self.pending[pk] = p
        return pk

    def remove_pending(self, pk: bytes) -> Pending | None:
        p = self.pending.pop(pk, None)
        if p is not None:
            keys = self.by_key.get(p.key, [])
            if pk in keys:
                keys.remove(pk)
            if not keys:
                self.by_key.pop(p.key, None)
        return p


class Verifier:
    """Decides the verification of one worker's partitions.

    ``registered(code)``: is ``code`` a unit in force (the unit register); ``conflict_topic
    (unit)``: the name of the unit's conflict topic, made if missing; ``refresh_schemas``:
    catch up with the schema topic (an unknown payload writer)."""

    def __init__(
        self,
        topics: Topics,
        schema_dir: Path,
        registry: SchemaRegistry,
        *,
        registered: Callable[[str], bool],
        conflict_topic: Callable[[str], str] | None = None,
        refresh_schemas: Callable[[], bool] | None = None,
        pending_max: int = 20_000,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.topics = topics
        self.registry = registry
        self.codec = EnvelopeCodec(registry, schema_dir)
        self._pool_schema = registry.add(Schema.load(schema_dir / "pool_record.avsc"))
        self._verified_schema = registry.add(Schema.load(schema_dir / "verified.avsc"))
        self._conflict_schema = registry.add(Schema.load(schema_dir / "conflict.avsc"))
        self._pool_topics = frozenset(topics.pools.values())
        self.registered = registered
        self.conflict_topic = conflict_topic or topics.conflicts
        self._refresh = refresh_schemas
        self.pending_max = pending_max
        self._clock_ms = clock_ms
        self._parts: dict[int, _Partition] = {}
        #: outcomes since the last :meth:`take_tally`: agree, disagree, pending, dropped,
        #: self, unregistered, unreadable, reset
        self.tally: Counter[str] = Counter()

    # -- partitions ---------------------------------------------------------------------
    def open(self, partition: int, store: KeyValue) -> None:
        """Take ``partition`` with an empty ``store`` (fill it with the restore_* methods)."""
        self.close([partition])
        self._parts[partition] = _Partition(store)

    def close(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            part = self._parts.pop(p, None)
            if part is not None:
                part.store.close()

    def partitions(self) -> list[int]:
        return sorted(self._parts)

    def pending_count(self) -> int:
        return sum(len(p.pending) for p in self._parts.values())

    def restore_pool(self, topic: str, partition: int, offset: int, value: bytes | None) -> None:
        """Apply a pool record read back from Kafka (no output, no comparison)."""
        self._set_authority(topic, partition, offset, value)

    def restore_verified(self, partition: int, key: bytes, value: bytes | None) -> None:
        store = self._parts[partition].store
        if value is None:
            store.delete(_V + key)
            return
        rec = decode(value, self.registry.writer_of(value), self._verified_schema)
        state = VerifiedState(rec["version"], list(rec["verifiers"]), rec["last_verified_at_ms"])
        store.put(_V + key, state.pack())

    def restore_pending(
        self, partition: int, pk: bytes, value: bytes | None, source: bytes | None
    ) -> None:
        part = self._parts[partition]
        if value is None:
            part.remove_pending(pk)
            return
        key, _, rid = pk.rpartition(b"|")
        part.remove_pending(pk)  # a re-written key moves to the end, as in the log
        part.add_pending(Pending(key, rid.decode(), value, source))

    # -- the decision -------------------------------------------------------------------
    def process(
        self,
        topic: str,
        partition: int,
        offset: int,
        value: bytes | None,
        headers: Any = None,
    ) -> list[Output]:
        """The outputs of one input record of an assigned partition."""
        if topic in self._pool_topics:
            return self._on_pool(topic, partition, offset, value)
        if value is None:
            return []
        source = next(
            (v for k, v in headers or () if k == SOURCE_HEADER and isinstance(v, bytes)), None
        )
        return self._on_evidence(partition, value, source)

    def _on_pool(
        self, topic: str, partition: int, offset: int, value: bytes | None
    ) -> list[Output]:
        got = self._set_authority(topic, partition, offset, value)
        if got is None:
            return []
        key, auth = got
        part = self._parts[partition]
        out: list[Output] = []
        raw = part.store.get(_V + key)
        if raw is not None:
            state = VerifiedState.unpack(raw)
            if state.version != auth.version and state.verifiers:
                # A new authoritative version: nothing has confirmed it yet.
                state = VerifiedState(auth.version, [], self._clock_ms())
                part.store.put(_V + key, state.pack())
                out.append(self._verified_output(partition, key, state))
                self.tally["reset"] += 1
        for pk in list(part.by_key.get(key, ())):
            pending = part.remove_pending(pk)
            assert pending is not None
            out.append(Output(self.topics.verification_pending, pk, None, partition))
            out += self._compare(partition, key, auth, pending.value, pending.source)
        return out

    def _set_authority(
        self, topic: str, partition: int, offset: int, value: bytes | None
    ) -> tuple[bytes, Authority] | None:
        if value is None:
            return None  # pools are never tombstoned; a tombstone changes nothing here
        try:
            rec = decode(value, self.registry.writer_of(value), self._pool_schema)
        except CodecError as exc:
            log.error(
                "verifier: unreadable pool record %s[%s]@%s: %s", topic, partition, offset, exc
            )
            self.tally["unreadable"] += 1
            return None
        key = record_key(rec["resource_id"], rec["subject_id"])
        auth = Authority(
            rec["version"],
            rec["provider"],
            rec["record_id"],
            topic,
            partition,
            offset,
            rec["payload"],
        )
        self._parts[partition].store.put(_A + key, auth.pack())
        return key, auth

    def _on_evidence(self, partition: int, value: bytes, source: bytes | None) -> list[Output]:
        try:
            env = self.codec.decode(value)
        except CodecError as exc:
            log.error("verifier: unreadable evidence in partition %s: %s", partition, exc)
            self.tally["unreadable"] += 1
            return []
        if not self.registered(env.provider):
            self.tally["unregistered"] += 1
            return []
        key = env.key
        part = self._parts[partition]
        raw = part.store.get(_A + key)
        if raw is not None:
            return self._compare(partition, key, Authority.unpack(raw), value, source)
        out: list[Output] = []
        pk = part.add_pending(Pending(key, env.record_id, value, source))
        out.append(
            Output(
                self.topics.verification_pending,
                pk,
                value,
                partition,
                [(SOURCE_HEADER, source)] if source is not None else None,
            )
        )
        self.tally["pending"] += 1
        while len(part.pending) > self.pending_max:
            oldest = next(iter(part.pending))
            part.remove_pending(oldest)
            out.append(Output(self.topics.verification_pending, oldest, None, partition))
            self.tally["dropped"] += 1
        return out

    def _payload(self, payload: bytes) -> Mapping[str, Any] | None:
        try:
            try:
                writer = self.registry.writer_of(payload)
            except CodecError:
                if self._refresh is None:
                    raise
                self._refresh()
                writer = self.registry.writer_of(payload)
            fields = decode(payload, writer)
        except CodecError as exc:
            log.error("verifier: unreadable payload: %s", exc)
            return None
        return fields if isinstance(fields, Mapping) else None

    def _compare(
        self, partition: int, key: bytes, auth: Authority, value: bytes, source: bytes | None
    ) -> list[Output]:
        try:
            env = self.codec.decode(value)
        except CodecError:
            self.tally["unreadable"] += 1
            return []
        if env.provider == auth.provider:
            self.tally["self"] += 1  # the provider cannot confirm itself
            return []
        truth = self._payload(auth.payload)
        seen = self._payload(env.payload)
        if truth is None or seen is None:
            self.tally["unreadable"] += 1
            return []
        differ = differing_fields(truth, seen)
        now = self._clock_ms()
        if not differ:
            self.tally["agree"] += 1
            store = self._parts[partition].store
            raw = store.get(_V + key)
            state = VerifiedState.unpack(raw) if raw is not None else None
            if state is None or state.version != auth.version:
                state = VerifiedState(auth.version)
            if env.provider in state.verifiers:
                return []  # the same verifier counts once per version
            state.verifiers.append(env.provider)
            state.last_verified_at_ms = now
            store.put(_V + key, state.pack())
            return [self._verified_output(partition, key, state)]
        self.tally["disagree"] += 1
        src_part, src_offset = _SOURCE.unpack(source) if source and len(source) == 12 else (-1, -1)
        cid = conflict_id(key, auth.version, env.record_id)
        conflict = {
            "conflict_id": cid,
            "resource_id": env.resource_id,
            "subject_id": env.subject_id,
            "authoritative": {
                "version": auth.version,
                "provider": auth.provider,
                "record_id": auth.record_id,
                "pool_topic": auth.pool_topic,
                "pool_partition": auth.pool_partition,
                "pool_offset": auth.pool_offset,
                "values": {f: display(truth[f]) for f in differ},
            },
            "evidence": {
                "record_id": env.record_id,
                "provider": env.provider,
                "region": env.region,
                "observed_at_ms": env.observed_at_ms,
                "source_partition": src_part,
                "source_offset": src_offset,
                "values": {f: display(seen[f]) for f in differ},
            },
            "fields": differ,
            "raised_at_ms": now,
            "status": "open",
        }
        return [
            Output(
                self.conflict_topic(auth.provider),
                cid.encode(),
                encode(self._conflict_schema, conflict),
            )
        ]

    def _verified_output(self, partition: int, key: bytes, state: VerifiedState) -> Output:
        resource_id, _, subject_id = key.decode().partition("|")
        rec = {
            "resource_id": resource_id,
            "subject_id": subject_id,
            "version": state.version,
            "count": len(state.verifiers),
            "verifiers": list(state.verifiers),
            "last_verified_at_ms": state.last_verified_at_ms,
        }
        return Output(self.topics.verified, key, encode(self._verified_schema, rec), partition)

    # -- reading the state (tests, operations) ------------------------------------------
    def authority(self, partition: int, key: bytes) -> Authority | None:
        raw = self._parts[partition].store.get(_A + key)
        return Authority.unpack(raw) if raw is not None else None

    def verified(self, partition: int, key: bytes) -> VerifiedState | None:
        raw = self._parts[partition].store.get(_V + key)
        return VerifiedState.unpack(raw) if raw is not None else None

    def pending(self, partition: int) -> list[Pending]:
        return list(self._parts[partition].pending.values())

    def take_tally(self) -> Counter[str]:
        tally, self.tally = self.tally, Counter()
        return tally
