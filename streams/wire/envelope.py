"""The envelope every collected record travels in (统一数据信封), and its Kafka key.

The key is ``resource_id|subject_id``: "one data, one source" (一数一源) means one key per
fact, so Kafka's partitioning and compaction keep each subject's history in order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streams.core.channel import Channel
from streams.core.reasons import Reason
from streams.wire.codec import (
    CodecError,
    Schema,
    SchemaRegistry,
    decode,
    encode,
    fast_values_reader,
)

__all__ = [
    "ENVELOPE_SCHEMA_FILE",
    "Envelope",
    "EnvelopeCodec",
    "EnvelopeValues",
    "record_key",
]

ENVELOPE_SCHEMA_FILE = "envelope.avsc"
KEY_SEPARATOR = "|"


def record_key(resource_id: str, subject_id: str) -> bytes:
    return f"{resource_id}{KEY_SEPARATOR}{subject_id}".encode()


_CHANNEL_OF: dict[Any, Channel] = {c.value: c for c in Channel}


def _channel(value: Any) -> Channel:
    """``Channel(value)``, by one dict lookup for a known value."""
    try:
        return _CHANNEL_OF[value]
    except (KeyError, TypeError):
        return Channel(value)  # the same member, or the same ValueError


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
        return cls(*_values(rec))


#: An envelope's fields in :class:`Envelope`'s order: record_id, resource_id, subject_id,
#: provider, region, channel, observed_at_ms, version, payload, consent_ref.
EnvelopeValues = tuple[str, str, str, str, str, Channel, int, int, bytes, str | None]


def _values(rec: Mapping[str, Any]) -> EnvelopeValues:
    """The fields of :meth:`Envelope.from_avro`, with its errors, without the dataclass."""
    try:
        return (
            rec["record_id"],
            rec["resource_id"],
            rec["subject_id"],
            rec["provider"],
            rec["region"],
            _channel(rec["channel"]),
            rec["observed_at_ms"],
            rec["version"],
            rec["payload"],
            rec.get("consent_ref"),
        )
    except (KeyError, ValueError) as exc:
        raise CodecError(Reason.SCHEMA_MISMATCH, f"envelope: {exc}") from exc


# The fields of envelope.avsc in its order, and _values for a message read with it.
_AVRO_FIELDS = (
    "record_id",
    "resource_id",
    "subject_id",
    "provider",
    "region",
    "channel",
    "consent_ref",
    "observed_at_ms",
    "version",
    "payload",
)


def _values_in_avro_order(
    record_id: str,
    resource_id: str,
    subject_id: str,
    provider: str,
    region: str,
    channel: str,
    consent_ref: str | None,
    observed_at_ms: int,
    version: int,
    payload: bytes,
) -> EnvelopeValues:
    # KeyError for a symbol that is no Channel: the caller then takes the path that reports it
    return (
        record_id,
        resource_id,
        subject_id,
        provider,
        region,
        _CHANNEL_OF[channel],
        observed_at_ms,
        version,
        payload,
        consent_ref,
    )


class EnvelopeCodec:
    """Encodes and decodes envelopes and their payloads through one schema registry."""

    def __init__(self, registry: SchemaRegistry, schema_dir: Path) -> None:
        self.registry = registry
        self.schema = registry.add(Schema.load(schema_dir / ENVELOPE_SCHEMA_FILE))
        # decode_values' fast path: the envelope's values straight from the bytes, no dict
        fields = tuple(f.get("name") for f in self.schema.parsed.get("fields", ()))
        self._read_values = (
            fast_values_reader(self.schema, _values_in_avro_order)
            if fields == _AVRO_FIELDS
            else None
        )

    def encode(self, env: Envelope) -> bytes:
        return encode(self.schema, env.to_avro())

    def decode(self, data: bytes) -> Envelope:
        return Envelope.from_avro(self._decode_record(data, self.registry.writer_of(data)))

    def decode_values(self, data: bytes, writer: Schema) -> EnvelopeValues:
        """``decode(data)``'s fields, as :data:`EnvelopeValues`, with its errors; ``writer``
        is ``registry.writer_of(data)``. For the ingest, which needs no :class:`Envelope`:
        building the frozen dataclass took a tenth of its time per record."""
        # By fingerprint: a worker's registry holds the envelope as read from the schemas
        # topic, an equal schema but not this object.
        if (
            writer.fingerprint == self.schema.fingerprint
            and self._read_values is not None
            and type(data) is bytes
        ):
            try:
                values: EnvelopeValues = self._read_values(data)
                return values
            except Exception:  # the path below decides what it is and reports it
                pass
        return _values(self._decode_record(data, writer))

    def _decode_record(self, data: bytes, writer: Schema) -> Any:
        if writer.name != self.schema.name:
            raise CodecError(Reason.SCHEMA_MISMATCH, f"expected an Envelope, got {writer.name}")
        return decode(data, writer, self.schema)

    def decode_payload(self, env: Envelope, reader: Schema | None = None) -> Any:
        return decode(env.payload, self.registry.writer_of(env.payload), reader)
