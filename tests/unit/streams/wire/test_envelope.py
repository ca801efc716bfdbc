"""The envelope codec: decode and the ingest's decode_values agree, fast path or not."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from streams.core.channel import Channel
from streams.core.reasons import Reason
from streams.wire.codec import CodecError, Schema, SchemaRegistry, encode
from streams.wire.envelope import ENVELOPE_SCHEMA_FILE, Envelope, EnvelopeCodec

SCHEMAS = Path(__file__).resolve().parents[4] / "schemas" / "avro"


def _envelope(**over: Any) -> Envelope:
    base: dict[str, Any] = {
        "record_id": "r-1",
        "resource_id": "population.resident",
        "subject_id": "11010519491231002X",
        "provider": "220000-GA",
        "region": "220000",
        "channel": Channel.COMMISSIONED,
        "observed_at_ms": 1_767_225_600_000,
        "version": 7,
        "payload": b"\xc3\x01" + b"\x00" * 40,
        "consent_ref": None,
    }
    base.update(over)
    return Envelope(**base)


def _codec(tmp_path: Path, edit: Any = None) -> EnvelopeCodec:
    raw = json.loads((SCHEMAS / ENVELOPE_SCHEMA_FILE).read_text(encoding="utf-8"))
    if edit is not None:
        edit(raw)
    (tmp_path / ENVELOPE_SCHEMA_FILE).write_text(json.dumps(raw), encoding="utf-8")
    return EnvelopeCodec(SchemaRegistry(), tmp_path)


def _both(codec: EnvelopeCodec, data: bytes) -> tuple[Any, Any]:
    def run(f: Any) -> Any:
        try:
            return f()
        except CodecError as err:
            return (err.reason, err.detail)

    values = run(lambda: codec.decode_values(data, codec.registry.writer_of(data)))
    env = run(lambda: codec.decode(data))
    return values, env if isinstance(env, tuple) else dataclasses.astuple(env)


@pytest.mark.parametrize("consent_ref", [None, "", "consent-42"])
def test_decode_values_are_the_decoded_envelope_fields(tmp_path: Path, consent_ref: Any) -> None:
    codec = _codec(tmp_path)
    env = _envelope(consent_ref=consent_ref, subject_id="长春" * 40)
    data = codec.encode(env)
    values, decoded = _both(codec, data)
    assert values == decoded == dataclasses.astuple(env)
    assert values[5] is Channel.COMMISSIONED


def test_broken_bytes_fail_alike(tmp_path: Path) -> None:
    codec = _codec(tmp_path)
    data = codec.encode(_envelope())
    for broken in (data[:-3], data + b"\x00", data[:10] + b"\x01" + data[11:]):
        values, decoded = _both(codec, broken)
        assert values == decoded
        assert values[0] is Reason.UNDECODABLE


def test_a_symbol_that_is_no_channel_is_a_schema_mismatch(tmp_path: Path) -> None:
    def add_symbol(raw: dict[str, Any]) -> None:
        channel = next(f for f in raw["fields"] if f["name"] == "channel")
        channel["type"]["symbols"].append("PIGEON")

    codec = _codec(tmp_path, add_symbol)
    raw = _envelope().to_avro()
    data = encode(codec.schema, {**raw, "channel": "PIGEON"})
    values, decoded = _both(codec, data)
    assert (
        values == decoded == (Reason.SCHEMA_MISMATCH, "envelope: 'PIGEON' is not a valid Channel")
    )
    # the other symbols still read, on the fast path
    assert _both(codec, encode(codec.schema, raw))[0][5] is Channel.COMMISSIONED


def test_another_writer_of_the_envelope_is_resolved(tmp_path: Path) -> None:
    codec = _codec(tmp_path)
    newer = json.loads((SCHEMAS / ENVELOPE_SCHEMA_FILE).read_text(encoding="utf-8"))
    newer["fields"].append({"name": "trace", "type": "string", "default": ""})
    writer = codec.registry.add(Schema.parse(newer))
    data = encode(writer, {**_envelope().to_avro(), "trace": "t-1"})
    values, decoded = _both(codec, data)
    assert values == decoded == dataclasses.astuple(_envelope())


def test_a_payload_schema_is_not_an_envelope(tmp_path: Path) -> None:
    codec = _codec(tmp_path)
    point = codec.registry.add(
        Schema.parse({"type": "record", "name": "Point", "fields": [{"name": "x", "type": "int"}]})
    )
    values, decoded = _both(codec, encode(point, {"x": 1}))
    assert values == decoded == (Reason.SCHEMA_MISMATCH, "expected an Envelope, got Point")


def test_an_equal_envelope_schema_read_elsewhere_takes_the_fast_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A worker's registry holds the envelope schema as read from the schemas topic: an equal
    # Schema, another object. Its values must still come straight from the bytes.
    codec = _codec(tmp_path)
    data = codec.encode(_envelope())
    same = Schema.parse(codec.schema.canonical)
    assert same is not codec.schema and same.fingerprint == codec.schema.fingerprint

    def slow(*_a: Any) -> Any:
        raise AssertionError("decoded as a dict, not from the bytes")

    monkeypatch.setattr(codec, "_decode_record", slow)
    assert codec.decode_values(data, same) == dataclasses.astuple(_envelope())
