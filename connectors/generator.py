"""Sample data for demos, tests and benchmarks (样例数据生成器).

:class:`SampleGenerator` makes Kafka records (key, value) for every in-force catalog
resource, as source systems would publish them to a collect topic, together with the
outcome each record must have. Valid records pass every collection spec check (real
GB 11643 identity numbers, GB 32100 credit codes, GB/T 2260 region codes, real dates, enum
values); a ``broken_share`` of the records is deliberately broken, cycling over
:data:`BROKEN_KINDS`, each with the :class:`~streams.core.reasons.Reason` it must be rejected with.

Everything is drawn from one ``random.Random(seed)``: the same seed, catalog and schemas give
the same records, byte for byte. ``records`` continues the stream where the previous call
stopped, so versions, timestamps and record ids never repeat within one generator.

Valid records are all from the resource's authoritative provider (envelope ``provider`` and
``region`` are the resource's, whichever simulated source system forwarded them), so each one
is expected to be accepted into its resource's pool; about one in ten is a newer version of a
subject the generator emitted before (an update, never with identical content), the rest are
new subjects. Versions are one counter across the stream, so a later record always carries a
higher version.

Payloads are encoded with ``streams.wire.codec.encode`` and envelopes with
``EnvelopeCodec.encode``, as a source system's producer would.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import datetime as dt
import math
import random
import struct
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.catalog.model import Catalog, Resource
from streams.catalog.spec import MAX_STRING, subject_of
from streams.core.channel import Channel
from streams.core.consent import Consent
from streams.core.identifiers import CREDIT_CODE_ALPHABET, citizen_id_check_char, make_credit_code
from streams.core.reasons import Reason
from streams.core.regions import CITIES, PROVINCE, REGIONS, districts_of
from streams.units.model import UnitKind, UnitRegister, unit_of_source
from streams.wire.codec import HEADER_LEN, MARKER, Schema, encode
from streams.wire.envelope import Envelope, EnvelopeCodec, record_key

__all__ = [
    "BROKEN_KINDS",
    "DEFAULT_START_MS",
    "SampleGenerator",
    "SampleRecord",
    "counts",
]

DEFAULT_START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: fixed, so output is reproducible

# Every kind of broken record and the reason the ingest must reject it with. Each broken
# record has exactly one defect, except ``invalid_subject``: the subject id in the envelope is
# bad and so is the same identifier in the payload; the envelope is checked first.
BROKEN_KINDS: dict[str, Reason] = {
    "garbage": Reason.MALFORMED,  # random bytes, no Avro marker
    "unknown_envelope_schema": Reason.UNKNOWN_SCHEMA,  # marker, unregistered fingerprint
    "truncated": Reason.UNDECODABLE,  # envelope cut short inside its body
    "missing_field": Reason.SCHEMA_MISMATCH,  # payload writer lacks a required spec field
    "wrong_type": Reason.SCHEMA_MISMATCH,  # payload writer has a field of another type
    "unknown_resource": Reason.UNKNOWN_RESOURCE,  # resource id not in the catalog
    "bad_check_char": Reason.FIELD_RULE,  # non-subject citizen id with a wrong check char
    "huge_string": Reason.FIELD_RULE,  # a text field of 8 192 characters (> MAX_STRING)
    "hostile_chars": Reason.FIELD_RULE,  # NUL, C1 control or RTL override in a text field
    "impossible_date": Reason.FIELD_RULE,  # e.g. 1999-02-30 in a date field
    "unknown_region": Reason.FIELD_RULE,  # a six-digit code that is no Jilin region
    "bad_enum": Reason.FIELD_RULE,  # a value outside the field's enum
    "non_finite": Reason.FIELD_RULE,  # NaN or infinity in a number field
    "invalid_subject": Reason.INVALID_SUBJECT,  # subject citizen id / credit code check fails
    "unknown_payload_schema": Reason.UNKNOWN_SCHEMA,  # valid envelope, payload fp unknown
    "invalid_utf8": Reason.UNDECODABLE,  # payload string that is not UTF-8
    "consent_missing": Reason.CONSENT_MISSING,  # consent required, consent_ref null
    "channel_not_allowed": Reason.CHANNEL_NOT_ALLOWED,  # channel the catalog does not allow
    "region_mismatch": Reason.REGION_MISMATCH,  # envelope region outside the resource's
    "key_mismatch": Reason.KEY_MISMATCH,  # Kafka key names another subject
}

_CONSENT_LEAD_MS = 86_400_000  # a generated consent is granted a day before the stream starts
_UPDATE_SHARE = 0.1
_RECENT = 2048  # subjects remembered per resource for updates
_HUGE_LEN = 2 * MAX_STRING  # characters: well over the limit, well under Kafka's 1 MB
_FOREIGN_REGIONS = ("210100", "230100", "150100", "110105")  # Shenyang, Harbin, Hohhot, Beijing
_HOSTILE_SNIPPETS = ("\x00", "\u202e", "\x85", "\u2066", "\x1b[31m")  # NUL, RLO, NEL, LRI, ESC
_BAD_DATES = ("1999-02-30", "2023-02-29", "2024-13-01", "2025-04-31", "20240101")
_BAD_REGIONS = ("220199", "229900", "210100", "000000", "2201")  # none a Jilin region code
_SENTINEL = "\x01XY-UTF8-SENTINEL\x01"  # replaced by bytes that are not UTF-8

# Default share of valid records per resource, by collection spec file (population biggest).
_WEIGHTS = {
    "resident.avsc": 40.0,
    "legal_person.avsc": 15.0,
    "land_parcel.avsc": 9.0,
    "e_licence.avsc": 10.0,
    "credit_record.avsc": 9.0,
    "economic_indicator.avsc": 3.0,
    "elderly_allowance.avsc": 8.0,
}
_DEFAULT_WEIGHT = 5.0


@dataclass(frozen=True, slots=True)
class SampleRecord:
    """One Kafka record and the outcome the pipeline must give it."""

    key: bytes  # Kafka key: Envelope.key; for some broken kinds anything
    value: bytes  # Kafka value: single-object-encoded Envelope, or broken bytes
    expected: str  # "accepted:<pool value>" or "rejected:<Reason value>"
    source: str  # simulated source system, e.g. "220000-GA/huji" or "220100-MZ/platform"
    kind: str = "valid"  # "valid" or a key of BROKEN_KINDS
    principal: str = ""  # whose collect topic it is published to (the provider's principal)


def counts(records: Iterable[SampleRecord]) -> collections.Counter[str]:
    """Expected outcomes of ``records``: ``{"accepted:population": n, "rejected:...": m}``."""
    return collections.Counter(r.expected for r in records)


# ---------------------------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------------------------

_SURNAMES = tuple(
    "王李张刘陈杨赵黄周吴徐孙马朱胡郭何高林罗郑梁宋谢韩唐冯于董萧程曹袁邓许傅沈曾彭吕"
)
_KOREAN_SURNAMES = tuple("金朴李崔郑姜赵张韩尹")
_GIVEN = tuple("伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超兰霞平刚桂华玉建国志红春梅东海鹏飞雪松")
_ETHNICITIES = ("汉族",) * 90 + ("满族",) * 4 + ("朝鲜族",) * 3 + ("蒙古族",) * 2 + ("回族",)
_ROADS = ("人民大街", "解放大路", "自由大路", "建设街", "新民大街", "光明路", "胜利街", "和平路")
_FIRM_WORDS = ("恒达", "鑫源", "华信", "长白", "松江", "北方", "瑞丰", "金穗", "远航", "润泽")
_FIRM_TRADES = (
    ("汽车零部件", "汽车零部件制造、销售"),
    ("农业科技", "农作物种植技术开发、技术服务；农产品销售"),
    ("食品", "食品生产、销售"),
    ("建筑工程", "房屋建筑工程施工；市政工程施工"),
    ("商贸", "日用百货、五金交电销售"),
    ("医药", "药品批发；医疗器械销售"),
    ("物流", "普通货物道路运输；仓储服务"),
    ("软件", "软件开发；信息技术咨询服务"),
)
_FIRM_FORMS = ("有限公司", "有限责任公司", "股份有限公司")
_FIRM_STATUS = ("ACTIVE",) * 17 + ("REVOKED", "DEREGISTERED", "DEREGISTERED")
# (land use code, right type, two-letter parcel feature code)
_LAND = (
    ("0701", "STATE_CONSTRUCTION_USE", "GB"),
    ("0601", "STATE_CONSTRUCTION_USE", "GB"),
    ("0702", "HOMESTEAD_USE", "JC"),
    ("0101", "CONTRACTED_MANAGEMENT", "JD"),
    ("0103", "CONTRACTED_MANAGEMENT", "JD"),
    ("0103", "COLLECTIVE_OWNERSHIP", "JA"),
    ("0301", "COLLECTIVE_OWNERSHIP", "JA"),
)
_PENALTIES = (
    ("WARNING", "MINOR", 0.0),
    ("FINE", "MINOR", 2_000.0),
    ("FINE", "GENERAL", 20_000.0),
    ("FINE", "SERIOUS", 200_000.0),
    ("CONFISCATION", "GENERAL", 50_000.0),
    ("SUSPENSION", "SERIOUS", 0.0),
    ("LICENCE_REVOCATION", "SERIOUS", 0.0),
)
_AUTHORITY_SHORT = {"220000": "吉", "220100": "长", "220200": "吉市", "222400": "延"}
_SYSTEMS = {
    "resident.avsc": "huji",
    "legal_person.avsc": "dengji",
    "land_parcel.avsc": "budongchan",
    "e_licence.avsc": "dianzizhengzhao",
    "credit_record.avsc": "xinyong",
    "economic_indicator.avsc": "tongji",
    "elderly_allowance.avsc": "platform",
}
# Jilin annual GDP, 100 million yuan (order of magnitude of recent years), and city shares.
_GDP_PROVINCE = 13_500.0


def _date(rnd: Callable[[], float], first: int, span: int) -> dt.date:
    return dt.date.fromordinal(first + int(rnd() * span))


def _ordinal(y: int, m: int = 1, d: int = 1) -> int:
    return dt.date(y, m, d).toordinal()


def _place(region: str) -> str:
    """How a county-level body names its place: 长春市南关区, 桦甸市, 安图县."""
    name = REGIONS[region]
    return REGIONS[region[:4] + "00"] + name if name.endswith("区") else name


def _person(rnd: Callable[[], float], region: str) -> str:
    surnames = _KOREAN_SURNAMES if region.startswith("2224") and rnd() < 0.4 else _SURNAMES
    name = surnames[int(rnd() * len(surnames))] + _GIVEN[int(rnd() * len(_GIVEN))]
    if rnd() < 0.7:
        name += _GIVEN[int(rnd() * len(_GIVEN))]
    return name


def _citizen_id(rnd: Callable[[], float], region: str, birth: dt.date) -> str:
    seq = int(rnd() * 1000)
    first17 = f"{region}{birth.year:04d}{birth.month:02d}{birth.day:02d}{seq:03d}"
    return first17 + citizen_id_check_char(first17)


def _wrong_check(identifier: str, alphabet: str) -> str:
    """``identifier`` with its check character replaced by another of ``alphabet``."""
    right = identifier[-1]
    wrong = alphabet[(alphabet.index(right) + 1) % len(alphabet)] if right in alphabet else "0"
    return identifier[:-1] + wrong


# ---------------------------------------------------------------------------------------------
# Payload builders: resource -> (rng -> payload)
# ---------------------------------------------------------------------------------------------

Builder = Callable[[random.Random], dict[str, Any]]


def _districts(resource: Resource) -> tuple[str, ...]:
    region = resource.region if resource.region in REGIONS else PROVINCE
    city = region if region == PROVINCE else region[:4] + "00"
    out = districts_of(city)
    return out or (city,)


def _resident(resource: Resource) -> Builder:
    districts = _districts(resource)
    b0, bspan = _ordinal(1935), _ordinal(2024) - _ordinal(1935)

    def build(r: random.Random) -> dict[str, Any]:
        rnd = r.random
        region = districts[int(rnd() * len(districts))]
        birth = _date(rnd, b0, bspan)
        cid = _citizen_id(rnd, region, birth)
        korean = region.startswith("2224") and rnd() < 0.35
        city, district = REGIONS[region[:4] + "00"], REGIONS[region]
        road, number = _ROADS[int(rnd() * len(_ROADS))], int(rnd() * 3000) + 1
        return {
            "citizen_id": cid,
            "name": _person(rnd, region),
            "gender": "M" if int(cid[16]) % 2 else "F",
            "birth_date": birth.isoformat(),
            "ethnicity": "朝鲜族" if korean else _ETHNICITIES[int(rnd() * len(_ETHNICITIES))],
            "household_region": region,
            "address": None if rnd() < 0.1 else f"吉林省{city}{district}{road}{number}号",
        }

    return build


def _legal_person(resource: Resource) -> Builder:
    districts = _districts(resource)
    e0, espan = _ordinal(1992), _ordinal(2025, 12, 31) - _ordinal(1992)

    def build(r: random.Random) -> dict[str, Any]:
        rnd = r.random
        region = districts[int(rnd() * len(districts))]
        trade, scope = _FIRM_TRADES[int(rnd() * len(_FIRM_TRADES))]
        city = REGIONS[region[:4] + "00"]
        name = (
            f"{city}{_FIRM_WORDS[int(rnd() * len(_FIRM_WORDS))]}{trade}"
            f"{_FIRM_FORMS[int(rnd() * len(_FIRM_FORMS))]}"
        )
        return {
            "credit_code": make_credit_code(r, region),
            "name": name,
            "legal_representative": _person(rnd, region),
            "registered_capital_yuan": float(int(10 ** (4 + rnd() * 4)) // 10_000 * 10_000),
            "established_on": _date(rnd, e0, espan).isoformat(),
            "registered_region": region,
            "business_scope": None if rnd() < 0.05 else scope,
            "status": _FIRM_STATUS[int(rnd() * len(_FIRM_STATUS))],
        }

    return build


def _land_parcel(resource: Resource) -> Builder:
    districts = _districts(resource)

    def build(r: random.Random) -> dict[str, Any]:
        rnd = r.random
        region = districts[int(rnd() * len(districts))]
        use, right, feature = _LAND[int(rnd() * len(_LAND))]
        parcel = (
            f"{region}{int(rnd() * 30) + 1:03d}{int(rnd() * 60) + 1:03d}"
            f"{feature}{int(rnd() * 99999) + 1:05d}"
        )
        if right == "STATE_CONSTRUCTION_USE":
            holder = f"{REGIONS[region[:4] + '00']}{_FIRM_WORDS[int(rnd() * 10)]}置业有限公司"
            area = round(500 + rnd() * 50_000, 2)
        elif right == "COLLECTIVE_OWNERSHIP":
            holder = f"{REGIONS[region]}{_FIRM_WORDS[int(rnd() * 10)]}村农民集体"
            area = round(50_000 + rnd() * 2_000_000, 2)
        else:
            holder = _person(rnd, region)
            area = round(150 + rnd() * (600 if right == "HOMESTEAD_USE" else 30_000), 2)
        return {
            "parcel_id": parcel,
            "region": region,
            "land_use": use,
            "area_m2": area,
            "right_holder": holder,
            "right_type": right,
        }

    return build


def _e_licence(resource: Resource) -> Builder:
    districts = _districts(resource)
    b0, bspan = _ordinal(1950), _ordinal(2003) - _ordinal(1950)

    def build(r: random.Random) -> dict[str, Any]:
        rnd = r.random
        region = districts[int(rnd() * len(districts))]
        birth = _date(rnd, b0, bspan)
        first = max(birth.toordinal() + 20 * 366, _ordinal(2000))
        issued = _date(rnd, first, max(1, _ordinal(2025, 12, 31) - first))
        return {
            "licence_no": f"J{region}-{issued.year}-{int(rnd() * 999_999) + 1:06d}",
            "licence_type": "MARRIAGE_CERTIFICATE",
            "holder_id": _citizen_id(rnd, region, birth),
            "holder_name": _person(rnd, region),
            "issued_on": issued.isoformat(),
            "issuing_region": region,
            "issuing_authority": f"{_place(region)}民政局",
            "valid_until": None,
        }

    return build


def _credit_record(resource: Resource) -> Builder:
    districts = _districts(resource)
    d0, dspan = _ordinal(2016), _ordinal(2025, 12, 31) - _ordinal(2016)

    def build(r: random.Random) -> dict[str, Any]:
        rnd = r.random
        region = districts[int(rnd() * len(districts))]
        city = region[:4] + "00"
        ptype, severity, base = _PENALTIES[int(rnd() * len(_PENALTIES))]
        decided = _date(rnd, d0, dspan)
        short = _AUTHORITY_SHORT.get(city, REGIONS[city][:1])
        trade = _FIRM_TRADES[int(rnd() * len(_FIRM_TRADES))][0]
        return {
            "record_no": f"XY{decided.year}{int(rnd() * 10**10):010d}",
            "credit_code": make_credit_code(r, region),
            "subject_name": f"{REGIONS[city]}{_FIRM_WORDS[int(rnd() * 10)]}{trade}有限公司",
            "decision_no": f"{short}市监处罚〔{decided.year}〕{int(rnd() * 900) + 1}号",
            "penalty_type": ptype,
            "severity": severity,
            "amount_yuan": round(base * (0.5 + rnd()), -2),
            "decided_on": decided.isoformat(),
            "authority": f"{_place(region)}市场监督管理局",
        }

    return build


_CITY_SHARE = {
    "220100": 0.52,
    "220200": 0.13,
    "220300": 0.06,
    "220400": 0.04,
    "220500": 0.05,
    "220600": 0.04,
    "220700": 0.06,
    "220800": 0.04,
    "222400": 0.07,
}


def _economic_indicator(resource: Resource) -> Builder:
    # The province and its cities; the city shares of GDP are rough orders of magnitude.
    regions: tuple[str, ...] = (PROVINCE, *_CITY_SHARE)
    if resource.region != PROVINCE and resource.region in REGIONS:
        regions = (resource.region,)

    def build(r: random.Random) -> dict[str, Any]:
        rnd = r.random
        region = regions[int(rnd() * len(regions))]
        year, quarter = 2016 + int(rnd() * 10), int(rnd() * 4) + 1
        share = _CITY_SHARE.get(region, 1.0)
        value = _GDP_PROVINCE * share * quarter / 4 * (0.85 + 0.3 * rnd()) * (1.03 ** (year - 2020))
        end = dt.date(year, quarter * 3, 1) + dt.timedelta(days=31)
        return {
            "region": region,
            "period": f"{year}Q{quarter}",
            "indicator": "GDP",
            "value": round(value, 2),
            "unit": "100M_CNY",
            "published_on": (end + dt.timedelta(days=int(rnd() * 20))).isoformat(),
        }

    return build


def _elderly_allowance(resource: Resource) -> Builder:
    districts = _districts(resource)
    b0, bspan = _ordinal(1920), _ordinal(1946) - _ordinal(1920)

    def build(r: random.Random) -> dict[str, Any]:
        rnd = r.random
        region = districts[int(rnd() * len(districts))]
        birth = _date(rnd, b0, bspan)
        year, month = 2024 + int(rnd() * 2), int(rnd() * 12) + 1
        age = year - birth.year
        return {
            "citizen_id": _citizen_id(rnd, region, birth),
            "name": _person(rnd, region),
            "month": f"{year}-{month:02d}",
            "allowance_yuan": 100.0 if age < 90 else 200.0 if age < 100 else 500.0,
            "region": region,
        }

    return build


_BUILDERS: dict[str, Callable[[Resource], Builder]] = {
    "resident.avsc": _resident,
    "legal_person.avsc": _legal_person,
    "land_parcel.avsc": _land_parcel,
    "e_licence.avsc": _e_licence,
    "credit_record.avsc": _credit_record,
    "economic_indicator.avsc": _economic_indicator,
    "elderly_allowance.avsc": _elderly_allowance,
}

# Fields a newer version of the same subject may change (updates).
_MUTABLE = {
    "resident.avsc": ("address", "household_region"),
    "legal_person.avsc": ("status", "registered_capital_yuan", "legal_representative"),
    "land_parcel.avsc": ("right_holder", "area_m2"),
    "e_licence.avsc": ("holder_name",),
    "credit_record.avsc": ("amount_yuan", "record_no"),
    "economic_indicator.avsc": ("value", "published_on"),
    "elderly_allowance.avsc": ("month", "allowance_yuan"),
}


def _generic(resource: Resource, schema: Schema) -> Builder | None:
    """A builder from the schema and field rules alone, for specs the generator lacks one for.

    None if some field cannot be made valid (a pattern rule or a non-primitive type).
    """
    districts = _districts(resource)
    makers: list[tuple[str, Callable[[random.Random], Any]]] = []
    for f in schema.parsed.get("fields", []):
        name, ftype = f["name"], f["type"]
        rules = resource.field_rules.get(name, {})
        if isinstance(ftype, list):
            if "null" in ftype and "default" in f and not rules:
                makers.append((name, lambda r: None))
                continue
            return None
        if "pattern" in rules:
            return None
        check, enum = rules.get("check"), rules.get("enum")
        maker: Callable[[random.Random], Any]
        if ftype == "string" and check == "citizen_id":
            maker = _make_cid(districts)
        elif ftype == "string" and check == "credit_code":
            maker = _make_cc(districts)
        elif ftype == "string" and check == "region":
            maker = _make_choice(districts)
        elif ftype == "string" and check == "date":
            maker = _make_date()
        elif ftype == "string" and enum:
            maker = _make_choice(tuple(str(v) for v in enum))
        elif ftype == "string" and check is None:
            maker = _make_text(int(rules.get("min_length", 1)), int(rules.get("max_length", 16)))
        elif ftype in ("double", "float") and check is None and enum is None:
            maker = _make_number(float(rules.get("min", 0.0)), float(rules.get("max", 1e6)), True)
        elif ftype in ("int", "long") and check is None and enum is None:
            maker = _make_number(float(rules.get("min", 0)), float(rules.get("max", 1e6)), False)
        elif ftype == "boolean" and not rules:
            maker = _make_choice((True, False))
        else:
            return None
        makers.append((name, maker))
    frozen = tuple(makers)

    def build(r: random.Random) -> dict[str, Any]:
        return {name: make(r) for name, make in frozen}

    return build


def _make_cid(districts: Sequence[str]) -> Callable[[random.Random], Any]:
    b0, bspan = _ordinal(1935), _ordinal(2024) - _ordinal(1935)
    return lambda r: _citizen_id(
        r.random, districts[int(r.random() * len(districts))], _date(r.random, b0, bspan)
    )


def _make_cc(districts: Sequence[str]) -> Callable[[random.Random], Any]:
    return lambda r: make_credit_code(r, districts[int(r.random() * len(districts))])


def _make_choice(values: Sequence[Any]) -> Callable[[random.Random], Any]:
    return lambda r: values[int(r.random() * len(values))]


def _make_date() -> Callable[[random.Random], Any]:
    d0, span = _ordinal(2000), _ordinal(2025, 12, 31) - _ordinal(2000)
    return lambda r: _date(r.random, d0, span).isoformat()


def _make_text(lo: int, hi: int) -> Callable[[random.Random], Any]:
    lo, hi = max(lo, 1), max(min(hi, 16), max(lo, 1))
    return lambda r: "".join(
        _GIVEN[int(r.random() * len(_GIVEN))] for _ in range(r.randint(lo, hi))
    )


def _make_number(lo: float, hi: float, real: bool) -> Callable[[random.Random], Any]:
    if real:
        return lambda r: round(lo + r.random() * (hi - lo), 2) if hi > lo else lo
    return lambda r: math.ceil(lo) + int(r.random() * max(1.0, hi - lo))


# ---------------------------------------------------------------------------------------------
# The generator
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Plan:
    """Everything pre-built for one resource, so the per-record path only draws and encodes."""

    resource: Resource
    schema: Schema
    build: Builder
    sources: tuple[str, ...]
    channels: tuple[Channel, ...]
    expected: str
    subject_fields: tuple[str, ...]
    mutable: tuple[str, ...]
    recent: list[dict[str, Any]] = field(default_factory=list)
    # Payload fields usable by broken kinds (computed once from schema and rules)
    text_fields: tuple[str, ...] = ()
    date_fields: tuple[str, ...] = ()
    region_fields: tuple[str, ...] = ()
    enum_fields: tuple[str, ...] = ()
    number_fields: tuple[str, ...] = ()
    id_fields: tuple[tuple[str, str], ...] = ()  # (field, check) not being the subject
    missing: tuple[Schema, str] | None = None  # (writer, dropped field)
    wrong: tuple[Schema, str, str] | None = None  # (writer, field, new avro type)


class SampleGenerator:
    """Deterministic sample records for every in-force resource of ``catalog``.

    ``codec`` is the envelope codec whose registry the consumer side uses: the generator adds
    each resource's collection spec and the deliberately incompatible payload schemas it writes
    (see :attr:`extra_schemas`; a producer publishes those to the schemas topic).

    ``kinds`` restricts the broken kinds (default: all of :data:`BROKEN_KINDS` that the catalog
    has a suitable resource for); ``weights`` overrides the share of valid records per resource
    id; ``start_ms`` is the first ``observed_at_ms``; ``spec_of`` gives a resource's collection
    spec (default: the file ``schema_dir / resource.schema``; the catalog in Kafka gives the
    spec stored with the version in force, :meth:`streams.kafka.catalog_store.CatalogStore.spec`).
    ``evidence_share`` of the valid records come from a city unit that is not the provincial
    resource's provider (multi-source verification, article 20): expected ``verification``.
    ``consents=True`` keeps the consent each record's ``consent_ref`` cites
    (:meth:`consents`); the records themselves are the same either way.
    """

    def __init__(
        self,
        codec: EnvelopeCodec,
        catalog: Catalog,
        schema_dir: Path,
        *,
        seed: int = 7,
        broken_share: float = 0.05,
        kinds: Iterable[str] | None = None,
        weights: Mapping[str, float] | None = None,
        start_ms: int = DEFAULT_START_MS,
        spec_of: Callable[[Resource], Schema] | None = None,
        evidence_share: float = 0.0,
        units: UnitRegister | None = None,
        consents: bool = False,
    ) -> None:
        for name, share in (("broken_share", broken_share), ("evidence_share", evidence_share)):
            if not 0.0 <= share <= 1.0 or math.isnan(share):
                raise ValueError(f"{name} must be within 0..1, got {share}")
        self.evidence_share = evidence_share
        # The register tells each record's principal (its collect topic) and the third
        # party a COMMISSIONED record names; default: the starter register shipped beside
        # the schemas (``<root>/units`` next to ``<root>/schemas/avro``), as approved.
        self.units = (
            units
            if units is not None
            else UnitRegister.from_dir(schema_dir.parent.parent / "units").approved()
        )
        self.codec = codec
        self.catalog = catalog
        self.seed = seed
        self.broken_share = broken_share
        self.extra_schemas: list[Schema] = []
        self.skipped: list[str] = []  # in-force resources no valid payload can be made for
        self._rng = random.Random(seed)
        self._clock = start_ms
        self._start_ms = start_ms
        #: consents of the records made since the last :meth:`consents` call (None: not kept)
        self._consents: list[Consent] | None = [] if consents else None
        self._version = 0
        self._emitted = 0  # records so far
        self._kind_no = 0  # broken records so far
        self._plans: list[_Plan] = []
        weights = dict(weights or {})
        resources = sorted((r for r in catalog if r.in_force), key=lambda r: r.id)
        for resource in resources:
            spec = spec_of(resource) if spec_of else Schema.load(schema_dir / resource.schema)
            schema = codec.registry.add(spec)
            plan = self._plan(resource, schema)
            if plan is None:
                self.skipped.append(resource.id)
            else:
                self._plans.append(plan)
        if not self._plans:
            raise ValueError("no in-force catalog resource the generator can make records for")
        # Incompatible writers are registered after every spec, so by_name keeps the specs.
        for plan in self._plans:
            self._prepare_mismatches(plan)
        totals, acc = [], 0.0
        for plan in self._plans:
            name = Path(plan.resource.schema).name
            w = float(weights.get(plan.resource.id, _WEIGHTS.get(name, _DEFAULT_WEIGHT)))
            if not w >= 0.0 or math.isinf(w):
                raise ValueError(f"weight of {plan.resource.id} must be finite and >= 0, got {w}")
            acc += w
            totals.append(acc)
        if acc <= 0.0:
            raise ValueError("at least one resource needs a positive weight")
        self._cum = tuple(t / acc for t in totals)
        self._kinds = self._usable_kinds(kinds)
        self._catalog_ids = frozenset(r.id for r in catalog)

    # ---- set-up ---------------------------------------------------------------------------

    def _plan(self, resource: Resource, schema: Schema) -> _Plan | None:
        spec_name = Path(resource.schema).name
        maker = _BUILDERS.get(spec_name)
        build = maker(resource) if maker is not None else _generic(resource, schema)
        if build is None:
            return None
        fields = {f["name"]: f for f in schema.parsed.get("fields", [])}
        subject_fields = (
            ("region", "period") if resource.subject == "region_period" else (resource.subject,)
        )
        if not set(subject_fields) <= set(fields):
            return None
        rules = resource.field_rules
        dept = resource.provider.split("-", 1)[-1]
        system = _SYSTEMS.get(spec_name, "registry")
        if resource.region == PROVINCE:
            forwarders = tuple(f"{c}-{dept}/platform" for c in ("220100", "220200", "222400"))
        else:
            forwarders = tuple(f"{d}-{dept}/district" for d in _districts(resource)[:3])
        sources = (f"{resource.provider}/{system}", *forwarders)

        def plain_string(name: str) -> bool:
            t = fields[name]["type"]
            r = rules.get(name, {})
            return t == "string" and not ({"check", "enum", "pattern"} & set(r))

        return _Plan(
            resource=resource,
            schema=schema,
            build=build,
            sources=sources,
            channels=tuple(
                sorted(
                    (
                        c
                        for c in resource.channels
                        if c is not Channel.COMMISSIONED or self._third_party(resource)
                    ),
                    key=lambda c: c.value,
                )
            ),
            expected=f"accepted:{resource.pool.value}",
            subject_fields=subject_fields,
            mutable=tuple(
                f for f in _MUTABLE.get(spec_name, ()) if f in fields and f not in subject_fields
            ),
            text_fields=tuple(n for n in fields if n not in subject_fields and plain_string(n)),
            date_fields=tuple(n for n in fields if rules.get(n, {}).get("check") == "date"),
            region_fields=tuple(n for n in fields if rules.get(n, {}).get("check") == "region"),
            enum_fields=tuple(n for n in fields if rules.get(n, {}).get("enum")),
            number_fields=tuple(n for n in fields if fields[n]["type"] in ("double", "float")),
            id_fields=tuple(
                (n, rules[n]["check"])
                for n in fields
                if n not in subject_fields
                and rules.get(n, {}).get("check") in ("citizen_id", "credit_code")
            ),
        )

    def _prepare_mismatches(self, plan: _Plan) -> None:
        """Writer schemas incompatible with the spec: one lacking a required field, one with
        a field of another type. Both are registered, so their fingerprints are known."""
        raw = plan.schema.parsed
        fields = raw.get("fields", [])
        required = [
            f for f in fields if "default" not in f and f["name"] not in plan.subject_fields
        ]
        if required:
            drop = required[-1]["name"]
            schema = Schema.parse({**raw, "fields": [f for f in fields if f["name"] != drop]})
            plan.missing = (self.codec.registry.add(schema), drop)
            self.extra_schemas.append(schema)
        for f in required:
            if f["type"] in ("string", "double"):
                new_type = "long" if f["type"] == "string" else "string"
                changed = [{**g, "type": new_type} if g is f else g for g in fields]
                schema = Schema.parse({**raw, "fields": changed})
                plan.wrong = (self.codec.registry.add(schema), f["name"], new_type)
                self.extra_schemas.append(schema)
                break

    def _usable_kinds(self, kinds: Iterable[str] | None) -> tuple[str, ...]:
        wanted = tuple(BROKEN_KINDS) if kinds is None else tuple(kinds)
        unknown = [k for k in wanted if k not in BROKEN_KINDS]
        if unknown:
            raise ValueError(f"unknown broken kinds {unknown}; known: {list(BROKEN_KINDS)}")
        need: dict[str, Callable[[_Plan], bool]] = {
            "missing_field": lambda p: p.missing is not None,
            "wrong_type": lambda p: p.wrong is not None,
            "bad_check_char": lambda p: bool(p.id_fields),
            "huge_string": lambda p: bool(p.text_fields),
            "hostile_chars": lambda p: bool(p.text_fields),
            "invalid_utf8": lambda p: bool(p.text_fields),
            "impossible_date": lambda p: bool(p.date_fields),
            "unknown_region": lambda p: bool(p.region_fields),
            "bad_enum": lambda p: bool(p.enum_fields),
            "non_finite": lambda p: bool(p.number_fields),
            "invalid_subject": lambda p: p.resource.subject in ("citizen_id", "credit_code"),
            "consent_missing": lambda p: p.resource.consent_required,
            "channel_not_allowed": lambda p: len(p.channels) < len(Channel),
        }
        out = []
        for k in wanted:
            test = need.get(k)
            if test is None or any(test(p) for p in self._plans):
                out.append(k)
        return tuple(out)

    @property
    def kinds(self) -> tuple[str, ...]:
        """The broken kinds this generator cycles over, in order."""
        return self._kinds

    @property
    def resources(self) -> tuple[Resource, ...]:
        """The resources this generator makes valid records for."""
        return tuple(p.resource for p in self._plans)

    # ---- the stream -----------------------------------------------------------------------

    def records(self, n: int) -> Iterator[SampleRecord]:
        """The next ``n`` records of this generator's stream, each with the principal whose
        collect topic publishes it.

        After ``m`` records in all, exactly ``floor(m * broken_share)`` were broken (spread
        evenly, kinds in turn), unless no broken kind applies to the catalog.
        """
        share, kinds = self.broken_share, self._kinds
        for _ in range(n):
            self._emitted += 1
            if kinds and int(self._emitted * share + 1e-9) > self._kind_no:
                kind = kinds[self._kind_no % len(kinds)]
                self._kind_no += 1
                rec = self._broken(kind)
            elif self.evidence_share and self._rng.random() < self.evidence_share:
                rec = self._evidence()
            else:
                rec = self._valid()
            yield dataclasses.replace(rec, principal=self._principal(rec))

    def _principal(self, rec: SampleRecord) -> str:
        """The provider's principal; for a record whose envelope does not decode, the
        principal of the unit its source system belongs to."""
        try:
            provider = self.codec.decode(rec.value).provider
        except Exception:  # broken on purpose: published where its source publishes
            provider = unit_of_source(rec.source)
        source = unit_of_source(rec.source)
        principal = self.units.principal_of(provider) or self.units.principal_of(source)
        if principal is None:  # a source of an unregistered unit: its city's platform
            city = source[:4] + "00"
            principal = next(
                (
                    u.code
                    for u in self.units
                    if u.in_force and u.kind is UnitKind.CITY and u.region == city
                ),
                None,
            )
        if principal is None:
            raise ValueError(f"source {rec.source!r}: no registered principal publishes for it")
        return principal

    def _third_party(self, resource: Resource) -> str | None:
        """A registered third party the provider commissions for ``resource``, if any."""
        for unit in self.units.children(resource.provider):
            if unit.kind is UnitKind.THIRD_PARTY and unit.in_force and resource.id in unit.duties:
                return unit.code
        return None

    def _pick(self) -> _Plan:
        i = bisect.bisect_right(self._cum, self._rng.random())
        return self._plans[min(i, len(self._plans) - 1)]

    def _payload(self, plan: _Plan) -> dict[str, Any]:
        r = self._rng
        if plan.mutable and plan.recent and r.random() < _UPDATE_SHARE:
            at = int(r.random() * len(plan.recent))
            old = plan.recent[at]  # the subject's current version
            fresh = plan.build(r)
            if any(old[f] != fresh[f] for f in plan.mutable):  # never a content duplicate
                new = dict(old)
                for f in plan.mutable:
                    new[f] = fresh[f]
                # The next update of this subject must differ from this version, not from
                # the one before: a field with few values (a credit grade) would otherwise
                # come back to this version's content, a duplicate expected as accepted.
                plan.recent[at] = dict(new)
                return new
        payload = plan.build(r)
        if len(plan.recent) < _RECENT:
            plan.recent.append(payload)
        else:
            plan.recent[int(r.random() * _RECENT)] = payload
        return payload

    def _envelope(
        self,
        plan: _Plan,
        payload_bytes: bytes,
        subject: str,
        *,
        resource_id: str | None = None,
        region: str | None = None,
        channel: Channel | None = None,
        consent: bool = True,
        provider: str | None = None,
    ) -> Envelope:
        r = self._rng
        res = plan.resource
        self._version += 1
        self._clock += 1 + int(r.random() * 20)
        if channel is None:
            # A unit named as provider collects itself: COMMISSIONED names a third party.
            usable = [c for c in plan.channels if provider is None or c is not Channel.COMMISSIONED]
            channel = (usable or list(plan.channels))[
                int(r.random() * len(usable or plan.channels))
            ]
        if provider is None:
            commissioned = channel is Channel.COMMISSIONED and self._third_party(res)
            provider = commissioned or res.provider
        env = Envelope(
            record_id=str(uuid.UUID(int=r.getrandbits(128), version=4)),
            resource_id=resource_id or res.id,
            subject_id=subject,
            provider=provider,
            region=region or res.region,
            channel=channel,
            observed_at_ms=self._clock,
            version=self._version,
            payload=payload_bytes,
            consent_ref=f"CONSENT-{r.getrandbits(48):012X}"
            if consent and res.consent_required
            else None,
        )
        if self._consents is not None and env.consent_ref is not None:
            self._consents.append(
                Consent(
                    consent_id=env.consent_ref,
                    subject_id=env.subject_id,
                    resource_id=env.resource_id,
                    granted_by=res.provider,
                    scope=f"collection of {res.id} about the subject",
                    granted_at_ms=self._start_ms - _CONSENT_LEAD_MS,
                )
            )
        return env

    def consents(self) -> list[Consent]:
        """The consents the records made since the last call cite (one per record of a
        resource that requires consent and carries a reference), in force from a day before
        the stream's start, without end; publish them before the records
        (:class:`connectors.consent.ConsentPublisher`). Needs ``consents=True``."""
        if self._consents is None:
            raise ValueError("this generator keeps no consents: make it with consents=True")
        out, self._consents = self._consents, []
        return out

    def _source(self, plan: _Plan) -> str:
        return plan.sources[int(self._rng.random() * len(plan.sources))]

    def _valid(self) -> SampleRecord:
        plan = self._pick()
        payload = self._payload(plan)
        subject = subject_of(plan.resource, payload)
        assert subject is not None
        env = self._envelope(plan, encode(plan.schema, payload), subject)
        return SampleRecord(env.key, self.codec.encode(env), plan.expected, self._source(plan))

    def _evidence(self) -> SampleRecord:
        """A provincial resource's record as a city unit of the same system collected it."""
        plan = self._plan_for(lambda p: p.resource.region == PROVINCE)
        payload = self._payload(plan)
        subject = subject_of(plan.resource, payload)
        assert subject is not None
        city = CITIES[int(self._rng.random() * len(CITIES))]
        unit = f"{city}-{plan.resource.provider.split('-', 1)[-1]}"
        body = encode(plan.schema, payload)
        env = self._envelope(plan, body, subject, provider=unit, region=city)
        return SampleRecord(env.key, self.codec.encode(env), "verification", f"{unit}/platform")

    # ---- broken records -------------------------------------------------------------------

    def _plan_for(self, test: Callable[[_Plan], bool]) -> _Plan:
        candidates = [p for p in self._plans if test(p)]
        return candidates[int(self._rng.random() * len(candidates))]

    def _sample(self, plan: _Plan, payload: dict[str, Any], kind: str, **env: Any) -> SampleRecord:
        """Encode ``payload`` with the spec, wrap it and expect ``BROKEN_KINDS[kind]``."""
        subject = subject_of(plan.resource, payload) or "?"
        e = self._envelope(plan, encode(plan.schema, payload), subject, **env)
        return self._rejected(e.key, self.codec.encode(e), kind, plan)

    def _rejected(self, key: bytes, value: bytes, kind: str, plan: _Plan) -> SampleRecord:
        return SampleRecord(
            key, value, f"rejected:{BROKEN_KINDS[kind].value}", self._source(plan), kind
        )

    def _broken(self, kind: str) -> SampleRecord:
        make: Callable[[str], SampleRecord] = getattr(self, f"_k_{kind}")
        return make(kind)

    def _index(self, n: int) -> int:
        return int(self._rng.random() * n)

    def _encoded(self, plan: _Plan, payload: dict[str, Any]) -> tuple[Envelope, bytes]:
        subject = subject_of(plan.resource, payload) or "?"
        env = self._envelope(plan, encode(plan.schema, payload), subject)
        return env, self.codec.encode(env)

    def _k_garbage(self, kind: str) -> SampleRecord:
        plan, r = self._pick(), self._rng
        first = bytes([self._index(0xC3)])  # never the marker's first byte
        value = first + r.randbytes(1 + self._index(200))
        return self._rejected(r.randbytes(8), value, kind, plan)

    def _unknown_fp(self) -> bytes:
        fp = self._rng.getrandbits(64)
        while fp in self.codec.registry:
            fp = self._rng.getrandbits(64)
        return MARKER + struct.pack("<Q", fp)

    def _k_unknown_envelope_schema(self, kind: str) -> SampleRecord:
        plan = self._pick()
        env, value = self._encoded(plan, plan.build(self._rng))
        return self._rejected(env.key, self._unknown_fp() + value[HEADER_LEN:], kind, plan)

    def _k_truncated(self, kind: str) -> SampleRecord:
        plan = self._pick()
        env, value = self._encoded(plan, plan.build(self._rng))
        body = len(value) - HEADER_LEN  # cut inside the body: keep 1 .. body-1 bytes of it
        cut = HEADER_LEN + 1 + self._index(body - 1)
        return self._rejected(env.key, value[:cut], kind, plan)

    def _k_missing_field(self, kind: str) -> SampleRecord:
        plan = self._plan_for(lambda p: p.missing is not None)
        assert plan.missing is not None
        writer, drop = plan.missing
        payload = plan.build(self._rng)
        del payload[drop]
        env = self._envelope(
            plan, encode(writer, payload), subject_of(plan.resource, payload) or "?"
        )
        return self._rejected(env.key, self.codec.encode(env), kind, plan)

    def _k_wrong_type(self, kind: str) -> SampleRecord:
        plan = self._plan_for(lambda p: p.wrong is not None)
        assert plan.wrong is not None
        writer, name, new_type = plan.wrong
        payload = plan.build(self._rng)
        payload[name] = self._index(10**6) if new_type == "long" else str(payload[name])
        env = self._envelope(
            plan, encode(writer, payload), subject_of(plan.resource, payload) or "?"
        )
        return self._rejected(env.key, self.codec.encode(env), kind, plan)

    def _k_unknown_resource(self, kind: str) -> SampleRecord:
        plan = self._pick()
        rid = f"{plan.resource.id}_unregistered"
        while rid in self._catalog_ids:
            rid += "_x"
        return self._sample(plan, plan.build(self._rng), kind, resource_id=rid)

    def _k_bad_check_char(self, kind: str) -> SampleRecord:
        plan = self._plan_for(lambda p: bool(p.id_fields))
        name, check = plan.id_fields[self._index(len(plan.id_fields))]
        payload = plan.build(self._rng)
        alphabet = "0123456789X" if check == "citizen_id" else CREDIT_CODE_ALPHABET
        payload[name] = _wrong_check(payload[name], alphabet)
        return self._sample(plan, payload, kind)

    def _k_huge_string(self, kind: str) -> SampleRecord:
        plan = self._plan_for(lambda p: bool(p.text_fields))
        payload = plan.build(self._rng)
        payload[plan.text_fields[self._index(len(plan.text_fields))]] = "吉" * _HUGE_LEN
        return self._sample(plan, payload, kind)

    def _k_hostile_chars(self, kind: str) -> SampleRecord:
        plan = self._plan_for(lambda p: bool(p.text_fields))
        name = plan.text_fields[self._index(len(plan.text_fields))]
        payload = plan.build(self._rng)
        base = str(payload[name] or "张三")
        bad = _HOSTILE_SNIPPETS[self._index(len(_HOSTILE_SNIPPETS))]
        payload[name] = base[:1] + bad + base[1:]
        return self._sample(plan, payload, kind)

    def _k_impossible_date(self, kind: str) -> SampleRecord:
        plan = self._plan_for(lambda p: bool(p.date_fields))
        payload = plan.build(self._rng)
        name = plan.date_fields[self._index(len(plan.date_fields))]
        payload[name] = _BAD_DATES[self._index(len(_BAD_DATES))]
        return self._sample(plan, payload, kind)

    def _k_unknown_region(self, kind: str) -> SampleRecord:
        plan = self._plan_for(lambda p: bool(p.region_fields))
        payload = plan.build(self._rng)
        name = plan.region_fields[self._index(len(plan.region_fields))]
        payload[name] = _BAD_REGIONS[self._index(len(_BAD_REGIONS))]
        return self._sample(plan, payload, kind)

    def _k_bad_enum(self, kind: str) -> SampleRecord:
        plan = self._plan_for(lambda p: bool(p.enum_fields))
        payload = plan.build(self._rng)
        name = plan.enum_fields[self._index(len(plan.enum_fields))]
        payload[name] = str(payload[name]).lower() + "?"
        return self._sample(plan, payload, kind)

    def _k_non_finite(self, kind: str) -> SampleRecord:
        plan = self._plan_for(lambda p: bool(p.number_fields))
        payload = plan.build(self._rng)
        name = plan.number_fields[self._index(len(plan.number_fields))]
        payload[name] = (math.nan, math.inf, -math.inf)[self._index(3)]
        return self._sample(plan, payload, kind)

    def _k_invalid_subject(self, kind: str) -> SampleRecord:
        plan = self._plan_for(lambda p: p.resource.subject in ("citizen_id", "credit_code"))
        payload = plan.build(self._rng)
        name = plan.resource.subject
        alphabet = "0123456789X" if name == "citizen_id" else CREDIT_CODE_ALPHABET
        payload[name] = _wrong_check(payload[name], alphabet)
        return self._sample(plan, payload, kind)

    def _k_unknown_payload_schema(self, kind: str) -> SampleRecord:
        plan = self._pick()
        payload = plan.build(self._rng)
        body = self._unknown_fp() + encode(plan.schema, payload)[HEADER_LEN:]
        env = self._envelope(plan, body, subject_of(plan.resource, payload) or "?")
        return self._rejected(env.key, self.codec.encode(env), kind, plan)

    def _k_invalid_utf8(self, kind: str) -> SampleRecord:
        plan = self._plan_for(lambda p: bool(p.text_fields))
        name = plan.text_fields[self._index(len(plan.text_fields))]
        payload = plan.build(self._rng)
        payload[name] = _SENTINEL
        raw = _SENTINEL.encode()
        body = encode(plan.schema, payload).replace(raw, b"\xff\xfe" + raw[2:], 1)
        env = self._envelope(plan, body, subject_of(plan.resource, payload) or "?")
        return self._rejected(env.key, self.codec.encode(env), kind, plan)

    def _k_consent_missing(self, kind: str) -> SampleRecord:
        plan = self._plan_for(lambda p: p.resource.consent_required)
        return self._sample(plan, plan.build(self._rng), kind, consent=False)

    def _k_channel_not_allowed(self, kind: str) -> SampleRecord:
        plan = self._plan_for(lambda p: len(p.channels) < len(Channel))
        other = [c for c in Channel if c not in plan.channels]
        channel = other[self._index(len(other))]
        return self._sample(plan, plan.build(self._rng), kind, channel=channel)

    def _k_region_mismatch(self, kind: str) -> SampleRecord:
        plan = self._pick()
        region = _FOREIGN_REGIONS[self._index(len(_FOREIGN_REGIONS))]
        return self._sample(plan, plan.build(self._rng), kind, region=region)

    def _k_key_mismatch(self, kind: str) -> SampleRecord:
        plan = self._pick()
        env, value = self._encoded(plan, plan.build(self._rng))
        other = env.subject_id
        while other == env.subject_id:
            other = subject_of(plan.resource, plan.build(self._rng)) or env.subject_id + "0"
        return self._rejected(record_key(env.resource_id, other), value, kind, plan)
