"""The public data resource catalog (公共数据资源目录), articles 14 to 18.

A :class:`Resource` says what may be collected, by whom (its one authoritative provider),
into which pool, under which collection spec, and how it may be shared and opened.
:class:`Catalog` is the in-memory index every agent reads without a round trip per record.
:func:`~streams.catalog.validation.validate_entry` is the check a catalog entry passes
before the data bureau may put it in force; the review workflow built on it is
:mod:`streams.catalog.review`.

Rules :func:`validate_entry` enforces (each refusal names what to fix):

* **Attributes (article 15).** A ``conditional`` share attribute needs its conditions and a
  legal basis; ``not_shared`` needs a legal basis and cannot be open; an open attribute
  ``restricted`` or ``not_open`` needs a legal basis. The update frequency is one of
  :data:`UPDATE_FREQUENCIES`; the region is the province or one of its cities.
* **Collection spec (article 14).** ``schema`` is a path below ``schemas/avro/`` naming an
  Avro *record* schema holding the subject field (or the parts of a composite subject);
  every field rule names a field of that record and compiles
  (:func:`streams.catalog.spec.compile_rules`). An update of a
  resource in force keeps its subject kind, pool and region, and its spec must pass
  :func:`streams.wire.compat.check_backward` against the spec in force.
* **City supplementary catalogs (article 15, paragraph 3).** An entry whose region is a city
  code ``C`` has an id ``C.<name>`` and a department of that city (``C-...``); ``<name>``
  must not be the id of a provincial resource (no shadowing). Provincial ids never start
  with a region code, so the two namespaces cannot collide.
* **One data, one source (article 16).** The *data items* of a resource are the top-level
  fields of its spec minus identifiers (the subject field, the parts of a composite
  subject in :data:`SUBJECT_KEY_FIELDS`, fields whose rule checks an identifier format in
  :data:`IDENTIFIER_CHECKS`: those are keys and references, not collected facts), minus
  the subject's name (:data:`SUBJECT_LABEL_FIELDS`: with the identifier it forms the
  identity pair every record about a person or legal person carries) and minus
  :data:`GENERIC_FIELDS` (bookkeeping such as ``updated_at``). An entry is refused
  when a resource in force, other than itself, with the same subject kind and an
  overlapping region (the province overlaps every city; two cities do not overlap: their
  subjects differ) already collects one of its data items.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import fastavro
import yaml

from streams.core.channel import Channel
from streams.core.pools import Pool
from streams.core.regions import PROVINCE

__all__ = [
    "GENERIC_FIELDS",
    "IDENTIFIER_CHECKS",
    "SUBJECT_KEY_FIELDS",
    "SUBJECT_LABEL_FIELDS",
    "UPDATE_FREQUENCIES",
    "Catalog",
    "CatalogError",
    "OpenAttribute",
    "Resource",
    "SchemaLoader",
    "ShareAttribute",
    "Status",
    "data_items",
    "field_names",
    "load_entries",
    "load_spec",
    "schema_file_loader",
]

UPDATE_FREQUENCIES = (
    "realtime",
    "hourly",
    "daily",
    "weekly",
    "monthly",
    "quarterly",
    "semiannual",
    "annual",
    "irregular",
)
#: identifier formats: a field checked with one of these is a key or a reference, not a data item
IDENTIFIER_CHECKS = frozenset({"citizen_id", "credit_code"})
#: fields that together identify a composite subject kind
SUBJECT_KEY_FIELDS: Mapping[str, tuple[str, ...]] = {"region_period": ("region", "period")}
#: the subject's name: it travels with the identifier as the identity pair used to check
#: who a record is about (姓名 + 身份证号, 名称 + 统一社会信用代码), not a separate fact
SUBJECT_LABEL_FIELDS = frozenset({"name", "subject_name"})
#: bookkeeping fields any spec may carry; never counted as data items
GENERIC_FIELDS = frozenset(
    {
        "id",
        "record_id",
        "subject_id",
        "version",
        "source",
        "remark",
        "remarks",
        "note",
        "notes",
        "created_at",
        "created_at_ms",
        "updated_at",
        "updated_at_ms",
        "observed_at",
        "observed_at_ms",
        "valid_from",
        "valid_to",
    }
)
_E = TypeVar("_E", bound=StrEnum)


#: reads a collection spec (a path below ``schemas/avro/``) as parsed JSON
SchemaLoader = Callable[[str], Mapping[str, Any]]


class CatalogError(ValueError):
    """A catalog entry or catalog change that cannot be accepted; the message says why.

    ``problems`` lists every reason when an entry fails several checks at once.
    """

    def __init__(self, message: str, problems: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.problems: tuple[str, ...] = tuple(problems) or (message,)


class Status(StrEnum):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    APPROVED = "approved"  # in force
    REJECTED = "rejected"
    RETIRED = "retired"
    SUPERSEDED = "superseded"  # was in force until a newer version was approved


class ShareAttribute(StrEnum):
    """共享属性: 无条件共享, 有条件共享, 不予共享."""

    UNCONDITIONAL = "unconditional"
    CONDITIONAL = "conditional"
    NOT_SHARED = "not_shared"


class OpenAttribute(StrEnum):
    """开放属性: 无条件开放, 有条件开放, 不予开放."""

    OPEN = "open"
    RESTRICTED = "restricted"
    NOT_OPEN = "not_open"


def _choice(kind: type[_E], value: Any, what: str) -> _E:
    """``kind(value)``; a value that is none of its members says which ones there are."""
    try:
        return kind(value)
    except ValueError:
        valid = ", ".join(member.value for member in kind)
        raise ValueError(f"{what} {value!r} is not one of: {valid}") from None


@dataclass(frozen=True, slots=True)
class Resource:
    """One catalog entry: a resource, its authoritative provider and its collection spec."""

    id: str
    name: str
    department: str
    provider: str
    pool: Pool
    schema: str  # path of the collection spec below schemas/avro/
    subject: str  # kind of subject identifier: citizen_id, credit_code, parcel_id, ...
    region: str = PROVINCE
    field_rules: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    update_frequency: str = "daily"
    share: ShareAttribute = ShareAttribute.UNCONDITIONAL
    share_conditions: str = ""
    share_legal_basis: str = ""
    open: OpenAttribute = OpenAttribute.OPEN
    open_legal_basis: str = ""
    consent_required: bool = False
    channels: frozenset[Channel] = frozenset({Channel.DIRECT})
    status: Status = Status.DRAFT
    version: int = 1
    description: str = ""

    @property
    def in_force(self) -> bool:
        return self.status is Status.APPROVED

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> Resource:
        """Build from a YAML/JSON entry; a missing or bad field raises :class:`CatalogError`."""
        rid = str(raw.get("id", "?"))
        try:
            share = raw.get("share") or {}
            open_ = raw.get("open") or {}
            return cls(
                id=str(raw["id"]),
                name=str(raw["name"]),
                department=str(raw["department"]),
                provider=str(raw["provider"]),
                pool=_choice(Pool, raw["pool"], "pool"),
                schema=str(raw["schema"]),
                subject=str(raw["subject"]),
                region=str(raw.get("region", PROVINCE)),
                field_rules={str(k): dict(v) for k, v in (raw.get("field_rules") or {}).items()},
                update_frequency=str(raw.get("update_frequency", "daily")),
                share=_choice(
                    ShareAttribute, share.get("attribute", "unconditional"), "share attribute"
                ),
                share_conditions=str(share.get("conditions", "")),
                share_legal_basis=str(share.get("legal_basis", "")),
                open=_choice(OpenAttribute, open_.get("attribute", "open"), "open attribute"),
                open_legal_basis=str(open_.get("legal_basis", "")),
                consent_required=bool(raw.get("consent_required", False)),
                channels=frozenset(
                    _choice(Channel, c, "channel") for c in raw.get("channels", ["DIRECT"])
                ),
                status=_choice(Status, raw.get("status", "draft"), "status"),
                version=int(raw.get("version", 1)),
                description=str(raw.get("description", "")),
            )
        except KeyError as exc:
            raise CatalogError(f"catalog entry {rid}: missing field {exc.args[0]!r}") from exc
        except (ValueError, TypeError, AttributeError) as exc:
            raise CatalogError(f"catalog entry {rid}: {exc}") from exc

    def to_mapping(self) -> dict[str, Any]:
        share: dict[str, Any] = {"attribute": self.share.value}
        if self.share_conditions:
            share["conditions"] = self.share_conditions
        if self.share_legal_basis:
            share["legal_basis"] = self.share_legal_basis
        open_: dict[str, Any] = {"attribute": self.open.value}
        if self.open_legal_basis:
            open_["legal_basis"] = self.open_legal_basis
        out: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "department": self.department,
            "provider": self.provider,
            "pool": self.pool.value,
            "schema": self.schema,
            "subject": self.subject,
            "region": self.region,
            "field_rules": {k: dict(v) for k, v in self.field_rules.items()},
            "update_frequency": self.update_frequency,
            "share": share,
            "open": open_,
            "consent_required": self.consent_required,
            "channels": sorted(c.value for c in self.channels),
            "status": self.status.value,
            "version": self.version,
        }
        if self.description:
            out["description"] = self.description
        return out


def load_entries(path: Path) -> list[Resource]:
    """Entries of one YAML or JSON file (a list of entries, or a single entry)."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise CatalogError(f"{path}: not valid YAML/JSON: {exc}") from exc
    items = raw if isinstance(raw, list) else [raw]
    if not all(isinstance(i, dict) for i in items):
        raise CatalogError(f"{path}: expected a list of catalog entries")
    return [Resource.from_mapping(i) for i in items]


class Catalog:
    """Index of catalog entries by id; ``in_force`` answers the ingest's per-record question."""

    def __init__(self, entries: Iterable[Resource] = ()) -> None:
        self._entries: dict[str, Resource] = {}
        for e in entries:
            self.put(e)

    def put(self, entry: Resource) -> None:
        self._entries[entry.id] = entry

    def get(self, resource_id: str) -> Resource | None:
        return self._entries.get(resource_id)

    def in_force(self, resource_id: str) -> Resource | None:
        e = self._entries.get(resource_id)
        return e if e is not None and e.in_force else None

    def with_entry(self, entry: Resource) -> Catalog:
        """A new catalog holding ``entry`` in place of its id's current one; this catalog is
        left unchanged (copy on write: readers of a published snapshot never see it change)."""
        other = Catalog()
        other._entries = {**self._entries, entry.id: entry}
        return other

    def __iter__(self) -> Any:
        return iter(list(self._entries.values()))

    def __len__(self) -> int:
        return len(self._entries)

    @classmethod
    def from_dir(cls, root: Path) -> Catalog:
        """Every ``*.yaml``, ``*.yml`` and ``*.json`` below ``root`` (the starter catalog)."""
        files = sorted(p for p in root.rglob("*") if p.suffix in {".yaml", ".yml", ".json"})
        return cls(e for p in files for e in load_entries(p))


# -- collection specs --------------------------------------------------------------------


def schema_file_loader(root: Path) -> SchemaLoader:
    """A :data:`SchemaLoader` reading ``root / path``; a path leaving ``root`` is refused."""
    base = root.resolve()

    def load(path: str) -> Mapping[str, Any]:
        target = (base / path).resolve()
        if not target.is_relative_to(base):
            raise CatalogError(f"collection spec {path!r} is outside {base}")
        raw = json.loads(target.read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise CatalogError(f"collection spec {path!r} is not a JSON object")
        return raw

    return load


def load_spec(entry: Resource, schema_loader: SchemaLoader) -> dict[str, Any]:
    """The entry's collection spec as JSON, checked to be a valid Avro record schema."""
    where = f"collection spec {entry.schema!r} of {entry.id}"
    path = entry.schema
    if (
        not path.endswith(".avsc")
        or path.startswith(("/", "\\"))
        or "\\" in path
        or ".." in Path(path).parts
    ):
        raise CatalogError(
            f"{where}: give a relative path of an .avsc file below schemas/avro/, "
            f"e.g. payloads/{entry.id.rsplit('.', 1)[-1]}.avsc"
        )
    try:
        raw = dict(schema_loader(path))
    except CatalogError:
        raise
    except (OSError, ValueError, TypeError) as exc:
        raise CatalogError(f"{where}: cannot be read: {exc}") from exc
    try:
        fastavro.parse_schema(json.loads(json.dumps(raw)), _write_hint=False)
    except Exception as exc:  # fastavro raises several types for invalid schemas
        raise CatalogError(f"{where}: not a valid Avro schema: {exc}") from exc
    if raw.get("type") != "record":
        raise CatalogError(f"{where}: must be an Avro record schema, not {raw.get('type')!r}")
    return raw


def field_names(spec: Mapping[str, Any]) -> list[str]:
    return [str(f["name"]) for f in spec.get("fields", [])]


def data_items(entry: Resource, spec: Mapping[str, Any]) -> frozenset[str]:
    """The data items ``entry`` collects: its spec's top-level fields that are neither
    identifiers of (or references to) subjects nor generic bookkeeping fields."""
    identifiers = {entry.subject, *SUBJECT_KEY_FIELDS.get(entry.subject, ())}
    identifiers |= {
        name for name, rule in entry.field_rules.items() if rule.get("check") in IDENTIFIER_CHECKS
    }
    return frozenset(
        n
        for n in field_names(spec)
        if n not in identifiers and n not in SUBJECT_LABEL_FIELDS and n not in GENERIC_FIELDS
    )
