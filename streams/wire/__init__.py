"""The wire format: Avro single-object codec and its fast reader, the envelope every
record travels in, and Avro schema compatibility.
"""

from __future__ import annotations

from streams.wire.codec import (
    MARKER,
    CodecError,
    Schema,
    SchemaRegistry,
    decode,
    encode,
    fast_values_reader,
    fingerprint64,
    read_fingerprint,
    values_writer,
)
from streams.wire.compat import PROMOTIONS, check_backward
from streams.wire.envelope import (
    ENVELOPE_SCHEMA_FILE,
    Envelope,
    EnvelopeCodec,
    EnvelopeValues,
    record_key,
)

__all__ = [
    "ENVELOPE_SCHEMA_FILE",
    "MARKER",
    "PROMOTIONS",
    "CodecError",
    "Envelope",
    "EnvelopeCodec",
    "EnvelopeValues",
    "Schema",
    "SchemaRegistry",
    "check_backward",
    "decode",
    "encode",
    "fast_values_reader",
    "fingerprint64",
    "read_fingerprint",
    "record_key",
    "values_writer",
]
