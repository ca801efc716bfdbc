import json
import struct

import pytest
from fastavro.schema import fingerprint, to_parsing_canonical_form

from streams.codec import (
    AvroDeserializer,
    AvroSerializer,
    CodecError,
    Schema,
    SchemaRegistry,
    decode,
    encode,
    fingerprint64,
)
from streams.reasons import Reason

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


def test_serializer_shape_obj_ctx_to_bytes():
    s = Schema.parse(POINT)
    reg = SchemaRegistry([s])
    data = AvroSerializer(s)({"x": 1, "label": "a"}, None)
    assert AvroDeserializer(reg)(data, None) == {"x": 1, "label": "a"}


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
