"""The exchange's decisions (共享交换), without Kafka: one request message in, the messages
to write out (answer, decision record, subscription, access-log entry) back.

:class:`Exchange` is fed what the request and pool topics hold, in order, and returns
:class:`Output` records and :class:`~streams.audit.entry.AccessEntry` entries for the
runtime to produce in one transaction with the input offsets. It keeps, in memory:

- the decisions store: ``requester|request_id`` → the answer's bytes (also written to the
  compacted decisions topic and restored from it), so a retried request is answered with
  the answer it got the first time, byte for byte, and never decided twice;
- the active subscriptions (also written to the compacted subscriptions topic).

The requester is the department whose request topic the message came from: a field of the
request cannot change it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from streams.audit.entry import AccessEntry, Decision, FieldMask
from streams.catalog.model import Catalog
from streams.core.random_ids import RandomIds
from streams.core.regions import city_of, is_region
from streams.exchange.messages import (
    Answer,
    AnswerDecision,
    AnswerRecord,
    Delivery,
    ExchangeCodec,
    ExchangeRequest,
    RequestKind,
    Subscription,
    SubscriptionStatus,
)
from streams.kafka.topics import Topics
from streams.policy.decision import Decision as PolicyDecision
from streams.policy.decision import FieldSource, Request
from streams.policy.legal import (
    BULK_COPY,
    PIPL_28,
    PIPL_34,
    REGISTERED_DEPARTMENTS,
    PolicyError,
    PolicyReason,
)
from streams.policy.masks import apply_masks
from streams.policy.model import department_region
from streams.policy.review import PolicySet
from streams.units.model import UnitRegister
from streams.units.review import DATA_BUREAU
from streams.wire.codec import CodecError

__all__ = [
    "OK",
    "Exchange",
    "Output",
    "PolicyPort",
    "Step",
    "decision_key",
    "usage_terms",
]

log = logging.getLogger(__name__)

#: the reason code of an allowed answer
OK = "OK"
#: the most subjects one request may name (a bigger copy is a subscription or several asks)
MAX_SUBJECTS = 10_000

_ENTRY_DECISION = {
    AnswerDecision.ALLOWED: Decision.ALLOWED,
    AnswerDecision.REFUSED: Decision.REFUSED,
    AnswerDecision.TIMEOUT: Decision.TIMED_OUT,
    AnswerDecision.MALFORMED: Decision.MALFORMED,
}


def usage_terms(purpose: str) -> str:
    """The terms every answer carries (article 24)."""
    return (
        f"仅限用于所申明的职责（{purpose}），不得用于其他目的，不得向第三方提供或转让"
        f"（《吉林省公共数据管理办法》第二十四条）。For the stated duty ({purpose}) only; "
        "no onward transfer (article 24)."
    )


def decision_key(requester: str, request_id: str) -> bytes:
    """Key of a decision in the decisions topic and store."""
    return f"{requester}|{request_id}".encode()


class PolicyPort(Protocol):
    """What the exchange needs of :class:`~streams.kafka.policy_store.PolicyStore`."""

    def current(self) -> PolicySet: ...
    def decide(
        self,
        request: Request,
        catalog: Catalog,
        *,
        fields_of: FieldSource,
        now_ms: int | None = None,
    ) -> PolicyDecision: ...
    def claim(self, decision: PolicyDecision) -> PolicyDecision: ...


@dataclass(frozen=True, slots=True)
class Output:
    """One record to produce: ``partition`` None lets the partitioner choose."""

    topic: str
    key: bytes
    value: bytes
    partition: int | None = None


@dataclass(slots=True)
class Step:
    """What one input message gave: records and entries in the order to produce them, and
    what the metrics count."""

    out: list[Output | AccessEntry] = field(default_factory=list)
    answers: list[tuple[str, str]] = field(default_factory=list)  # (decision, reason)
    retries: int = 0
    deliveries: list[tuple[str, str]] = field(default_factory=list)  # (resource, decision)


#: one input message: key, value, topic, partition, offset
Message = tuple[bytes | None, bytes | None, str, int, int]
#: (resource_id, subject_id) -> the view's record, or None
Records = Mapping[tuple[str, str], Mapping[str, Any] | None]
#: the view's records of (resource_id, subject_id) keys, in order
ViewRead = Callable[[Sequence[tuple[str, str]]], Sequence[Mapping[str, Any] | None]]
Freshness = Callable[[], tuple[int | None, int | None]]
PoolDecoder = Callable[[bytes], Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class _Arrived:
    """A request message as read: who asks, and the request or why it is malformed."""

    topic: str
    requester: str | None
    fallback_id: str
    req: ExchangeRequest | None = None
    problem: str | None = None


def _now_ms() -> int:
    import time

    return time.time_ns() // 1_000_000


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return value.hex()
    return value if isinstance(value, str) else str(value)


def provenance(rec: Mapping[str, Any]) -> dict[str, Any]:
    """Where a pool record came from, as an answer carries it."""
    return {
        "provider": rec["provider"],
        "region": rec["region"],
        "channel": rec["channel"],
        "version": int(rec["version"]),
        "record_id": str(rec["record_id"]),
        "observed_at_ms": int(rec["observed_at_ms"]),
        "accepted_at_ms": int(rec["accepted_at_ms"]),
        "source_topic": rec["source_topic"],
        "source_partition": int(rec["source_partition"]),
        "source_offset": int(rec["source_offset"]),
        "catalog_version": int(rec["catalog_version"]),
        "verification_count": int(rec["verification_count"]),
    }


def masked_record(
    subject_id: str,
    rec: Mapping[str, Any] | None,
    decision: PolicyDecision,
    mask_key: str,
) -> AnswerRecord:
    """The subject's pool record as the decision lets it out: the fields given clear, the
    masked ones masked, the withheld and unrequested ones left out. Raises
    :class:`PolicyError` when a mask cannot be applied (a keyed hash without the key)."""
    if rec is None:
        return AnswerRecord(subject_id, False)
    payload = rec.get("payload")
    if not isinstance(payload, Mapping):
        return AnswerRecord(subject_id, True, {}, provenance(rec))
    wanted = {*decision.fields, *decision.masks}
    chosen = {k: v for k, v in payload.items() if k in wanted}
    masked = apply_masks(chosen, decision.masks, mask_key or None)
    return AnswerRecord(subject_id, True, {k: _text(v) for k, v in masked.items()}, provenance(rec))


def region_matches(filter_region: str, record_region: str) -> bool:
    """A record collected in ``record_region`` is within ``filter_region`` (the province
    covers all, a city its districts)."""
    if filter_region == record_region or filter_region == "220000":
        return True
    try:
        return city_of(record_region) == filter_region
    except ValueError:
        return False


class Exchange:
    """Decides request messages and matches pool changes (see the module's description)."""

    def __init__(
        self,
        topics: Topics,
        codec: ExchangeCodec,
        policy: PolicyPort,
        catalog: Callable[[], Catalog],
        fields_of: FieldSource,
        units: Callable[[], UnitRegister],
        view_read: ViewRead,
        *,
        freshness: Freshness = lambda: (None, None),
        decode_pool: PoolDecoder | None = None,
        mask_key: str = "",
        clock: Callable[[], int] = _now_ms,
        new_id: Callable[[], str] | None = None,
        sync_policy: Callable[[], object] = lambda: None,
    ) -> None:
        self.topics = topics
        self.codec = codec
        self.policy = policy
        self.catalog = catalog
        self.fields_of = fields_of
        self.units = units
        self.view_read = view_read
        self.freshness = freshness
        self.decode_pool = decode_pool
        self.mask_key = mask_key
        #: reads the policy topic to its end: an approval granted or revoked a moment before
        #: the request that names it must already count
        self.sync_policy = sync_policy
        self.clock = clock
        self.new_id = new_id or RandomIds().hex
        self.request_prefix = f"{topics.prefix}.request."
        self.pool_topics = frozenset(topics.pools.values())
        self.decisions: dict[bytes, bytes] = {}
        self.subscriptions: dict[str, Subscription] = {}

    # -- state ---------------------------------------------------------------------------
    def restore_decisions(self, items: Iterable[tuple[bytes, bytes | None]]) -> int:
        n = 0
        for key, value in items:
            if value is None:
                self.decisions.pop(key, None)
            else:
                self.decisions[key] = value
                n += 1
        return n

    def drop_decisions(self, requesters: set[str]) -> None:
        """Forget the decisions of ``requesters`` (their partitions moved elsewhere)."""
        for key in [k for k in self.decisions if k.split(b"|", 1)[0].decode() in requesters]:
            del self.decisions[key]

    def restore_subscription(self, value: bytes | None) -> None:
        if value is None:
            return
        try:
            sub = self.codec.decode_subscription(value)
        except CodecError as exc:
            log.error("subscriptions topic: a record that is no subscription: %s", exc)
            return
        if sub.active:
            self.subscriptions[sub.subscription_id] = sub
        else:
            self.subscriptions.pop(sub.subscription_id, None)

    def requester_of(self, topic: str) -> str | None:
        """The department of a request topic, or None when the topic names none."""
        if not topic.startswith(self.request_prefix):
            return None
        dept = topic[len(self.request_prefix) :]
        try:
            department_region(dept)
        except PolicyError:
            return None
        return dept

    # -- messages ------------------------------------------------------------------------
    def handle(
        self,
        key: bytes | None,
        value: bytes | None,
        topic: str,
        partition: int,
        offset: int,
    ) -> Step:
        return self.handle_batch([(key, value, topic, partition, offset)])[0]

    def handle_batch(self, messages: Sequence[Message]) -> list[Step]:
        """Every message's step, in order. The view is read once for the whole batch (one
        Redis round trip, not one per subject): every record a well-formed new query
        names, whether or not the policy then lets it out."""
        arrived = [None if m[2] in self.pool_topics else self._arrive(*m) for m in messages]
        if any(a is not None and a.req is not None and a.req.approval_id for a in arrived):
            self.sync_policy()  # once per batch, only for the rare requests citing approvals
        wanted = list(
            dict.fromkeys(
                (a.req.resource_id, s)
                for a in arrived
                if a is not None and a.req is not None and self._reads_view(a)
                for s in a.req.subjects
            )
        )
        records = dict(zip(wanted, self.view_read(wanted), strict=True)) if wanted else {}
        return [
            self.pool_change(*m) if a is None else self._request(a, m[3], m[4], records)
            for m, a in zip(messages, arrived, strict=True)
        ]

    def _arrive(
        self, key: bytes | None, value: bytes | None, topic: str, partition: int, offset: int
    ) -> _Arrived:
        fallback_id = (key or b"").decode("utf-8", "replace") or f"{topic}:{partition}:{offset}"
        requester = self.requester_of(topic)
        if requester is None:
            return _Arrived(topic, None, fallback_id, problem=f"{topic} names no department")
        try:
            req = self.codec.decode_request(value or b"")
        except CodecError as exc:
            return _Arrived(topic, requester, fallback_id, problem=f"undecodable: {exc}")
        return _Arrived(topic, requester, fallback_id, req, self._missing(req))

    def _reads_view(self, a: _Arrived) -> bool:
        return (
            a.req is not None
            and a.requester is not None
            and a.problem is None
            and a.req.kind is RequestKind.QUERY
            and decision_key(a.requester, a.req.request_id) not in self.decisions
        )

    def _request(self, a: _Arrived, partition: int, offset: int, records: Records) -> Step:
        step = Step()
        now = self.clock()
        if a.problem is not None:
            if a.requester is None or a.req is None:
                # No department to answer, or no request: the entry says what arrived.
                self._malformed(step, None, a.requester or a.topic, a.fallback_id, a.problem, now)
            else:
                rid = a.req.request_id or a.fallback_id
                self._malformed(step, a.req, a.requester, rid, a.problem, now, store=partition)
            return step
        req, requester = a.req, a.requester
        assert req is not None and requester is not None  # a request without a problem
        first = self.decisions.get(decision_key(requester, req.request_id))
        if first is not None:
            self._retry(step, req, requester, first, partition, offset, now)
            return step
        answer, extra = self._decide(req, requester, now, records)
        self._answer(step, req, requester, answer, partition, extra)
        return step

    @staticmethod
    def _missing(req: ExchangeRequest) -> str | None:
        if not req.request_id.strip():
            return "request_id is empty"
        if not req.official.strip():
            return "official is empty: name the acting official"
        if req.deadline_ms <= 0:
            return "deadline_ms is not set"
        if req.kind in (RequestKind.QUERY, RequestKind.SUBSCRIBE) and not req.resource_id:
            return "resource_id is empty"
        if req.kind is RequestKind.QUERY and not req.subjects:
            return "subjects is empty: name one subject or more"
        if req.kind is RequestKind.QUERY and len(req.subjects) > MAX_SUBJECTS:
            return f"{len(req.subjects)} subjects: at most {MAX_SUBJECTS} per request"
        if any(not s for s in req.subjects):
            return "an empty subject key"
        if req.kind is RequestKind.SUBSCRIBE:
            if bool(req.subjects) == bool(req.region):
                return "a subscription names subjects or a region, one of the two"
            if req.region and not is_region(req.region):
                return f"region {req.region!r} is not a GB/T 2260 code of the province"
        if (
            req.kind in (RequestKind.UNSUBSCRIBE, RequestKind.REVOKE_SUBSCRIPTION)
            and not req.subscription_id
        ):
            return "subscription_id is empty"
        return None

    # -- outputs -------------------------------------------------------------------------
    def _base(self, req: ExchangeRequest, requester: str, now: int) -> dict[str, Any]:
        return {
            "request_id": req.request_id,
            "kind": req.kind,
            "requester": requester,
            "resource_id": req.resource_id,
            "purpose": req.purpose,
            "decided_at_ms": now,
            "decision_id": self.new_id(),
            "usage_terms": usage_terms(req.purpose),
            "approval_id": req.approval_id,
        }

    def _refusal(
        self,
        req: ExchangeRequest,
        requester: str,
        now: int,
        reason: str,
        basis: str,
        message: str,
        *,
        decision: AnswerDecision = AnswerDecision.REFUSED,
        policy_version: str = "",
        catalog_version: str = "",
    ) -> Answer:
        return Answer(
            **self._base(req, requester, now),
            decision=decision,
            reason=reason,
            message=message,
            legal_basis=basis,
            policy_version=policy_version,
            catalog_version=catalog_version,
        )

    def _malformed(
        self,
        step: Step,
        req: ExchangeRequest | None,
        requester: str,
        request_id: str,
        message: str,
        now: int,
        *,
        store: int | None = None,
    ) -> None:
        """A MALFORMED answer (to the requester's reply topic if it is known) and entry."""
        answer = Answer(
            request_id=request_id,
            kind=req.kind if req else RequestKind.QUERY,
            decision=AnswerDecision.MALFORMED,
            reason="MALFORMED",
            message=message,
            legal_basis="",
            requester=requester,
            resource_id=req.resource_id if req else "",
            purpose=req.purpose if req else "",
            decided_at_ms=now,
            decision_id=self.new_id(),
        )
        known = requester if self.requester_of(self.request_prefix + requester) else None
        value = self.codec.encode_answer(answer)
        if known is not None:
            step.out.append(Output(self.topics.reply(known), request_id.encode(), value))
            if store is not None and req is not None and req.request_id:
                dkey = decision_key(known, req.request_id)
                self.decisions[dkey] = value
                step.out.append(Output(self.topics.exchange_decisions, dkey, value, store))
        step.out.append(self._entry(answer, req, reason="MALFORMED"))
        step.answers.append((answer.decision.value, answer.reason))

    def _answer(
        self,
        step: Step,
        req: ExchangeRequest,
        requester: str,
        answer: Answer,
        partition: int,
        extra: Sequence[Output],
    ) -> None:
        value = self.codec.encode_answer(answer)
        dkey = decision_key(requester, req.request_id)
        self.decisions[dkey] = value
        step.out.append(Output(self.topics.reply(requester), req.request_id.encode(), value))
        step.out.append(Output(self.topics.exchange_decisions, dkey, value, partition))
        step.out.extend(extra)
        step.out.append(self._entry(answer, req))
        step.answers.append((answer.decision.value, answer.reason))

    def _retry(
        self,
        step: Step,
        req: ExchangeRequest,
        requester: str,
        first: bytes,
        partition: int,
        offset: int,
        now: int,
    ) -> None:
        """The answer given the first time, again; the entry says it is a retry."""
        answer = self.codec.decode_answer(first)
        step.out.append(Output(self.topics.reply(requester), req.request_id.encode(), first))
        entry = self._entry(
            answer,
            req,
            reason=f"RETRY:{answer.reason}",
            decision_id=f"{answer.decision_id}:retry:{partition}:{offset}",
            decided_at_ms=now,
        )
        step.out.append(entry)
        step.answers.append((answer.decision.value, "RETRY"))
        step.retries += 1

    def _entry(
        self,
        answer: Answer,
        req: ExchangeRequest | None,
        *,
        reason: str | None = None,
        decision_id: str | None = None,
        decided_at_ms: int | None = None,
    ) -> AccessEntry:
        observed = [
            int(r.provenance["observed_at_ms"]) for r in answer.records if r.provenance is not None
        ]
        returned = [f for f in dict.fromkeys(k for r in answer.records for k in r.fields)]
        return AccessEntry(
            decision_id=decision_id or answer.decision_id,
            request_id=answer.request_id,
            requester=answer.requester,
            official=req.official if req else "",
            case_id=req.case_id if req else None,
            resource_id=answer.resource_id,
            subjects=req.subjects if req else (),
            purpose=answer.purpose,
            decision=_ENTRY_DECISION[answer.decision],
            reason=reason or answer.reason,
            legal_basis=answer.legal_basis,
            policy_version=answer.policy_version,
            catalog_version=answer.catalog_version,
            decided_at_ms=answer.decided_at_ms if decided_at_ms is None else decided_at_ms,
            fields_returned=tuple(returned),
            fields_masked=tuple(FieldMask(f, m) for f, m in answer.masks.items()),
            approval_version=answer.approval_id,
            data_as_of_ms=max(observed) if observed else None,
        )

    # -- deciding ------------------------------------------------------------------------
    def _catalog_version(self, catalog: Catalog, resource_id: str) -> str:
        resource = catalog.get(resource_id)
        return f"{resource.id}@{resource.version}" if resource is not None else ""

    def _duty_basis(self, requester: str, purpose: str) -> str:
        try:
            eff = self.policy.current().effective(department_region(requester))
        except PolicyError:
            return ""
        entry = eff.responsibility.get(requester)
        duty = entry.duty(purpose) if entry is not None else None
        return duty.legal_basis if duty is not None else ""

    def _decide(
        self, req: ExchangeRequest, requester: str, now: int, records: Records
    ) -> tuple[Answer, list[Output]]:
        if not self.units().registered(requester):
            return self._refusal(
                req,
                requester,
                now,
                "UNREGISTERED_DEPARTMENT",
                REGISTERED_DEPARTMENTS,
                f"{requester} is not a unit in force in the unit register",
            ), []
        if now > req.deadline_ms:
            return self._refusal(
                req,
                requester,
                now,
                "TIMEOUT",
                "",
                f"the request reached the exchange {now - req.deadline_ms} ms after its deadline",
                decision=AnswerDecision.TIMEOUT,
            ), []
        if req.kind is RequestKind.UNSUBSCRIBE or req.kind is RequestKind.REVOKE_SUBSCRIPTION:
            return self._end_subscription(req, requester, now)
        catalog = self.catalog()
        catalog_version = self._catalog_version(catalog, req.resource_id)
        subscribe = req.kind is RequestKind.SUBSCRIBE
        decision = self.policy.decide(
            Request(
                requester,
                req.resource_id,
                req.purpose,
                fields=req.fields or None,
                subjects=max(1, len(req.subjects)),
                whole_pool=subscribe and req.region is not None,
                approval_id=req.approval_id,
            ),
            catalog,
            fields_of=self.fields_of,
            now_ms=now,
        )
        decision = self.policy.claim(decision)  # a bulk copy's use counts before data goes out
        if not decision.allowed:
            assert decision.reason is not None
            return self._refusal(
                req,
                requester,
                now,
                decision.reason.value,
                decision.legal_basis,
                decision.message,
                policy_version=decision.policy_version,
                catalog_version=catalog_version,
            ), []
        found: list[AnswerRecord] = []
        if not subscribe:
            keys = [(req.resource_id, s) for s in req.subjects]
            missing = [k for k in keys if k not in records]
            if missing:  # not read with the batch
                records = {**records, **dict(zip(missing, self.view_read(missing), strict=True))}
            try:
                found = [
                    masked_record(s, records[k], decision, self.mask_key)
                    for s, k in zip(req.subjects, keys, strict=True)
                ]
            except PolicyError as exc:
                return self._refusal(
                    req,
                    requester,
                    now,
                    "MASK_UNAVAILABLE",
                    PIPL_28,
                    f"a mask the policy requires cannot be applied: {exc}",
                    policy_version=decision.policy_version,
                    catalog_version=catalog_version,
                ), []
        applied_at, lag = self.freshness() if not subscribe else (None, None)
        base = self._base(req, requester, now)
        base["approval_id"] = decision.approval_id
        sub_id = f"SUB-{base['decision_id'][:16]}" if subscribe else None
        answer = Answer(
            **base,
            decision=AnswerDecision.ALLOWED,
            reason=OK,
            message=decision.message,
            legal_basis=self._duty_basis(requester, req.purpose),
            records=tuple(found),
            masks={f: m.value for f, m in decision.masks.items()},
            withheld=dict(decision.withheld),
            policy_version=decision.policy_version,
            catalog_version=catalog_version,
            view_applied_at_ms=applied_at,
            view_lag_records=lag,
            subscription_id=sub_id,
        )
        extra: list[Output] = []
        if sub_id is not None:
            sub = Subscription(
                subscription_id=sub_id,
                requester=requester,
                resource_id=req.resource_id,
                subjects=req.subjects,
                region=req.region,
                fields=req.fields,
                purpose=req.purpose,
                official=req.official,
                case_id=req.case_id,
                approval_id=decision.approval_id,
                created_at_ms=now,
                changed_at_ms=now,
                changed_by=requester,
                decision_id=answer.decision_id,
            )
            self.subscriptions[sub_id] = sub
            extra.append(self._subscription_record(sub))
        return answer, extra

    def _subscription_record(self, sub: Subscription) -> Output:
        return Output(
            self.topics.exchange_subscriptions,
            sub.subscription_id.encode(),
            self.codec.encode_subscription(sub),
        )

    def _end_subscription(
        self, req: ExchangeRequest, requester: str, now: int
    ) -> tuple[Answer, list[Output]]:
        sid = req.subscription_id or ""
        sub = self.subscriptions.get(sid)
        bureau = req.kind is RequestKind.REVOKE_SUBSCRIPTION
        if bureau and requester != DATA_BUREAU:
            return self._refusal(
                req,
                requester,
                now,
                "NOT_THE_DATA_BUREAU",
                REGISTERED_DEPARTMENTS,
                f"only the data bureau ({DATA_BUREAU}) revokes subscriptions; a department "
                "ends its own with UNSUBSCRIBE",
            ), []
        if sub is None or (not bureau and sub.requester != requester):
            return self._refusal(
                req,
                requester,
                now,
                "UNKNOWN_SUBSCRIPTION",
                PIPL_34,
                f"{requester} has no active subscription {sid}",
            ), []
        ended = Subscription(
            **{
                **{f: getattr(sub, f) for f in sub.__dataclass_fields__},
                "status": SubscriptionStatus.REVOKED if bureau else SubscriptionStatus.UNSUBSCRIBED,
                "changed_at_ms": now,
                "changed_by": requester,
                "reason": req.reason or "",
            }
        )
        del self.subscriptions[sid]
        base = self._base(req, requester, now)
        base["resource_id"] = sub.resource_id
        base["purpose"] = req.purpose or sub.purpose
        base["usage_terms"] = ""
        answer = Answer(
            **base,
            decision=AnswerDecision.ALLOWED,
            reason=OK,
            message=f"subscription {sid} ended ({ended.status.value})",
            legal_basis="",
            subscription_id=sid,
        )
        return answer, [self._subscription_record(ended)]

    # -- subscriptions: a pool change ----------------------------------------------------
    def pool_change(
        self, key: bytes | None, value: bytes | None, topic: str, partition: int, offset: int
    ) -> Step:
        step = Step()
        if not self.subscriptions or key is None or value is None:
            return step
        resource_id, _, subject_id = key.decode("utf-8", "replace").partition("|")
        subs = [s for s in self.subscriptions.values() if s.resource_id == resource_id]
        if not subs or self.decode_pool is None:
            return step
        try:
            rec = self.decode_pool(value)
        except Exception as exc:  # a pool record the view cannot read is not delivered
            log.error(
                "subscriptions: pool record %s:%d:%d unreadable: %s", topic, partition, offset, exc
            )
            return step
        for sub in subs:
            if int(rec["accepted_at_ms"]) < sub.created_at_ms:
                continue
            if sub.region is not None:
                if not region_matches(sub.region, str(rec["region"])):
                    continue
            elif subject_id not in sub.subjects:
                continue
            self._deliver(step, sub, subject_id, rec, topic, partition, offset)
        return step

    def _deliver(
        self,
        step: Step,
        sub: Subscription,
        subject_id: str,
        rec: Mapping[str, Any],
        topic: str,
        partition: int,
        offset: int,
    ) -> None:
        now = self.clock()
        catalog = self.catalog()
        # Each delivery is one subject: the bulk copy was decided (and its approval used)
        # when the subscription was made; the approval must still be in force.
        decision = self.policy.decide(
            Request(sub.requester, sub.resource_id, sub.purpose, fields=sub.fields or None),
            catalog,
            fields_of=self.fields_of,
            now_ms=now,
        )
        if decision.allowed and sub.approval_id is not None:
            approval = self.policy.current().approvals.get(sub.approval_id)
            problem = approval.problem(now) if approval is not None else None
            if approval is None or (
                problem is not None and problem is not PolicyReason.APPROVAL_EXHAUSTED
            ):
                decision = PolicyDecision(
                    False,
                    sub.requester,
                    sub.resource_id,
                    sub.purpose,
                    decision.policy_version,
                    problem or PolicyReason.APPROVAL_REVOKED,
                    BULK_COPY,
                    f"approval {sub.approval_id} is no longer in force",
                )
        record: AnswerRecord | None = None
        allowed = decision.allowed
        reason, basis, message = OK, self._duty_basis(sub.requester, sub.purpose), ""
        if not allowed:
            assert decision.reason is not None
            reason, basis, message = decision.reason.value, decision.legal_basis, decision.message
        else:
            try:
                record = masked_record(subject_id, rec, decision, self.mask_key)
            except PolicyError as exc:
                allowed = False
                reason, basis = "MASK_UNAVAILABLE", PIPL_28
                message = f"a mask the policy requires cannot be applied: {exc}"
        delivery = Delivery(
            subscription_id=sub.subscription_id,
            requester=sub.requester,
            resource_id=sub.resource_id,
            purpose=sub.purpose,
            decision=AnswerDecision.ALLOWED if allowed else AnswerDecision.REFUSED,
            reason=reason,
            legal_basis=basis,
            record=record,
            masks={f: m.value for f, m in decision.masks.items()} if allowed else {},
            usage_terms=usage_terms(sub.purpose),
            policy_version=decision.policy_version,
            catalog_version=self._catalog_version(catalog, sub.resource_id),
            pool_topic=topic,
            pool_partition=partition,
            pool_offset=offset,
            decided_at_ms=now,
            decision_id=self.new_id(),
        )
        step.out.append(
            Output(
                self.topics.reply(sub.requester),
                sub.subscription_id.encode(),
                self.codec.encode_delivery(delivery),
            )
        )
        if not allowed:  # the policy no longer allows it: the subscription ends
            ended = Subscription(
                **{
                    **{f: getattr(sub, f) for f in sub.__dataclass_fields__},
                    "status": SubscriptionStatus.ENDED,
                    "changed_at_ms": now,
                    "changed_by": "exchange",
                    "reason": f"{reason}: {message}",
                }
            )
            self.subscriptions.pop(sub.subscription_id, None)
            step.out.append(self._subscription_record(ended))
        step.out.append(
            AccessEntry(
                decision_id=delivery.decision_id,
                request_id=f"{sub.subscription_id}@{topic}:{partition}:{offset}",
                requester=sub.requester,
                official=sub.official,
                case_id=sub.case_id,
                resource_id=sub.resource_id,
                subjects=(subject_id,),
                purpose=sub.purpose,
                decision=Decision.ALLOWED if allowed else Decision.REFUSED,
                reason=f"DELIVERY:{reason}",
                legal_basis=basis,
                policy_version=decision.policy_version,
                catalog_version=delivery.catalog_version,
                decided_at_ms=now,
                fields_returned=tuple(record.fields) if record is not None else (),
                fields_masked=tuple(FieldMask(f, m) for f, m in delivery.masks.items()),
                approval_version=sub.approval_id,
                data_as_of_ms=int(rec["observed_at_ms"]),
            )
        )
        step.deliveries.append((sub.resource_id, delivery.decision.value))
