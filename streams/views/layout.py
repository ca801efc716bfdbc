"""How a pool view sits in Redis: key names, compact values and the view's digest.

Pure functions only (no Redis, no Kafka), so the layout is tested on its own.

Keys of the view of topic prefix ``xy`` (``ns`` = ``xy.pools``)::

    xy.pools:state                    hash: gen, layout, applied_at_ms, o:<topic>:<partition>
    xy.pools:<gen>:r:<resource>:<bb>  hash: subject_id -> record value (bb: bucket, 2 hex digits)
    xy.pools:<gen>:ctx                hash: context id (8 bytes) -> context value
    xy.pools:<gen>:res                hash: resource_id -> pool
    xy.pools:<gen>:v:<resource>:<bb>  hash: subject_id -> verification (verified topic)

``gen`` names one build of the view: a materializer that finds no state (Redis flushed or
restarted empty, or ``xiangyun pools rebuild``) starts a new generation and replays the pool
topics into fresh keys, so keys of an old generation that are still being deleted never mix
with the new one. ``o:<topic>:<partition>`` is the next offset of that partition whose
records are applied: the state hash is the view's offset store (for the pool topics and the
verified topic alike).

A verification value (:func:`encode_verified`) is the verified record of the subject: the
authoritative version it is about, the count, when it last changed and the verifying units.
It sits next to the record rather than in it, since it changes without a new pool version;
a reader shows it only while its version is the record's (a newer version starts at 0).

A record value is the pool record without what the key already says (resource and subject),
its provenance that repeats across records (provider, channel, region, source topic, catalog
version and the payload's 10-byte schema header) moved into a shared *context* entry, and a
UUID record id stored as its 16 bytes. :func:`decode_record` gives back the very PoolRecord.
"""

from __future__ import annotations

import hashlib
import io
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import fastavro

__all__ = [
    "BUCKETS",
    "LAYOUT",
    "Entry",
    "Layout",
    "bucket_of",
    "decode_context",
    "decode_record",
    "decode_verified",
    "digest_entries",
    "encode_record",
    "encode_verified",
    "entry_digest",
    "entry_of",
    "record_context_id",
    "text",
]

#: version of this layout, kept in the state hash; a reader refuses any other
LAYOUT = "2"
#: hashes per resource: a subject's record is in bucket ``bucket_of(subject) % BUCKETS``
BUCKETS = 64
_FORMAT = b"\x01"  # first byte of every record value
_MARKER = b"\xc3\x01"  # Avro single-object marker: the payload's 10-byte header is shared
_HEADER_LEN = 10
_MASK = (1 << 64) - 1

_CONTEXT_SCHEMA = fastavro.parse_schema(
    {
        "type": "record",
        "name": "PoolViewContext",
        "namespace": "org.xiangyun.view",
        "fields": [
            {"name": "provider", "type": "string"},
            {"name": "channel", "type": "string"},
            {"name": "region", "type": "string"},
            {"name": "source_topic", "type": "string"},
            {"name": "catalog_version", "type": "int"},
            {"name": "payload_header", "type": "bytes"},
            {"name": "principal", "type": "string", "default": ""},
        ],
    }
)
_RECORD_SCHEMA = fastavro.parse_schema(
    {
        "type": "record",
        "name": "PoolViewRecord",
        "namespace": "org.xiangyun.view",
        "fields": [
            {"name": "context", "type": {"type": "fixed", "name": "ContextId", "size": 8}},
            {"name": "version", "type": "long"},
            {"name": "observed_at_ms", "type": "long"},
            {"name": "accepted_after_ms", "type": "long"},  # accepted_at_ms - observed_at_ms
            {"name": "content_fingerprint", "type": {"type": "fixed", "name": "Fp", "size": 8}},
            {
                "name": "record_id",
                "type": ["string", {"type": "fixed", "name": "Uuid", "size": 16}],
            },
            {"name": "consent_ref", "type": ["null", "string"]},
            {"name": "source_partition", "type": "int"},
            {"name": "source_offset", "type": "long"},
            {"name": "verification_count", "type": "int"},
            {"name": "payload_body", "type": "bytes"},
        ],
    }
)


def _write(schema: Any, record: Mapping[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, record)
    return buf.getvalue()


def _read(schema: Any, data: bytes) -> Any:
    return fastavro.schemaless_reader(io.BytesIO(data), schema, None)


def text(raw: bytes | str) -> str:
    """A Redis reply as text (the client returns bytes)."""
    return raw.decode() if isinstance(raw, bytes) else raw


def bucket_of(subject_id: str) -> int:
    """The bucket of a subject's record: the same in every process and every run."""
    return hashlib.blake2b(subject_id.encode(), digest_size=2).digest()[0] % BUCKETS


@dataclass(frozen=True, slots=True)
class Layout:
    """The key names of one view (``ns``) in one generation."""

    ns: str

    @classmethod
    def of(cls, topic_prefix: str) -> Layout:
        return cls(f"{topic_prefix}.pools")

    @property
    def state(self) -> str:
        return f"{self.ns}:state"

    def gen_prefix(self, gen: str) -> str:
        return f"{self.ns}:{gen}:"

    def record_key(self, gen: str, resource_id: str, subject_id: str) -> str:
        return f"{self.ns}:{gen}:r:{resource_id}:{bucket_of(subject_id):02x}"

    def verified_key(self, gen: str, resource_id: str, subject_id: str) -> str:
        return f"{self.ns}:{gen}:v:{resource_id}:{bucket_of(subject_id):02x}"

    def context_key(self, gen: str) -> str:
        return f"{self.ns}:{gen}:ctx"

    def resources_key(self, gen: str) -> str:
        return f"{self.ns}:{gen}:res"

    def parse(self, key: str) -> tuple[str, str, str] | None:
        """``(gen, kind, resource_id)`` of a key of this view (kind ``r``, ``v``, ``ctx`` or
        ``res``; resource only for ``r`` and ``v``), or None for the state key or a foreign
        key."""
        if not key.startswith(self.ns + ":"):
            return None
        parts = key[len(self.ns) + 1 :].split(":")
        if len(parts) == 2 and parts[1] in ("ctx", "res"):
            return parts[0], parts[1], ""
        if len(parts) >= 4 and parts[1] in ("r", "v"):
            return parts[0], parts[1], ":".join(parts[2:-1])
        return None

    @staticmethod
    def offset_field(topic: str, partition: int) -> str:
        return f"o:{topic}:{partition}"

    @staticmethod
    def parse_offset_field(field: str) -> tuple[str, int] | None:
        if not field.startswith("o:"):
            return None
        topic, _, part = field[2:].rpartition(":")
        return (topic, int(part)) if topic and part.isdigit() else None


def encode_record(record: Mapping[str, Any]) -> tuple[bytes, bytes, bytes]:
    """``(value, context_id, context)`` of a PoolRecord (a dict as Avro reads it)."""
    payload: bytes = record["payload"]
    header = payload[:_HEADER_LEN] if payload[:2] == _MARKER else b""
    context = _write(
        _CONTEXT_SCHEMA,
        {
            "provider": record["provider"],
            "channel": record["channel"],
            "region": record["region"],
            "source_topic": record["source_topic"],
            "catalog_version": record["catalog_version"],
            "payload_header": header,
            "principal": record.get("principal", ""),
        },
    )
    context_id = hashlib.blake2b(context, digest_size=8).digest()
    rid: str = record["record_id"]
    try:
        parsed = uuid.UUID(rid)
        record_id: str | tuple[str, bytes] = (
            ("org.xiangyun.view.Uuid", parsed.bytes) if str(parsed) == rid else rid
        )
    except ValueError:
        record_id = rid
    value = _FORMAT + _write(
        _RECORD_SCHEMA,
        {
            "context": context_id,
            "version": record["version"],
            "observed_at_ms": record["observed_at_ms"],
            "accepted_after_ms": record["accepted_at_ms"] - record["observed_at_ms"],
            "content_fingerprint": record["content_fingerprint"],
            "record_id": record_id,
            "consent_ref": record.get("consent_ref"),
            "source_partition": record["source_partition"],
            "source_offset": record["source_offset"],
            "verification_count": record.get("verification_count", 0),
            "payload_body": payload[len(header) :],
        },
    )
    return value, context_id, context


def encode_verified(record: Mapping[str, Any]) -> bytes:
    """The view value of a Verified record (a dict as Avro reads it)."""
    verifiers = ",".join(record["verifiers"])
    return (
        f"{record['version']}|{record['count']}|{record['last_verified_at_ms']}|{verifiers}"
    ).encode()


def decode_verified(value: bytes) -> dict[str, Any]:
    """``version``, ``verification_count``, ``last_verified_at_ms``, ``verifiers``."""
    version, count, at, verifiers = value.decode().split("|", 3)
    return {
        "version": int(version),
        "verification_count": int(count),
        "last_verified_at_ms": int(at),
        "verifiers": verifiers.split(",") if verifiers else [],
    }


def record_context_id(value: bytes) -> bytes:
    """The context id a record value refers to (bytes 1..8)."""
    return value[1:9]


def decode_context(context: bytes) -> dict[str, Any]:
    out: dict[str, Any] = _read(_CONTEXT_SCHEMA, context)
    return out


def decode_record(
    resource_id: str, subject_id: str, value: bytes, context: bytes
) -> dict[str, Any]:
    """The PoolRecord dict (payload still encoded) from a view value and its context."""
    if value[:1] != _FORMAT:
        raise ValueError(f"not a pool view value (format byte {value[:1]!r})")
    v = _read(_RECORD_SCHEMA, value[1:])
    c = decode_context(context)
    rid = v["record_id"]
    return {
        "resource_id": resource_id,
        "subject_id": subject_id,
        "version": v["version"],
        "observed_at_ms": v["observed_at_ms"],
        "content_fingerprint": v["content_fingerprint"],
        "record_id": rid if isinstance(rid, str) else str(uuid.UUID(bytes=rid)),
        "provider": c["provider"],
        "principal": c.get("principal", ""),
        "channel": c["channel"],
        "region": c["region"],
        "consent_ref": v["consent_ref"],
        "accepted_at_ms": v["observed_at_ms"] + v["accepted_after_ms"],
        "source_topic": c["source_topic"],
        "source_partition": v["source_partition"],
        "source_offset": v["source_offset"],
        "catalog_version": c["catalog_version"],
        "verification_count": v["verification_count"],
        "payload": c["payload_header"] + v["payload_body"],
    }


@dataclass(frozen=True, slots=True)
class Entry:
    """One record of the view as the digest sees it: named without generation or bucket,
    with the context its value refers to, so equal content has equal digests however the
    view was built (live, replayed, rebuilt) and whatever unused contexts it holds."""

    resource_id: str
    subject_id: str
    value: bytes
    context: bytes


def entry_of(record: Mapping[str, Any]) -> Entry:
    """The view entry of one PoolRecord."""
    value, _, context = encode_record(record)
    return Entry(record["resource_id"], record["subject_id"], value, context)


def entry_digest(entry: Entry) -> int:
    """BLAKE2b-64 of one entry, each part length-prefixed so no two entries run together."""
    h = hashlib.blake2b(digest_size=8)
    for part in (
        entry.resource_id.encode(),
        entry.subject_id.encode(),
        entry.value,
        entry.context,
    ):
        h.update(len(part).to_bytes(4, "big"))
        h.update(part)
    return int.from_bytes(h.digest(), "big")


def digest_entries(entries: Iterable[Entry]) -> int:
    """Order-independent digest of the view's records: the sum of their digests mod 2**64
    (0 for no records). A view holds one value per (resource, subject)."""
    total = 0
    for e in entries:
        total = (total + entry_digest(e)) & _MASK
    return total
