"""The envelope every collected record travels in (统一数据信封), and its Kafka key.

The key is ``resource_id|subject_id``: "one data, one source" (一数一源) means one key per
fact, so Kafka's partitioning and compaction keep each subject's history in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from streams.codec import CodecError, Schema, SchemaRegistry, decode, encode
from streams.reasons import Reason

__all__ = ["ENVELOPE_SCHEMA_FILE", "Channel", "Envelope", "EnvelopeCodec", "record_key"]

ENVELOPE_SCHEMA_FILE = "envelope.avsc"
KEY_SEPARATOR = "|"


class Channel(StrEnum):
    """Collection channel, article 17 (直接采集, 委托第三方采集, 协商采集)."""

    DIRECT = "DIRECT"
    COMMISSIONED = "COMMISSIONED"
    AGREEMENT = "AGREEMENT"


def record_key(resource_id: str, subject_id: str) -> bytes:
    return f"{resource_id}{KEY_SEPARATOR}{subject_id}".encode()


@dataclass(frozen=True, slots=True)
class Envelope:
    record_id: str
    resource_id: str
    subject_id: str
    provider: str
    region: str
    channel: Channel
    observed_at_ms: int
    version: int
    payload: bytes
    consent_ref: str | None = None

    @property
    def key(self) -> bytes:
        return record_key(self.resource_id, self.subject_id)

    def to_avro(self) -> dict[str, Any]:
        # Built by hand: dataclasses.asdict deep-copies and was the hot spot of encoding.
        return {
            "record_id": self.record_id,
            "resource_id": self.resource_id,
            "subject_id": self.subject_id,
            "provider": self.provider,
            "region": self.region,
            "channel": self.channel.value,
            "consent_ref": self.consent_ref,
            "observed_at_ms": self.observed_at_ms,
            "version": self.version,
            "payload": self.payload,
        }

    @classmethod
    def from_avro(cls, rec: dict[str, Any]) -> Envelope:
        try:
            return cls(
                record_id=rec["record_id"],
                resource_id=rec["resource_id"],
                subject_id=rec["subject_id"],
                provider=rec["provider"],
                region=rec["region"],
                channel=Channel(rec["channel"]),
                observed_at_ms=rec["observed_at_ms"],
                version=rec["version"],
                payload=rec["payload"],
                consent_ref=rec.get("consent_ref"),
            )
        except (KeyError, ValueError) as exc:
            raise CodecError(Reason.SCHEMA_MISMATCH, f"envelope: {exc}") from exc


class EnvelopeCodec:
    """Encodes and decodes envelopes and their payloads through one schema registry."""

    def __init__(self, registry: SchemaRegistry, schema_dir: Path) -> None:
        self.registry = registry
        self.schema = registry.add(Schema.load(schema_dir / ENVELOPE_SCHEMA_FILE))

    def encode(self, env: Envelope) -> bytes:
        return encode(self.schema, env.to_avro())

    def decode(self, data: bytes) -> Envelope:
        writer = self.registry.writer_of(data)
        if writer.name != self.schema.name:
            raise CodecError(Reason.SCHEMA_MISMATCH, f"expected an Envelope, got {writer.name}")
        return Envelope.from_avro(decode(data, writer, self.schema))

    def encode_payload(self, schema: Schema, record: dict[str, Any]) -> bytes:
        return encode(schema, record)

    def decode_payload(self, env: Envelope, reader: Schema | None = None) -> Any:
        return decode(env.payload, self.registry.writer_of(env.payload), reader)
