"""Avro single-object encoding (Avro 1.8+ spec): ``C3 01`` marker, 8-byte CRC-64-AVRO
fingerprint of the writer schema (little-endian), then the binary body.

Any consumer finds the writer's schema by fingerprint in a :class:`SchemaRegistry`; the
registry is filled from ``.avsc`` files and from the compacted schemas topic. Every decoding
failure is a :class:`CodecError` carrying a :class:`~streams.core.reasons.Reason`, never
another exception type.
"""

from __future__ import annotations

import io
import json
import re
import struct
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import to_parsing_canonical_form

from streams.core.reasons import Reason

__all__ = [
    "MARKER",
    "CodecError",
    "Schema",
    "SchemaRegistry",
    "decode",
    "encode",
    "fast_values_reader",
    "fingerprint64",
    "read_fingerprint",
    "values_writer",
]

MARKER = b"\xc3\x01"
HEADER_LEN = 10
_EMPTY = 0xC15D213AA4D7A795
_FINGERPRINT_AT = struct.Struct("<Q").unpack_from
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


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
    # The fast reader of this schema's records (see _FastReader): None until the first
    # decode builds it, False for a schema it does not cover. Not part of the value.
    _fast_reader: Callable[[bytes], Any] | bool | None = field(
        default=None, init=False, repr=False, compare=False
    )
    # Likewise the fast writer (see _FastWriter).
    _fast_writer: Callable[[Mapping[str, Any]], bytes] | bool | None = field(
        default=None, init=False, repr=False, compare=False
    )

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
    """Single-object encode ``record`` with ``schema``.

    A flat record whose values have exactly the schema's types is written by
    :class:`_FastWriter`; anything else (a missing field with a default, a bool for a long,
    a wrong type) by fastavro, which writes or reports it as ever."""
    fast = schema._fast_writer
    if fast is None:
        fast = _FastWriter.build(schema)
    if fast is not False:
        try:
            return fast(record)  # type: ignore[operator]
        except Exception:  # fastavro's to write or to report
            pass
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
    fp: int = _FINGERPRINT_AT(data, 2)[0]
    return fp


def decode(data: bytes, writer: Schema, reader: Schema | None = None) -> Any:
    """Decode a single-object encoded message written with ``writer``.

    With ``reader`` the record is resolved to the reader's schema (Avro schema resolution),
    so a writer that lacks a required field or uses another type fails with SCHEMA_MISMATCH.

    Without resolution a flat record (primitives, enums, unions of those: every payload and
    the envelope) is read by :class:`_FastReader`; what it does not read whole, fastavro
    reads, and reports as ever.
    """
    if (reader is None or reader.fingerprint == writer.fingerprint) and type(data) is bytes:
        # No resolution: the fast reader, if it covers the writer and reads the message whole.
        fast = writer._fast_reader
        if fast is None:
            fast = _FastReader.build(writer)
        if callable(fast):
            try:
                return fast(data)
            except Exception:  # anything unusual is fastavro's to read and to report
                pass
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
        # fastavro names its buffer object ("<_io.BytesIO object at 0x7f…>"): drop the
        # address so the same bytes always get the same rejected record.
        detail = _ADDRESS.sub("", str(exc))
        raise CodecError(
            Reason.UNDECODABLE, f"{writer.name}: {type(exc).__name__}: {detail}"
        ) from exc
    if fo.tell() != len(data):
        raise CodecError(
            Reason.UNDECODABLE, f"{writer.name}: {len(data) - fo.tell()} trailing bytes"
        )
    return out


class _Bail(Exception):
    """Internal: the fast reader leaves this message to fastavro."""


# Source that reads the varint at p into b, still zig-zag encoded, and moves p past it. At
# most 9 bytes, so b < 2**63, which fastavro's C reader (64-bit arithmetic) reads the same.
_VARINT = [
    "b = d[p]",
    "p += 1",
    "if b & 0x80:",
    "    n = b & 0x7F",
    "    s = 7",
    "    b = d[p]",
    "    p += 1",
    "    while b & 0x80:",
    "        n |= (b & 0x7F) << s",
    "        s += 7",
    "        if s > 56:",
    "            raise _Bail",
    "        b = d[p]",
    "        p += 1",
    "    b = n | (b << s)",
]


class _FastReader:
    """Builds a reader for one record schema whose fields are primitives, enums or unions of
    those: the payloads and the envelope. It is generated Python source (one straight run of
    statements per field), about twice as fast as fastavro's schemaless reader, which makes a
    method call per byte of every varint.

    It returns exactly what ``fastavro.schemaless_reader(fo, writer.parsed, None)`` returns for
    a message it reads to the last byte, and raises for anything else: a short or trailing
    body, a negative length, a union branch or enum index out of range, a varint over 9
    bytes, a boolean byte other than 0 or 1, bytes that are not UTF-8 where a string is due.
    :func:`decode` then reads the message with fastavro, which decides and reports as ever.
    """

    PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
    MAX_BRANCHES = 63  # a union index below 64 is one varint byte

    def __init__(self) -> None:
        self.consts: dict[str, Any] = {}

    @classmethod
    def build(cls, schema: Schema) -> Callable[[bytes], Any] | bool:
        """The reader of ``schema``'s records, or False; kept on the schema."""
        try:
            made: Callable[[bytes], Any] | bool = cls().compile(schema.parsed) or False
        except Exception:  # an odd schema is simply not covered
            made = False
        object.__setattr__(schema, "_fast_reader", made)
        return made

    def compile(self, parsed: Any, make: Callable[..., Any] | None = None) -> Any:
        """The reader of ``parsed`` (None if not covered): it returns the record as a dict, or
        with ``make`` what ``make`` returns given the field values in schema order."""
        if not isinstance(parsed, dict) or parsed.get("type") != "record":
            return None
        if "logicalType" in parsed:
            return None
        lines = ["def read(d):", f"    p = {HEADER_LEN}"]
        values = []
        for i, f in enumerate(parsed["fields"]):
            if not isinstance(f["name"], str):
                return None
            body = self.field(f["type"], f"v{i}")
            if body is None:
                return None
            lines += ["    " + line for line in body]
            values.append(f"{f['name']!r}: v{i}")
        lines += ["    if p != len(d):", "        raise _Bail"]
        if make is None:
            lines.append("    return {" + ", ".join(values) + "}")
        else:
            lines.append("    return _make(" + ", ".join(f"v{i}" for i in range(len(values))) + ")")
        namespace = {"_Bail": _Bail, "_make": make, **self.consts}
        exec("\n".join(lines), namespace)  # source built above from fixed pieces
        return namespace["read"]

    def field(self, t: Any, v: str) -> list[str] | None:
        if isinstance(t, list):
            if not t or len(t) > self.MAX_BRANCHES:
                return None
            out = ["u = d[p]", "p += 1"]
            for i, branch in enumerate(t):
                if isinstance(branch, list):
                    return None
                body = self.field(branch, v)
                if body is None:
                    return None
                out.append(f"{'if' if i == 0 else 'elif'} u == {2 * i}:")
                out += ["    " + line for line in body or ["pass"]]
            return [*out, "else:", "    raise _Bail"]
        if isinstance(t, dict):
            symbols = t.get("symbols")
            if t.get("type") != "enum" or "logicalType" in t or not isinstance(symbols, list):
                return None
            if not all(isinstance(s, str) for s in symbols):
                return None
            const = f"_symbols{len(self.consts)}"
            self.consts[const] = tuple(symbols)
            return [
                *_VARINT,
                f"if b & 1 or b >= {2 * len(symbols)}:",  # a negative index, or past the end
                "    raise _Bail",
                f"{v} = {const}[b >> 1]",
            ]
        if t not in self.PRIMITIVES:
            return None  # a named type, or something newer
        if t == "null":
            return [f"{v} = None"]
        if t == "boolean":
            return ["b = d[p]", "p += 1", "if b > 1:", "    raise _Bail", f"{v} = b == 1"]
        if t in ("int", "long"):
            return [*_VARINT, f"{v} = (b >> 1) ^ -(b & 1)"]
        if t in ("float", "double"):
            size, const = (4, "_float") if t == "float" else (8, "_double")
            self.consts[const] = struct.Struct("<f" if t == "float" else "<d").unpack_from
            return [f"{v} = {const}(d, p)[0]", f"p += {size}"]  # struct.error if short
        return [  # bytes or string: a length, then as many bytes
            "b = d[p]",
            "p += 1",
            "if b & 0x81:",  # not one byte of an even (non-negative) number: the long way
            *("    " + line for line in _VARINT[2:]),
            "    if b & 1:",  # a negative length: fastavro would read to the end
            "        raise _Bail",
            "e = p + (b >> 1)",
            f"{v} = d[p:e]" + (".decode()" if t == "string" else ""),
            "p = e",  # past the end if the slice was short: the next read or the last check fails
        ]


def _varint(n: int) -> bytes:
    """A non-negative number (zig-zag already applied) as an Avro varint."""
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


#: the one-byte varints, by value
_ONE_BYTE = tuple(bytes([i]) for i in range(0x80))


class _FastWriter:
    """Builds a writer for one record schema whose fields are primitives, fixed, enums, or a
    union of null and one primitive: the envelope, the pool records and the platform's own
    outcome records. Generated Python source like :class:`_FastReader`, about twice as fast
    as ``fastavro.schemaless_writer``, which the ingest called for every record.

    It writes exactly the bytes fastavro writes for a record whose every field is present
    with exactly its Avro type (``str`` for string, ``int`` in range for int and long,
    ``bytes`` of the size for fixed, a symbol for an enum, ...), and raises for anything
    else, which :func:`encode` then leaves to fastavro.
    """

    LONG = (-(2**63), 2**63 - 1)
    INT = (-(2**31), 2**31 - 1)

    def __init__(self) -> None:
        self.consts: dict[str, Any] = {}

    @classmethod
    def build(cls, schema: Schema) -> Callable[[Mapping[str, Any]], bytes] | bool:
        """The writer of ``schema``'s records, or False; kept on the schema."""
        try:
            made: Callable[[Mapping[str, Any]], bytes] | bool = cls().compile(schema) or False
        except Exception:  # an odd schema is simply not covered
            made = False
        object.__setattr__(schema, "_fast_writer", made)
        return made

    def compile(self, schema: Schema, positional: bool = False) -> Callable[..., bytes] | None:
        """The writer of a record given as a mapping, or (``positional``) as its field
        values in schema order; None if not covered."""
        parsed = schema.parsed
        if not isinstance(parsed, dict) or parsed.get("type") != "record":
            return None
        if "logicalType" in parsed:
            return None
        fields = parsed["fields"]
        params = ", ".join(f"v{i}" for i in range(len(fields))) if positional else "r"
        lines = [f"def write({params}):", "    o = [_header]", "    a = o.append"]
        for i, f in enumerate(fields):
            if not isinstance(f["name"], str):
                return None
            body = self.field(f["type"])
            if body is None:
                return None
            lines += [f"    v = v{i}" if positional else f"    v = r[{f['name']!r}]"]
            lines += ["    " + line for line in body]
        lines.append('    return b"".join(o)')
        namespace = {
            "_Bail": _Bail,
            "_header": schema.header,
            "_one": _ONE_BYTE,
            "_varint": _varint,
            **self.consts,
        }
        exec("\n".join(lines), namespace)  # source built above from fixed pieces
        made: Callable[[Mapping[str, Any]], bytes] = namespace["write"]
        return made

    @staticmethod
    def _number(zigzag: str) -> list[str]:
        return [f"n = {zigzag}", "a(_one[n] if n < 0x80 else _varint(n))"]

    def field(self, t: Any) -> list[str] | None:
        if isinstance(t, list):
            # null and one other primitive: the branch follows from the value's type alone
            if len(t) != 2 or "null" not in t or not all(isinstance(b, str) for b in t):
                return None
            other = t[1] if t[0] == "null" else t[0]
            body = self.field(other)
            if body is None or other == "null":
                return None
            null, value = (b"\x00", b"\x02") if t[0] == "null" else (b"\x02", b"\x00")
            return [
                "if v is None:",
                f"    a({null!r})",
                "else:",
                f"    a({value!r})",
                *("    " + line for line in body),
            ]
        if isinstance(t, dict):
            kind = t.get("type")
            if "logicalType" in t:
                return None
            if kind == "fixed" and isinstance(t.get("size"), int):
                return [
                    f"if type(v) is not bytes or len(v) != {t['size']}:",
                    "    raise _Bail",
                    "a(v)",
                ]
            symbols = t.get("symbols")
            if kind != "enum" or not isinstance(symbols, list):
                return None
            if not all(isinstance(s, str) for s in symbols):
                return None
            const = f"_enum{len(self.consts)}"
            self.consts[const] = {s: _varint(2 * i) for i, s in enumerate(symbols)}
            return [f"a({const}[v])"]  # KeyError (or TypeError) for anything but a symbol
        if t == "null":
            return ["if v is not None:", "    raise _Bail"]
        if t == "boolean":
            return [
                "if v is True:",
                '    a(b"\\x01")',
                "elif v is False:",
                '    a(b"\\x00")',
                "else:",
                "    raise _Bail",
            ]
        if t in ("int", "long"):
            low, high = self.INT if t == "int" else self.LONG
            return [
                f"if type(v) is not int or not {low} <= v <= {high}:",
                "    raise _Bail",
                *self._number("(v << 1) ^ (v >> 63)"),
            ]
        if t in ("float", "double"):
            const = "_float" if t == "float" else "_double"
            self.consts[const] = struct.Struct("<f" if t == "float" else "<d").pack
            return ["if type(v) is not float:", "    raise _Bail", f"a({const}(v))"]
        if t == "bytes":
            return [
                "if type(v) is not bytes:",
                "    raise _Bail",
                *self._number("len(v) << 1"),
                "a(v)",
            ]
        if t == "string":
            return [
                "if type(v) is not str:",
                "    raise _Bail",
                "v = v.encode()",  # UnicodeEncodeError for a lone surrogate: fastavro's to report
                *self._number("len(v) << 1"),
                "a(v)",
            ]
        return None  # a named type, or something newer


def values_writer(schema: Schema, fields: Sequence[str]) -> Callable[..., bytes]:
    """``write(*values)``: ``encode(schema, dict(zip(fields, values)))`` without building the
    record. ``fields`` are the schema's field names in its order (ValueError otherwise: a
    reordered schema file must not shift values into other fields).

    The fast writer's speed for values of exactly their Avro types; any other value is
    encoded (or reported, as :class:`CodecError`) by :func:`encode`."""
    names = tuple(f["name"] for f in schema.parsed["fields"])
    if names != tuple(fields):
        raise ValueError(f"{schema.name} has the fields {names}, not {tuple(fields)}")
    try:
        fast = _FastWriter().compile(schema, positional=True)
    except Exception:  # an odd schema is simply not covered
        fast = None

    def write(*values: Any) -> bytes:
        if fast is not None:
            try:
                return fast(*values)
            except Exception:  # encode's to write or to report
                pass
        return encode(schema, dict(zip(names, values, strict=True)))

    return write


def fast_values_reader(schema: Schema, make: Callable[..., Any]) -> Callable[[bytes], Any] | None:
    """A fast reader of messages written with ``schema`` that returns ``make(*values)``, the
    field values in schema order; None for a schema the fast reader does not cover.

    It raises (any exception) for every message it does not read whole, and then only
    ``decode(data, schema)`` tells what the message holds or why it cannot be read.
    """
    try:
        reader: Callable[[bytes], Any] | None = _FastReader().compile(schema.parsed, make)
    except Exception:  # an odd schema is simply not covered
        return None
    return reader


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
