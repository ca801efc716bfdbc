"""The exchange's messages and their Avro single-object encoding. No I/O.

- :class:`ExchangeRequest`: what a department writes to ``<prefix>.request.<dept>``;
- :class:`Answer`: what it reads back from ``<prefix>.reply.<dept>``;
- :class:`Subscription`: a standing request, kept in ``<prefix>.exchange.subscriptions``;
- :class:`Delivery`: one pool change delivered to a subscriber's reply topic.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.core.reasons import Reason
from streams.wire.codec import CodecError, Schema, decode, encode, read_fingerprint

__all__ = [
    "ANSWER_SCHEMA_FILE",
    "DELIVERY_SCHEMA_FILE",
    "REQUEST_SCHEMA_FILE",
    "SUBSCRIPTION_SCHEMA_FILE",
    "Answer",
    "AnswerDecision",
    "AnswerRecord",
    "Delivery",
    "ExchangeCodec",
    "ExchangeRequest",
    "RequestKind",
    "Subscription",
    "SubscriptionStatus",
]

REQUEST_SCHEMA_FILE = "exchange_request.avsc"
ANSWER_SCHEMA_FILE = "exchange_answer.avsc"
SUBSCRIPTION_SCHEMA_FILE = "subscription.avsc"
DELIVERY_SCHEMA_FILE = "subscription_delivery.avsc"


class RequestKind(enum.StrEnum):
    QUERY = "QUERY"
    SUBSCRIBE = "SUBSCRIBE"
    UNSUBSCRIBE = "UNSUBSCRIBE"
    REVOKE_SUBSCRIPTION = "REVOKE_SUBSCRIPTION"


class AnswerDecision(enum.StrEnum):
    ALLOWED = "ALLOWED"
    REFUSED = "REFUSED"
    TIMEOUT = "TIMEOUT"
    MALFORMED = "MALFORMED"


class SubscriptionStatus(enum.StrEnum):
    ACTIVE = "ACTIVE"
    UNSUBSCRIBED = "UNSUBSCRIBED"  # ended by the department
    REVOKED = "REVOKED"  # ended by the data bureau
    ENDED = "ENDED"  # ended by the policy (a delivery was refused)


@dataclass(frozen=True, slots=True)
class ExchangeRequest:
    request_id: str
    resource_id: str
    subjects: tuple[str, ...]
    purpose: str
    official: str
    deadline_ms: int
    fields: tuple[str, ...] = ()
    case_id: str | None = None
    approval_id: str | None = None
    kind: RequestKind = RequestKind.QUERY
    region: str | None = None
    subscription_id: str | None = None
    reason: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "subjects", tuple(self.subjects))
        object.__setattr__(self, "fields", tuple(self.fields))
        object.__setattr__(self, "kind", RequestKind(self.kind))

    def to_record(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "kind": self.kind.value,
            "resource_id": self.resource_id,
            "subjects": list(self.subjects),
            "fields": list(self.fields),
            "purpose": self.purpose,
            "case_id": self.case_id,
            "official": self.official,
            "deadline_ms": self.deadline_ms,
            "approval_id": self.approval_id,
            "region": self.region,
            "subscription_id": self.subscription_id,
            "reason": self.reason,
        }

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> ExchangeRequest:
        return cls(
            request_id=rec["request_id"],
            kind=RequestKind(rec["kind"]),
            resource_id=rec["resource_id"],
            subjects=tuple(rec["subjects"]),
            fields=tuple(rec["fields"]),
            purpose=rec["purpose"],
            case_id=rec["case_id"],
            official=rec["official"],
            deadline_ms=rec["deadline_ms"],
            approval_id=rec["approval_id"],
            region=rec["region"],
            subscription_id=rec["subscription_id"],
            reason=rec["reason"],
        )


@dataclass(frozen=True, slots=True)
class AnswerRecord:
    """One subject of an answer: its fields after masking and where they came from."""

    subject_id: str
    found: bool
    fields: Mapping[str, str | None] = field(default_factory=dict)
    provenance: Mapping[str, Any] | None = None

    def to_record(self) -> dict[str, Any]:
        return {
            "subject_id": self.subject_id,
            "found": self.found,
            "fields": dict(self.fields),
            "provenance": dict(self.provenance) if self.provenance is not None else None,
        }

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> AnswerRecord:
        prov = rec["provenance"]
        return cls(rec["subject_id"], rec["found"], dict(rec["fields"]), prov)


@dataclass(frozen=True, slots=True)
class Answer:
    """The exchange's answer to one request."""

    request_id: str
    decision: AnswerDecision
    reason: str
    message: str
    legal_basis: str
    requester: str
    resource_id: str
    purpose: str
    decided_at_ms: int
    decision_id: str
    kind: RequestKind = RequestKind.QUERY
    records: tuple[AnswerRecord, ...] = ()
    masks: Mapping[str, str] = field(default_factory=dict)
    withheld: Mapping[str, str] = field(default_factory=dict)
    usage_terms: str = ""
    policy_version: str = ""
    catalog_version: str = ""
    view_applied_at_ms: int | None = None
    view_lag_records: int | None = None
    subscription_id: str | None = None
    approval_id: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "decision", AnswerDecision(self.decision))
        object.__setattr__(self, "kind", RequestKind(self.kind))
        object.__setattr__(self, "records", tuple(self.records))

    @property
    def allowed(self) -> bool:
        return self.decision is AnswerDecision.ALLOWED

    def to_record(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "kind": self.kind.value,
            "decision": self.decision.value,
            "reason": self.reason,
            "message": self.message,
            "legal_basis": self.legal_basis,
            "requester": self.requester,
            "resource_id": self.resource_id,
            "purpose": self.purpose,
            "records": [r.to_record() for r in self.records],
            "masks": [{"field": k, "mask": v} for k, v in self.masks.items()],
            "withheld": [{"field": k, "legal_basis": v} for k, v in self.withheld.items()],
            "usage_terms": self.usage_terms,
            "policy_version": self.policy_version,
            "catalog_version": self.catalog_version,
            "view_applied_at_ms": self.view_applied_at_ms,
            "view_lag_records": self.view_lag_records,
            "subscription_id": self.subscription_id,
            "approval_id": self.approval_id,
            "decided_at_ms": self.decided_at_ms,
            "decision_id": self.decision_id,
        }

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> Answer:
        return cls(
            request_id=rec["request_id"],
            kind=RequestKind(rec["kind"]),
            decision=AnswerDecision(rec["decision"]),
            reason=rec["reason"],
            message=rec["message"],
            legal_basis=rec["legal_basis"],
            requester=rec["requester"],
            resource_id=rec["resource_id"],
            purpose=rec["purpose"],
            records=tuple(AnswerRecord.from_record(r) for r in rec["records"]),
            masks={m["field"]: m["mask"] for m in rec["masks"]},
            withheld={w["field"]: w["legal_basis"] for w in rec["withheld"]},
            usage_terms=rec["usage_terms"],
            policy_version=rec["policy_version"],
            catalog_version=rec["catalog_version"],
            view_applied_at_ms=rec["view_applied_at_ms"],
            view_lag_records=rec["view_lag_records"],
            subscription_id=rec["subscription_id"],
            approval_id=rec["approval_id"],
            decided_at_ms=rec["decided_at_ms"],
            decision_id=rec["decision_id"],
        )

    def to_json(self) -> dict[str, Any]:
        return self.to_record()


@dataclass(frozen=True, slots=True)
class Subscription:
    subscription_id: str
    requester: str
    resource_id: str
    subjects: tuple[str, ...]
    region: str | None
    fields: tuple[str, ...]
    purpose: str
    official: str
    created_at_ms: int
    decision_id: str
    case_id: str | None = None
    approval_id: str | None = None
    status: SubscriptionStatus = SubscriptionStatus.ACTIVE
    changed_at_ms: int = 0
    changed_by: str = ""
    reason: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "subjects", tuple(self.subjects))
        object.__setattr__(self, "fields", tuple(self.fields))
        object.__setattr__(self, "status", SubscriptionStatus(self.status))

    @property
    def active(self) -> bool:
        return self.status is SubscriptionStatus.ACTIVE

    def to_record(self) -> dict[str, Any]:
        return {
            "subscription_id": self.subscription_id,
            "requester": self.requester,
            "resource_id": self.resource_id,
            "subjects": list(self.subjects),
            "region": self.region,
            "fields": list(self.fields),
            "purpose": self.purpose,
            "case_id": self.case_id,
            "official": self.official,
            "approval_id": self.approval_id,
            "status": self.status.value,
            "created_at_ms": self.created_at_ms,
            "changed_at_ms": self.changed_at_ms or self.created_at_ms,
            "changed_by": self.changed_by or self.requester,
            "reason": self.reason,
            "decision_id": self.decision_id,
        }

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> Subscription:
        return cls(
            subscription_id=rec["subscription_id"],
            requester=rec["requester"],
            resource_id=rec["resource_id"],
            subjects=tuple(rec["subjects"]),
            region=rec["region"],
            fields=tuple(rec["fields"]),
            purpose=rec["purpose"],
            case_id=rec["case_id"],
            official=rec["official"],
            approval_id=rec["approval_id"],
            status=SubscriptionStatus(rec["status"]),
            created_at_ms=rec["created_at_ms"],
            changed_at_ms=rec["changed_at_ms"],
            changed_by=rec["changed_by"],
            reason=rec["reason"],
            decision_id=rec["decision_id"],
        )


@dataclass(frozen=True, slots=True)
class Delivery:
    """One pool change delivered to a subscriber."""

    subscription_id: str
    requester: str
    resource_id: str
    purpose: str
    decision: AnswerDecision
    reason: str
    legal_basis: str
    record: AnswerRecord | None
    masks: Mapping[str, str]
    usage_terms: str
    policy_version: str
    catalog_version: str
    pool_topic: str
    pool_partition: int
    pool_offset: int
    decided_at_ms: int
    decision_id: str

    def to_record(self) -> dict[str, Any]:
        return {
            "subscription_id": self.subscription_id,
            "requester": self.requester,
            "resource_id": self.resource_id,
            "purpose": self.purpose,
            "decision": self.decision.value,
            "reason": self.reason,
            "legal_basis": self.legal_basis,
            "record": self.record.to_record() if self.record is not None else None,
            "masks": [{"field": k, "mask": v} for k, v in self.masks.items()],
            "usage_terms": self.usage_terms,
            "policy_version": self.policy_version,
            "catalog_version": self.catalog_version,
            "pool_topic": self.pool_topic,
            "pool_partition": self.pool_partition,
            "pool_offset": self.pool_offset,
            "decided_at_ms": self.decided_at_ms,
            "decision_id": self.decision_id,
        }

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> Delivery:
        raw = rec["record"]
        return cls(
            subscription_id=rec["subscription_id"],
            requester=rec["requester"],
            resource_id=rec["resource_id"],
            purpose=rec["purpose"],
            decision=AnswerDecision(rec["decision"]),
            reason=rec["reason"],
            legal_basis=rec["legal_basis"],
            record=AnswerRecord.from_record(raw) if raw is not None else None,
            masks={m["field"]: m["mask"] for m in rec["masks"]},
            usage_terms=rec["usage_terms"],
            policy_version=rec["policy_version"],
            catalog_version=rec["catalog_version"],
            pool_topic=rec["pool_topic"],
            pool_partition=rec["pool_partition"],
            pool_offset=rec["pool_offset"],
            decided_at_ms=rec["decided_at_ms"],
            decision_id=rec["decision_id"],
        )


class ExchangeCodec:
    """Single-object Avro encoding of the exchange's messages (``schemas/avro``)."""

    def __init__(self, schema_dir: Path) -> None:
        self.request_schema = Schema.load(schema_dir / REQUEST_SCHEMA_FILE)
        self.answer_schema = Schema.load(schema_dir / ANSWER_SCHEMA_FILE)
        self.subscription_schema = Schema.load(schema_dir / SUBSCRIPTION_SCHEMA_FILE)
        self.delivery_schema = Schema.load(schema_dir / DELIVERY_SCHEMA_FILE)

    @staticmethod
    def _decode(data: bytes, schema: Schema) -> Any:
        if len(data) < 10 or read_fingerprint(data) != schema.fingerprint:
            raise CodecError(Reason.UNKNOWN_SCHEMA, f"not an {schema.name}")
        return decode(data, schema)

    def encode_request(self, request: ExchangeRequest) -> bytes:
        return encode(self.request_schema, request.to_record())

    def decode_request(self, data: bytes) -> ExchangeRequest:
        """The request in ``data``; :class:`CodecError` if the bytes are none."""
        return ExchangeRequest.from_record(self._decode(data, self.request_schema))

    def encode_answer(self, answer: Answer) -> bytes:
        return encode(self.answer_schema, answer.to_record())

    def decode_answer(self, data: bytes) -> Answer:
        return Answer.from_record(self._decode(data, self.answer_schema))

    def encode_subscription(self, sub: Subscription) -> bytes:
        return encode(self.subscription_schema, sub.to_record())

    def decode_subscription(self, data: bytes) -> Subscription:
        return Subscription.from_record(self._decode(data, self.subscription_schema))

    def encode_delivery(self, delivery: Delivery) -> bytes:
        return encode(self.delivery_schema, delivery.to_record())

    def decode_delivery(self, data: bytes) -> Delivery:
        return Delivery.from_record(self._decode(data, self.delivery_schema))

    def decode_reply(self, data: bytes) -> Answer | Delivery:
        """What a reply topic holds: an answer or a subscription delivery."""
        if len(data) >= 10 and read_fingerprint(data) == self.delivery_schema.fingerprint:
            return self.decode_delivery(data)
        return self.decode_answer(data)
