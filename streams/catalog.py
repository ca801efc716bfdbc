"""The public data resource catalog (公共数据资源目录), articles 14 to 18.

A :class:`Resource` says what may be collected, by whom (its one authoritative provider),
into which pool, under which collection spec, and how it may be shared and opened.
:class:`Catalog` is the in-memory index every agent reads without a round trip per record.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from streams.envelope import Channel
from streams.pools import Pool

__all__ = [
    "PROVINCE",
    "Catalog",
    "CatalogError",
    "OpenAttribute",
    "Resource",
    "ShareAttribute",
    "Status",
    "load_entries",
]

PROVINCE = "220000"


class CatalogError(ValueError):
    """A catalog entry or catalog change that cannot be accepted; the message says why."""


class Status(StrEnum):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    APPROVED = "approved"  # in force
    REJECTED = "rejected"
    RETIRED = "retired"


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
                pool=Pool(raw["pool"]),
                schema=str(raw["schema"]),
                subject=str(raw["subject"]),
                region=str(raw.get("region", PROVINCE)),
                field_rules={str(k): dict(v) for k, v in (raw.get("field_rules") or {}).items()},
                update_frequency=str(raw.get("update_frequency", "daily")),
                share=ShareAttribute(share.get("attribute", "unconditional")),
                share_conditions=str(share.get("conditions", "")),
                share_legal_basis=str(share.get("legal_basis", "")),
                open=OpenAttribute(open_.get("attribute", "open")),
                open_legal_basis=str(open_.get("legal_basis", "")),
                consent_required=bool(raw.get("consent_required", False)),
                channels=frozenset(Channel(c) for c in raw.get("channels", ["DIRECT"])),
                status=Status(raw.get("status", "draft")),
                version=int(raw.get("version", 1)),
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
        return {
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

    def __iter__(self) -> Any:
        return iter(list(self._entries.values()))

    def __len__(self) -> int:
        return len(self._entries)

    @classmethod
    def from_dir(cls, root: Path) -> Catalog:
        """Every ``*.yaml``, ``*.yml`` and ``*.json`` below ``root`` (the starter catalog)."""
        files = sorted(p for p in root.rglob("*") if p.suffix in {".yaml", ".yml", ".json"})
        return cls(e for p in files for e in load_entries(p))
