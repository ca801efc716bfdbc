"""An access-log entry (one exchange decision) and its Avro encoding. No I/O."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.core.reasons import Reason
from streams.wire.codec import CodecError, Schema, decode, encode, read_fingerprint

__all__ = [
    "CHECKPOINT_SCHEMA_FILE",
    "ENTRY_SCHEMA_FILE",
    "AccessEntry",
    "Decision",
    "EntryCodec",
    "FieldMask",
]

ENTRY_SCHEMA_FILE = "access_entry.avsc"
CHECKPOINT_SCHEMA_FILE = "checkpoint.avsc"


class Decision(enum.StrEnum):
    ALLOWED = "ALLOWED"
    REFUSED = "REFUSED"
    TIMED_OUT = "TIMED_OUT"
    MALFORMED = "MALFORMED"


@dataclass(frozen=True, slots=True)
class FieldMask:
    field: str
    mask: str


@dataclass(frozen=True, slots=True)
class AccessEntry:
    """One exchange decision. ``seq`` is its position in the log, given when it is written
    (:class:`~streams.audit.log.EntryWriter`); -1 on an entry not yet numbered."""

    decision_id: str
    request_id: str
    requester: str
    official: str
    resource_id: str
    subjects: tuple[str, ...]
    purpose: str
    decision: Decision
    reason: str
    legal_basis: str
    policy_version: str
    catalog_version: str
    decided_at_ms: int
    case_id: str | None = None
    fields_returned: tuple[str, ...] = ()
    fields_masked: tuple[FieldMask, ...] = ()
    approval_version: str | None = None
    data_as_of_ms: int | None = None
    disclose_after_ms: int | None = None
    seq: int = field(default=-1)

    def __post_init__(self) -> None:
        object.__setattr__(self, "subjects", tuple(self.subjects))
        object.__setattr__(self, "fields_returned", tuple(self.fields_returned))
        object.__setattr__(self, "fields_masked", tuple(self.fields_masked))
        object.__setattr__(self, "decision", Decision(self.decision))

    def to_record(self, seq: int) -> dict[str, Any]:
        return {
            "seq": seq,
            "decision_id": self.decision_id,
            "request_id": self.request_id,
            "requester": self.requester,
            "official": self.official,
            "case_id": self.case_id,
            "resource_id": self.resource_id,
            "subjects": list(self.subjects),
            "fields_returned": list(self.fields_returned),
            "fields_masked": [{"field": m.field, "mask": m.mask} for m in self.fields_masked],
            "purpose": self.purpose,
            "decision": self.decision.value,
            "reason": self.reason,
            "legal_basis": self.legal_basis,
            "policy_version": self.policy_version,
            "catalog_version": self.catalog_version,
            "approval_version": self.approval_version,
            "data_as_of_ms": self.data_as_of_ms,
            "decided_at_ms": self.decided_at_ms,
            "disclose_after_ms": self.disclose_after_ms,
        }

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> AccessEntry:
        return cls(
            decision_id=rec["decision_id"],
            request_id=rec["request_id"],
            requester=rec["requester"],
            official=rec["official"],
            case_id=rec["case_id"],
            resource_id=rec["resource_id"],
            subjects=tuple(rec["subjects"]),
            fields_returned=tuple(rec["fields_returned"]),
            fields_masked=tuple(FieldMask(m["field"], m["mask"]) for m in rec["fields_masked"]),
            purpose=rec["purpose"],
            decision=Decision(rec["decision"]),
            reason=rec["reason"],
            legal_basis=rec["legal_basis"],
            policy_version=rec["policy_version"],
            catalog_version=rec["catalog_version"],
            approval_version=rec["approval_version"],
            data_as_of_ms=rec["data_as_of_ms"],
            decided_at_ms=rec["decided_at_ms"],
            disclose_after_ms=rec["disclose_after_ms"],
            seq=rec["seq"],
        )

    def to_json(self) -> dict[str, Any]:
        out = self.to_record(self.seq)
        out["subjects"] = list(self.subjects)
        return out


class EntryCodec:
    """Single-object Avro encoding of entries and checkpoints (``schemas/avro``)."""

    def __init__(self, schema_dir: Path) -> None:
        self.entry_schema = Schema.load(schema_dir / ENTRY_SCHEMA_FILE)
        self.checkpoint_schema = Schema.load(schema_dir / CHECKPOINT_SCHEMA_FILE)

    def encode_entry(self, entry: AccessEntry, seq: int) -> bytes:
        if seq < 0:
            raise ValueError(f"sequence number {seq}: from 0")
        return encode(self.entry_schema, entry.to_record(seq))

    def decode_entry(self, data: bytes) -> AccessEntry:
        """The entry in ``data``; :class:`~streams.wire.codec.CodecError` if it is none."""
        return AccessEntry.from_record(self._decode(data, self.entry_schema))

    @staticmethod
    def _decode(data: bytes, schema: Schema) -> Any:
        if read_fingerprint(data) != schema.fingerprint:
            raise CodecError(Reason.UNKNOWN_SCHEMA, f"not an {schema.name}")
        return decode(data, schema)

    def encode_checkpoint(self, record: Mapping[str, Any]) -> bytes:
        return encode(self.checkpoint_schema, record)

    def decode_checkpoint(self, data: bytes) -> dict[str, Any]:
        out: dict[str, Any] = self._decode(data, self.checkpoint_schema)
        return out

    def seqs(self, values: Sequence[bytes]) -> list[int | None]:
        """Each entry's sequence number; None where the bytes are no entry."""
        out: list[int | None] = []
        for v in values:
            try:
                out.append(int(self._decode(v, self.entry_schema)["seq"]))
            except Exception:  # any unreadable entry is reported by the verifier
                out.append(None)
        return out
