"""Avro single-object encoding (Avro 1.8+ spec): ``C3 01`` marker, 8-byte CRC-64-AVRO
fingerprint of the writer schema (little-endian), then the binary body.

Any consumer finds the writer's schema by fingerprint in a :class:`SchemaRegistry`; the
registry is filled from ``.avsc`` files and from the compacted schemas topic. Serializers
have the shape ``(obj, ctx) -> bytes``; every decoding failure is a :class:`CodecError`
carrying a :class:`~streams.reasons.Reason`, never another exception type.
"""

from __future__ import annotations

import io
import json
import struct
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import to_parsing_canonical_form

from streams.reasons import Reason

__all__ = [
    "MARKER",
    "AvroDeserializer",
    "AvroSerializer",
    "CodecError",
    "Schema",
    "SchemaRegistry",
    "decode",
    "encode",
    "fingerprint64",
    "read_fingerprint",
]

MARKER = b"\xc3\x01"
HEADER_LEN = 10
_EMPTY = 0xC15D213AA4D7A795


def _table() -> tuple[int, ...]:
    out = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY & -(fp & 1))
        out.append(fp)
    return tuple(out)


_FP_TABLE = _table()


def fingerprint64(data: bytes) -> int:
    """CRC-64-AVRO (Rabin) fingerprint of a schema's parsing canonical form."""
    fp = _EMPTY
    for b in data:
        fp = (fp >> 8) ^ _FP_TABLE[(fp ^ b) & 0xFF]
    return fp


class CodecError(Exception):
    """Bytes that cannot be read as (or a record that cannot be written to) Avro."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail[:1000]


@dataclass(frozen=True, slots=True)
class Schema:
    """A parsed schema with its fingerprint; ``header`` is the 10-byte single-object prefix."""

    name: str
    canonical: str
    parsed: Any  # parsed with fastavro's write hint, so reads and writes skip re-parsing
    fingerprint: int
    header: bytes

    @classmethod
    def parse(cls, schema: str | Mapping[str, Any]) -> Schema:
        try:
            raw = json.loads(schema) if isinstance(schema, str) else dict(schema)
            parsed = fastavro.parse_schema(raw)
            canonical = to_parsing_canonical_form(fastavro.parse_schema(raw, _write_hint=False))
        except Exception as exc:  # fastavro raises several types for bad schemas
            raise CodecError(Reason.INVALID_SCHEMA, str(exc)) from exc
        name = str(parsed.get("name", parsed.get("type", "?"))) if isinstance(parsed, dict) else "?"
        fp = fingerprint64(canonical.encode())
        return cls(name, canonical, parsed, fp, MARKER + struct.pack("<Q", fp))

    @classmethod
    def load(cls, path: Path) -> Schema:
        return cls.parse(path.read_text(encoding="utf-8"))


def encode(schema: Schema, record: Mapping[str, Any]) -> bytes:
    """Single-object encode ``record`` with ``schema``."""
    buf = io.BytesIO()
    buf.write(schema.header)
    try:
        fastavro.schemaless_writer(buf, schema.parsed, record)
    except Exception as exc:  # type and missing-field errors come as several types
        raise CodecError(Reason.WRONG_TYPE, f"{schema.name}: {exc}") from exc
    return buf.getvalue()


def read_fingerprint(data: bytes) -> int:
    """The writer fingerprint in a single-object encoded message."""
    if len(data) < HEADER_LEN or data[:2] != MARKER:
        raise CodecError(Reason.MALFORMED, "not Avro single-object encoding (marker C3 01 missing)")
    fp: int = struct.unpack_from("<Q", data, 2)[0]
    return fp


def decode(data: bytes, writer: Schema, reader: Schema | None = None) -> Any:
    """Decode a single-object encoded message written with ``writer``.

    With ``reader`` the record is resolved to the reader's schema (Avro schema resolution),
    so a writer that lacks a required field or uses another type fails with SCHEMA_MISMATCH.
    """
    fo = io.BytesIO(data)
    fo.seek(HEADER_LEN)
    resolve = reader is not None and reader.fingerprint != writer.fingerprint
    try:
        if resolve:
            assert reader is not None
            out = fastavro.schemaless_reader(fo, writer.parsed, reader.parsed)
        else:
            out = fastavro.schemaless_reader(fo, writer.parsed, None)
    except fastavro.read.SchemaResolutionError as exc:
        raise CodecError(Reason.SCHEMA_MISMATCH, f"{writer.name}: {exc}") from exc
    except Exception as exc:  # truncated or corrupt bodies raise many types
        raise CodecError(Reason.UNDECODABLE, f"{writer.name}: {type(exc).__name__}: {exc}") from exc
    if fo.tell() != len(data):
        raise CodecError(
            Reason.UNDECODABLE, f"{writer.name}: {len(data) - fo.tell()} trailing bytes"
        )
    return out


class SchemaRegistry:
    """Fingerprint → schema. Thread-safe for one writer and many readers."""

    def __init__(self, schemas: Iterable[Schema] = ()) -> None:
        self._by_fp: dict[int, Schema] = {}
        self._by_name: dict[str, Schema] = {}
        self._lock = threading.Lock()
        for s in schemas:
            self.add(s)

    def add(self, schema: Schema) -> Schema:
        with self._lock:
            self._by_fp[schema.fingerprint] = schema
            self._by_name.setdefault(schema.name, schema)
        return schema

    def get(self, fp: int) -> Schema | None:
        return self._by_fp.get(fp)

    def by_name(self, name: str) -> Schema:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no schema named {name!r}; known: {sorted(self._by_name)}") from None

    def __contains__(self, fp: object) -> bool:
        return fp in self._by_fp

    def __len__(self) -> int:
        return len(self._by_fp)

    def __iter__(self) -> Any:
        return iter(list(self._by_fp.values()))

    def writer_of(self, data: bytes) -> Schema:
        fp = read_fingerprint(data)
        schema = self._by_fp.get(fp)
        if schema is None:
            raise CodecError(Reason.UNKNOWN_SCHEMA, f"no schema with fingerprint {fp:016x}")
        return schema

    @classmethod
    def from_dir(cls, root: Path) -> SchemaRegistry:
        """Every ``.avsc`` below ``root``."""
        return cls(Schema.load(p) for p in sorted(root.rglob("*.avsc")))


class AvroSerializer:
    """``(obj, ctx) -> bytes`` serializer for one schema."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema

    def __call__(self, obj: Mapping[str, Any], ctx: object = None) -> bytes:
        return encode(self.schema, obj)


class AvroDeserializer:
    """``(data, ctx) -> obj`` deserializer resolving any known writer to ``reader``."""

    def __init__(self, registry: SchemaRegistry, reader: Schema | None = None) -> None:
        self.registry = registry
        self.reader = reader

    def __call__(self, data: bytes, ctx: object = None) -> Any:
        return decode(data, self.registry.writer_of(data), self.reader)
