import io
import json
import math
import random
import re
import struct
from pathlib import Path
from typing import Any

import fastavro
import pytest
from fastavro.schema import fingerprint, to_parsing_canonical_form

from streams.core.reasons import Reason
from streams.wire.codec import (
    CodecError,
    Schema,
    SchemaRegistry,
    _FastWriter,
    decode,
    encode,
    fingerprint64,
)

POINT = {
    "type": "record",
    "name": "Point",
    "namespace": "t",
    "fields": [{"name": "x", "type": "int"}, {"name": "label", "type": "string"}],
}


def test_fingerprint_matches_the_avro_reference_implementation():
    s = Schema.parse(POINT)
    expected = int(fingerprint(to_parsing_canonical_form(s.parsed), "CRC-64-AVRO"), 16)
    # fastavro prints the fingerprint as the spec's little-endian byte string in hex.
    assert s.fingerprint == int.from_bytes(expected.to_bytes(8, "big"), "little")
    # Spec vector: the fingerprint of the schema "null".
    assert fingerprint64(b'"null"') == 0x63DD24E7CC258F8A


def test_single_object_encoding_layout_and_round_trip():
    s = Schema.parse(POINT)
    data = encode(s, {"x": 3, "label": "吉林"})
    assert data[:2] == b"\xc3\x01"
    assert struct.unpack_from("<Q", data, 2)[0] == s.fingerprint
    assert decode(data, s) == {"x": 3, "label": "吉林"}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", Reason.MALFORMED),
        (b'{"json": true}', Reason.MALFORMED),
        (b"\xc3\x01" + b"\x00" * 8 + b"\x02", Reason.UNKNOWN_SCHEMA),
    ],
)
def test_unreadable_bytes_get_a_reason(data, reason):
    with pytest.raises(CodecError) as err:
        SchemaRegistry([Schema.parse(POINT)]).writer_of(data)
    assert err.value.reason is reason


def test_truncated_and_trailing_bytes_are_undecodable():
    s = Schema.parse(POINT)
    data = encode(s, {"x": 3, "label": "hello"})
    for broken in (data[:-2], data + b"\x00"):
        with pytest.raises(CodecError) as err:
            decode(broken, s)
        assert err.value.reason is Reason.UNDECODABLE


def test_resolution_to_a_reader_needing_a_missing_field_is_a_schema_mismatch():
    writer = Schema.parse({**POINT, "fields": POINT["fields"][:1]})
    data = encode(writer, {"x": 1})
    with pytest.raises(CodecError) as err:
        decode(data, writer, Schema.parse(POINT))
    assert err.value.reason is Reason.SCHEMA_MISMATCH


def test_resolution_of_a_changed_type_is_a_schema_mismatch():
    writer = Schema.parse(
        {**POINT, "fields": [{"name": "x", "type": "string"}, {"name": "label", "type": "string"}]}
    )
    data = encode(writer, {"x": "one", "label": "a"})
    with pytest.raises(CodecError) as err:
        decode(data, writer, Schema.parse(POINT))
    assert err.value.reason is Reason.SCHEMA_MISMATCH


def test_encoding_a_wrong_type_is_refused():
    with pytest.raises(CodecError) as err:
        encode(Schema.parse(POINT), {"x": "not an int", "label": "a"})
    assert err.value.reason is Reason.WRONG_TYPE


def test_invalid_schema_is_refused():
    with pytest.raises(CodecError) as err:
        Schema.parse(json.dumps({"type": "record", "name": "X", "fields": [{"name": "a"}]}))
    assert err.value.reason is Reason.INVALID_SCHEMA


def test_registry_loads_every_project_schema(tmp_path):
    (tmp_path / "p.avsc").write_text(json.dumps(POINT))
    reg = SchemaRegistry.from_dir(tmp_path)
    assert len(reg) == 1
    assert reg.by_name("t.Point").fingerprint == Schema.parse(POINT).fingerprint


# ---- the fast reader returns what fastavro returns, or leaves the message to it ---------------

EVERY_TYPE = {
    "type": "record",
    "name": "Every",
    "namespace": "t",
    "fields": [
        {"name": "n", "type": "null"},
        {"name": "b", "type": "boolean"},
        {"name": "i", "type": "int"},
        {"name": "l", "type": "long"},
        {"name": "f", "type": "float"},
        {"name": "d", "type": "double"},
        {"name": "y", "type": "bytes"},
        {"name": "s", "type": "string"},
        {
            "name": "e",
            "type": {"type": "enum", "name": "E", "symbols": [f"S{i}" for i in range(70)]},
        },
        {"name": "o", "type": ["null", "string"]},
        {"name": "u", "type": ["string", "long", "null", "boolean", "double", "bytes"]},
    ],
}


def _every(rng: random.Random) -> dict[str, Any]:
    def text() -> str:
        return "".join(rng.choice("a汉\x00😀 ") for _ in range(rng.choice([0, 5, 63, 64, 300])))

    return {
        "n": None,
        "b": rng.random() < 0.5,
        "i": rng.choice([0, -1, 63, -64, 64, 2**31 - 1, -(2**31)]),
        "l": rng.choice([0, 2**40, -(2**62), 2**62 - 1, 1_767_225_600_000]),
        "f": rng.choice([0.0, 1.5, math.inf]),
        "d": rng.choice([-0.0, 1e308, -math.inf, rng.random()]),
        "y": bytes(rng.randrange(256) for _ in range(rng.choice([0, 3, 70]))),
        "s": text(),
        "e": f"S{rng.randrange(70)}",
        "o": rng.choice([None, text()]),
        "u": rng.choice([None, text(), -5, True, 2.5, b"\x01"]),
    }


def _same(a: Any, b: Any) -> bool:
    # floats by their bits, so -0.0 and NaN compare too
    if isinstance(a, float) and isinstance(b, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def test_fast_reader_returns_what_fastavro_returns():
    s = Schema.parse(EVERY_TYPE)
    rng = random.Random(7)
    for _ in range(2000):
        data = encode(s, _every(rng))
        out = decode(data, s)
        assert callable(s._fast_reader)  # the fast path was taken
        assert _same(out, fastavro.schemaless_reader(io.BytesIO(data[10:]), s.parsed, None))


def _outcome(data: bytes | bytearray, s: Schema) -> tuple[Any, ...]:
    try:
        return ("ok", decode(data, s))
    except CodecError as err:  # messages of fastavro's errors name a BytesIO by its address
        return ("error", err.reason, re.sub(r" at 0x[0-9a-f]+>", ">", err.detail))


def test_fast_reader_leaves_broken_messages_to_fastavro():
    # bytearray input always takes fastavro's path: broken bytes must end the same either way
    s = Schema.parse(EVERY_TYPE)
    rng = random.Random(8)
    for _ in range(3000):
        data = bytearray(encode(s, _every(rng)))
        kind = rng.randrange(4)
        if kind == 0:
            for _ in range(rng.randint(1, 3)):
                data[rng.randrange(10, len(data))] = rng.choice([0x01, 0x03, 0x80, 0xFF, 0x7F])
        elif kind == 1:
            data = data[: rng.randrange(len(data))]
        elif kind == 2:
            data += b"\x00"
        else:
            data[10:10] = b"\xff" * rng.randint(1, 12)  # an overlong varint
        expected = _outcome(bytearray(data), s)
        got = _outcome(bytes(data), s)
        if expected[0] == "ok" and got[0] == "ok":
            assert _same(got[1], expected[1])
        else:
            assert got == expected


def test_a_schema_the_fast_reader_does_not_cover_still_decodes():
    nested = {
        "type": "record",
        "name": "Outer",
        "namespace": "t",
        "fields": [
            {"name": "p", "type": POINT},
            {"name": "tags", "type": {"type": "array", "items": "string"}},
        ],
    }
    s = Schema.parse(nested)
    rec = {"p": {"x": 1, "label": "a"}, "tags": ["x", "y"]}
    assert decode(encode(s, rec), s) == rec
    assert s._fast_reader is False


def test_undecodable_detail_is_the_same_for_the_same_bytes():
    s = Schema.parse({"type": "record", "name": "D", "fields": [{"name": "x", "type": "double"}]})
    broken = encode(s, {"x": 1.5})[:-3]
    details = set()
    for _ in range(3):
        with pytest.raises(CodecError) as err:
            decode(broken, s)
        assert err.value.reason is Reason.UNDECODABLE
        assert " at 0x" not in err.value.detail
        details.add(err.value.detail)
    assert len(details) == 1


# ---- the fast writer writes what fastavro writes, or leaves the record to it ------------------

WRITABLE = {
    "type": "record",
    "name": "Writable",
    "namespace": "t",
    "fields": [
        *(f for f in EVERY_TYPE["fields"] if f["name"] != "u"),
        {"name": "x", "type": {"type": "fixed", "name": "X", "size": 8}},
        {"name": "r", "type": ["string", "null"]},
        {"name": "dl", "type": ["null", "long"], "default": None},
        {"name": "ds", "type": "string", "default": "none"},
    ],
}


def _writable(rng: random.Random) -> dict[str, Any]:
    rec = _every(rng)
    del rec["u"]
    rec["x"] = bytes(rng.randrange(256) for _ in range(8))
    rec["r"] = rng.choice([None, "r", ""])
    rec["dl"] = rng.choice([None, 0, -(2**63), 2**63 - 1, 300])
    rec["ds"] = rng.choice(["", "é", "x" * 200])
    return rec


def _fastavro_encode(s: Schema, rec: Any) -> tuple[Any, ...]:
    buf = io.BytesIO()
    try:
        fastavro.schemaless_writer(buf, s.parsed, rec)
    except Exception:
        return ("error",)
    return ("ok", s.header + buf.getvalue())


def _encoded(s: Schema, rec: Any) -> tuple[Any, ...]:
    try:
        return ("ok", encode(s, rec))
    except CodecError as err:
        assert err.reason is Reason.WRONG_TYPE
        return ("error",)


def test_fast_writer_writes_what_fastavro_writes():
    s = Schema.parse({**WRITABLE, "fields": [f for f in WRITABLE["fields"] if f["name"] != "e"]})
    t = Schema.parse({**WRITABLE, "name": "WithEnum"})
    rng = random.Random(9)
    for _ in range(3000):
        rec = _writable(rng)
        assert encode(t, rec) == _fastavro_encode(t, rec)[1]
        del rec["e"]
        assert encode(s, rec) == _fastavro_encode(s, rec)[1]
    assert callable(s._fast_writer) and callable(t._fast_writer)  # the fast path was taken


def test_fast_writer_leaves_every_other_value_to_fastavro():
    # missing fields with and without defaults, bools for numbers, ints for doubles, values
    # out of range, wrong types: the same bytes or the same failure as fastavro alone
    s = Schema.parse(WRITABLE)
    rng = random.Random(10)
    odd = [
        None,
        True,
        False,
        0,
        -1,
        2**31,
        2**63,
        -(2**63) - 1,
        1.5,
        math.nan,
        "",
        "S3",
        "\ud800",
        b"",
        b"12345678",
        [],
        {},
        object(),
    ]
    for _ in range(3000):
        rec = _writable(rng)
        for _ in range(rng.randint(1, 3)):
            name = rng.choice([f["name"] for f in WRITABLE["fields"]])
            if rng.random() < 0.3:
                rec.pop(name, None)
            else:
                rec[name] = rng.choice(odd)
        assert _encoded(s, rec) == _fastavro_encode(s, rec)


def test_every_platform_schema_is_written_fast():
    root = Path(__file__).resolve().parents[4] / "schemas" / "avro"
    covered = {p.name for p in root.rglob("*.avsc") if callable(_FastWriter.build(Schema.load(p)))}
    # the records the ingest writes for every collected record
    assert {"envelope.avsc", "pool_record.avsc", "superseded.avsc", "rejected.avsc"} <= covered
