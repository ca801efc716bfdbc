"""Versions, review and history of the lists, and the approvals on record.

Like the catalog (:mod:`streams.catalog.review`): a department (or the data bureau) submits
a list; the data bureau approves or rejects it with a reason; an approved version is in force
until a newer one is approved. A city's list is checked against the province's lists in
force when it is submitted and again when it is approved (:func:`~streams.policy.model.derive`):
one that would lift a provincial restriction is refused. Approvals are granted and revoked by
the data bureau; each use is a change too.

Every command returns :class:`PolicyEvent` records (one change each: who, when, what, and
the list version or the approval it produced) for an append-only change log, and leaves a
bounded :class:`PolicyState` per key (``list/<region>/<kind>`` or ``approval/<id>``) for a
compacted snapshot topic. :class:`PolicySet` is the immutable view readers decide with.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from streams.catalog.review import DATA_BUREAU
from streams.core.regions import PROVINCE
from streams.core.review import StateBook, record_json
from streams.policy.approvals import Approval
from streams.policy.legal import PolicyError
from streams.policy.model import EffectiveLists, ListKind, PolicyList, check_city, derive, list_key

__all__ = [
    "PolicyAction",
    "PolicyBook",
    "PolicyEvent",
    "PolicyHistory",
    "PolicySet",
    "PolicyState",
    "StateRecord",
]

FORMAT = 1


class PolicyAction(StrEnum):
    SUBMITTED = "submitted"
    APPROVED = "approved"
    REJECTED = "rejected"
    GRANTED = "granted"
    REVOKED = "revoked"
    USED = "used"


def _loads(data: bytes | str, what: str) -> Mapping[str, Any]:
    try:
        raw = json.loads(data)
    except ValueError as exc:
        raise PolicyError(f"{what} is not JSON: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise PolicyError(f"{what}: unknown record format")
    return raw


@dataclass(frozen=True, slots=True)
class PolicyEvent:
    """One change: a list version submitted/approved/rejected (``document``: the version
    submitted; the others name ``version``), or an approval granted/revoked/used
    (``approval``: the approval as it is after the change)."""

    key: str
    seq: int
    action: PolicyAction
    actor: str
    at_ms: int
    version: int = 0
    reason: str = ""
    document: PolicyList | None = None
    approval: Approval | None = None

    @property
    def key_bytes(self) -> bytes:
        return self.key.encode()

    def to_mapping(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "key": self.key,
            "seq": self.seq,
            "action": self.action.value,
            "actor": self.actor,
            "at_ms": self.at_ms,
            "version": self.version,
            "reason": self.reason,
            "document": self.document.to_mapping() if self.document else None,
            "approval": self.approval.to_mapping() if self.approval else None,
        }

    def to_json(self) -> bytes:
        return record_json(self.to_mapping())

    @classmethod
    def from_json(cls, data: bytes | str) -> PolicyEvent:
        raw = _loads(data, "policy event")
        try:
            return cls(
                str(raw["key"]),
                int(raw["seq"]),
                PolicyAction(raw["action"]),
                str(raw["actor"]),
                int(raw["at_ms"]),
                int(raw.get("version", 0)),
                str(raw.get("reason", "")),
                PolicyList.from_mapping(raw["document"]) if raw.get("document") else None,
                Approval.from_mapping(raw["approval"]) if raw.get("approval") else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PolicyError(f"policy event: {exc}") from exc


@dataclass(frozen=True, slots=True)
class PolicyState:
    """The bounded current state of one key: a list's version in force and pending version
    (``last_version``: the highest number given so far), or one approval."""

    key: str
    seq: int
    in_force: PolicyList | None = None
    pending: PolicyList | None = None
    last_version: int = 0
    approval: Approval | None = None

    def to_mapping(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "seq": self.seq,
            "in_force": self.in_force.to_mapping() if self.in_force else None,
            "pending": self.pending.to_mapping() if self.pending else None,
            "last_version": self.last_version,
            "approval": self.approval.to_mapping() if self.approval else None,
        }

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> PolicyState:
        return cls(
            str(raw["key"]),
            int(raw["seq"]),
            PolicyList.from_mapping(raw["in_force"]) if raw.get("in_force") else None,
            PolicyList.from_mapping(raw["pending"]) if raw.get("pending") else None,
            int(raw.get("last_version", 0)),
            Approval.from_mapping(raw["approval"]) if raw.get("approval") else None,
        )


@dataclass(frozen=True, slots=True)
class StateRecord:
    """One record of the snapshot topic: a state and the change-log offset of its last
    change."""

    state: PolicyState
    change_offset: int

    @property
    def key(self) -> bytes:
        return self.state.key.encode()

    def to_json(self) -> bytes:
        return record_json(
            {
                "format": FORMAT,
                "state": self.state.to_mapping(),
                "change_offset": self.change_offset,
            }
        )

    @classmethod
    def from_json(cls, data: bytes | str) -> StateRecord:
        raw = _loads(data, "policy snapshot")
        try:
            return cls(PolicyState.from_mapping(raw["state"]), int(raw["change_offset"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise PolicyError(f"policy snapshot: {exc}") from exc


@dataclass(frozen=True, slots=True)
class PolicyHistory:
    """Every version of one list (or every state of one approval) and its changes."""

    key: str
    events: tuple[PolicyEvent, ...]

    @property
    def versions(self) -> list[PolicyList]:
        return [e.document for e in self.events if e.document is not None]

    @classmethod
    def replay(cls, key: str, events: Iterable[PolicyEvent]) -> PolicyHistory | None:
        out: list[PolicyEvent] = []
        for ev in events:
            if ev.key == key and ev.seq > (out[-1].seq if out else 0):
                out.append(ev)
        return cls(key, tuple(out)) if out else None


class PolicySet:
    """The lists in force and the approvals on record, immutable once built: what
    :func:`~streams.policy.decision.decide` reads. ``version`` names every list version in
    force (``220000:demand@3,...``)."""

    def __init__(
        self, lists: Iterable[PolicyList] = (), approvals: Iterable[Approval] = ()
    ) -> None:
        self.lists: dict[tuple[str, ListKind], PolicyList] = {
            (lst.region, lst.kind): lst for lst in lists
        }
        self.approvals: dict[str, Approval] = {a.id: a for a in approvals}
        self._effective: dict[str, EffectiveLists] = {}

    @property
    def version(self) -> str:
        return ",".join(lst.label for _, lst in sorted(self.lists.items())) or "none"

    def of(self, region: str) -> dict[ListKind, PolicyList]:
        return {k: lst for (r, k), lst in self.lists.items() if r == region}

    def effective(self, region: str) -> EffectiveLists:
        """What applies to the departments of ``region`` (a county maps to its city)."""
        city = region if region == PROVINCE else region[:4] + "00"
        got = self._effective.get(city)
        if got is None:
            got, _ = derive(self.of(PROVINCE), self.of(city) if city != PROVINCE else None)
            self._effective[city] = got
        return got


class PolicyBook(StateBook[PolicyState]):
    """Per key its :class:`PolicyState`; commands validate, change the book and return the
    events to write. ``reviewers`` approve and reject lists and grant and revoke approvals."""

    def __init__(self, reviewers: Iterable[str] = (DATA_BUREAU,)) -> None:
        super().__init__(reviewers)

    def _state_key(self, state: PolicyState) -> str:
        return state.key

    def _blank(self) -> PolicyBook:
        return PolicyBook(self.reviewers)

    def policy(self) -> PolicySet:
        return PolicySet(
            (s.in_force for s in self._states.values() if s.in_force is not None),
            (s.approval for s in self._states.values() if s.approval is not None),
        )

    # -- lists -------------------------------------------------------------------------
    def _in_force(self, region: str) -> dict[ListKind, PolicyList]:
        return {
            k: st.in_force
            for k in ListKind
            if (st := self._states.get(list_key(region, k))) is not None and st.in_force is not None
        }

    def _check(self, lst: PolicyList) -> None:
        if lst.region == PROVINCE:
            return
        city = {**self._in_force(lst.region), lst.kind: lst}
        check_city(self._in_force(PROVINCE), city)

    def _reviewer(self, actor: str, what: str) -> None:
        if actor not in self.reviewers:
            raise PolicyError(
                f"{actor} may not {what}: only the data bureau "
                f"({', '.join(sorted(self.reviewers))}) does"
            )

    def submit(self, lst: PolicyList, actor: str, at_ms: int) -> PolicyEvent:
        if not actor.strip():
            raise PolicyError("say who submits the list (--as DEPT)")
        self._check(lst)
        st = self._states.get(lst.key) or PolicyState(lst.key, 0)
        version = st.last_version + 1
        doc = lst.with_version(version)
        ev = PolicyEvent(
            lst.key, st.seq + 1, PolicyAction.SUBMITTED, actor, at_ms, version, document=doc
        )
        self._states[lst.key] = replace(st, seq=ev.seq, pending=doc, last_version=version)
        return ev

    def approve(self, key: str, actor: str, reason: str, at_ms: int) -> PolicyEvent:
        self._reviewer(actor, "approve policy lists")
        st = self._states.get(key)
        if st is None or st.pending is None:
            raise PolicyError(
                f"{key} has no version awaiting review; submit one first "
                f"(`xiangyun policy submit FILE --as DEPT`)"
            )
        self._check(st.pending)  # the province's lists may have changed since submission
        ev = PolicyEvent(
            key, st.seq + 1, PolicyAction.APPROVED, actor, at_ms, st.pending.version, reason
        )
        self._states[key] = replace(st, seq=ev.seq, in_force=st.pending, pending=None)
        return ev

    def reject(self, key: str, actor: str, reason: str, at_ms: int) -> PolicyEvent:
        self._reviewer(actor, "reject policy lists")
        if not reason.strip():
            raise PolicyError("a rejection needs a reason (--reason TEXT)")
        st = self._states.get(key)
        if st is None or st.pending is None:
            raise PolicyError(
                f"{key} has no version awaiting review; submit one first "
                f"(`xiangyun policy submit FILE --as DEPT`)"
            )
        ev = PolicyEvent(
            key, st.seq + 1, PolicyAction.REJECTED, actor, at_ms, st.pending.version, reason
        )
        self._states[key] = replace(st, seq=ev.seq, pending=None)
        return ev

    def bootstrap(
        self, lists: Iterable[PolicyList], reviewer: str, at_ms: int
    ) -> list[PolicyEvent]:
        """Submit and approve each list whose key has no state yet (province first)."""
        events: list[PolicyEvent] = []
        for lst in sorted(lists, key=lambda x: (x.region != PROVINCE, x.region, x.kind.value)):
            if lst.key in self._states:
                continue
            events.append(self.submit(lst, reviewer, at_ms))
            events.append(self.approve(lst.key, reviewer, "starter list", at_ms))
        return events

    # -- approvals ---------------------------------------------------------------------
    def grant(self, approval: Approval, at_ms: int) -> PolicyEvent:
        self._reviewer(approval.granted_by, "grant bulk-copy approvals")
        if approval.key in self._states:
            raise PolicyError(f"approval {approval.id} exists already; choose another id")
        ev = PolicyEvent(
            approval.key, 1, PolicyAction.GRANTED, approval.granted_by, at_ms, approval=approval
        )
        self._states[approval.key] = PolicyState(approval.key, 1, approval=approval)
        return ev

    def _approval(self, approval_id: str) -> PolicyState:
        st = self._states.get(f"approval/{approval_id}")
        if st is None or st.approval is None:
            raise PolicyError(f"no approval {approval_id} on record (`xiangyun approvals list`)")
        return st

    def revoke(self, approval_id: str, actor: str, reason: str, at_ms: int) -> PolicyEvent:
        self._reviewer(actor, "revoke approvals")
        st = self._approval(approval_id)
        assert st.approval is not None
        after = st.approval.revoked(actor, reason, at_ms)
        ev = PolicyEvent(
            st.key, st.seq + 1, PolicyAction.REVOKED, actor, at_ms, reason=reason, approval=after
        )
        self._states[st.key] = replace(st, seq=ev.seq, approval=after)
        return ev

    def use(self, approval_id: str, actor: str, at_ms: int) -> PolicyEvent:
        st = self._approval(approval_id)
        assert st.approval is not None
        after = st.approval.used(at_ms)
        ev = PolicyEvent(st.key, st.seq + 1, PolicyAction.USED, actor, at_ms, approval=after)
        self._states[st.key] = replace(st, seq=ev.seq, approval=after)
        return ev
