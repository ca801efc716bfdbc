"""The review workflow of the unit register (名录的申报与审核).

A unit's parent (or the unit itself, for an update) submits it; the data bureau approves or
rejects each submitted version with a reason; an approved version is registered until a
newer version is approved (the older one becomes ``superseded``). Every change is kept.

The workflow is the catalog's (:mod:`streams.catalog.review`), run by the same code
(:mod:`streams.core.review`): each command returns :class:`UnitEvent` records for an
append-only change log (the history) and leaves in :class:`UnitBook` a bounded
:class:`UnitState` per code (the version in force and the latest one) that a compacted
snapshot topic holds as a :class:`UnitSnapshot`. :meth:`UnitBook.apply` ignores events the
book already holds, :meth:`UnitBook.restore` takes a snapshot unless the book holds that
change or a later one; :class:`UnitHistory` replays one unit's events for people. Commands
apply their events to the book before returning them; a store runs them on
:meth:`UnitBook.copy` and applies them to its real book once written.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from streams.core.review import (
    ReviewBook,
    Versions,
    Workflow,
    change_fields,
    change_mapping,
    parse_record,
    record_json,
    replay,
)
from streams.units.model import (
    KIND_ORDER,
    Unit,
    UnitError,
    UnitRegister,
    UnitStatus,
    validate_unit,
)

__all__ = [
    "DATA_BUREAU",
    "UnitAction",
    "UnitBook",
    "UnitChange",
    "UnitEvent",
    "UnitHistory",
    "UnitSnapshot",
    "UnitState",
]

#: the provincial data bureau (省政务服务和数字化局): reviews the register and the catalog
DATA_BUREAU = "220000-ZSJ"
EVENT_FORMAT = 1
SNAPSHOT_FORMAT = 1


class UnitAction(StrEnum):
    SUBMITTED = "submitted"
    APPROVED = "approved"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class UnitChange:
    """One history entry: ``actor`` moved ``version`` from ``from_status`` to ``to_status``;
    ``diff`` maps each changed field to ``[old, new]``."""

    seq: int
    action: UnitAction
    actor: str
    at_ms: int
    version: int
    from_status: UnitStatus | None
    to_status: UnitStatus
    reason: str = ""
    diff: Mapping[str, Any] = field(default_factory=dict)
    superseded_version: int | None = None

    def to_mapping(self) -> dict[str, Any]:
        return change_mapping(self, {k: list(v) for k, v in self.diff.items()})

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> UnitChange:
        return cls(
            **change_fields(raw, UnitAction, UnitStatus),
            diff={str(k): tuple(v) for k, v in (raw.get("diff") or {}).items()},
        )


#: how a unit's versions read and change under review
_WORKFLOW: Workflow[Unit, UnitStatus] = Workflow(
    error=UnitError,
    number=lambda u: u.version,
    status=lambda u: u.status,
    with_status=lambda u, status: replace(u, status=UnitStatus(status)),
    approved=UnitStatus.APPROVED,
    superseded=UnitStatus.SUPERSEDED,
    pending=frozenset({UnitStatus.SUBMITTED}),
    event_key=lambda ev: ev.code,
    state_key=lambda st: st.code,
    new_version=lambda ev: ev.unit,
)


@dataclass(frozen=True, slots=True)
class UnitState(Versions[Unit]):
    """One unit's current state: the version in force and the latest version, at most two;
    ``seq`` is the number of the last change it includes."""

    workflow = _WORKFLOW
    code: str
    seq: int
    versions: tuple[Unit, ...]

    def to_mapping(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "seq": self.seq,
            "versions": [v.to_mapping() for v in self.versions],
        }

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> UnitState:
        return cls(
            str(raw["code"]),
            int(raw["seq"]),
            tuple(Unit.from_mapping(v) for v in raw["versions"]),
        )


@dataclass(frozen=True, slots=True)
class UnitEvent:
    """One record of the change log: key ``code``; a submission carries the version."""

    code: str
    change: UnitChange
    unit: Unit | None = None

    @property
    def key(self) -> bytes:
        return self.code.encode()

    @property
    def seq(self) -> int:
        return self.change.seq

    def to_mapping(self) -> dict[str, Any]:
        return {
            "format": EVENT_FORMAT,
            "code": self.code,
            "change": self.change.to_mapping(),
            "unit": self.unit.to_mapping() if self.unit is not None else None,
        }

    def to_json(self) -> bytes:
        return record_json(self.to_mapping())

    @classmethod
    def from_json(cls, data: bytes | str) -> UnitEvent:
        raw = parse_record(data, "unit event", UnitError)
        try:
            if raw.get("format") != EVENT_FORMAT:
                raise UnitError(f"unknown unit event format {raw.get('format')!r}")
            code = str(raw["code"])
            change = UnitChange.from_mapping(raw["change"])
            unit = Unit.from_mapping(raw["unit"]) if raw.get("unit") else None
            submitted = change.action is UnitAction.SUBMITTED
            if (
                change.seq < 1
                or submitted != (unit is not None)
                or (unit is not None and (unit.code != code or unit.version != change.version))
            ):
                raise UnitError(f"unit event for {code!r} is inconsistent")
            return cls(code, change, unit)
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, UnitError):
                raise
            raise UnitError(f"malformed unit event: {exc!r}") from exc


@dataclass(frozen=True, slots=True)
class UnitSnapshot:
    """One record of the snapshot topic: key ``code``, the unit's bounded state and the
    change-log offset of the last change it includes (written in the same transaction)."""

    state: UnitState
    change_offset: int

    @property
    def code(self) -> str:
        return self.state.code

    @property
    def key(self) -> bytes:
        return self.state.code.encode()

    def to_json(self) -> bytes:
        return record_json(
            {
                "format": SNAPSHOT_FORMAT,
                "code": self.state.code,
                "change_offset": self.change_offset,
                "state": self.state.to_mapping(),
            }
        )

    @classmethod
    def from_json(cls, data: bytes | str) -> UnitSnapshot:
        raw = parse_record(data, "unit snapshot", UnitError)
        try:
            if raw.get("format") != SNAPSHOT_FORMAT:
                raise UnitError(f"unknown unit snapshot format {raw.get('format')!r}")
            state = UnitState.from_mapping(raw["state"])
            if state.code != raw["code"] or state.seq < 1 or not state.versions:
                raise UnitError(f"unit snapshot for {raw['code']!r} is inconsistent")
            return cls(state, int(raw["change_offset"]))
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, UnitError):
                raise
            raise UnitError(f"malformed unit snapshot: {exc!r}") from exc


@dataclass(frozen=True, slots=True)
class UnitHistory(Versions[Unit]):
    """Every version of one unit and its whole history, oldest first (:meth:`replay`)."""

    workflow = _WORKFLOW
    code: str
    versions: tuple[Unit, ...]
    history: tuple[UnitChange, ...]

    @property
    def seq(self) -> int:
        return self.history[-1].seq if self.history else 0

    @classmethod
    def replay(cls, code: str, events: Iterable[UnitEvent]) -> UnitHistory | None:
        replayed = replay(_WORKFLOW, code, events)
        return cls(code, *replayed) if replayed is not None else None

    def to_mapping(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "versions": [v.to_mapping() for v in self.versions],
            "history": [c.to_mapping() for c in self.history],
        }


def _diff(old: Unit | None, new: Unit) -> dict[str, tuple[Any, Any]]:
    a = old.to_mapping() if old is not None else {}
    b = new.to_mapping()
    out = {}
    for k in sorted(b):
        if k in ("status", "version"):
            continue
        if a.get(k) != b[k]:
            out[k] = (a.get(k), b[k])
    return out


class UnitBook(ReviewBook[Unit, UnitState, UnitEvent]):
    """The current state of every unit; applies the review commands.

    ``reviewers`` approve and reject (the data bureau by default). A unit is submitted by a
    reviewer, by its parent (a registered unit), or, for an update, by the unit itself."""

    workflow = _WORKFLOW
    change_type = UnitChange
    reviewed = "the unit register"

    def __init__(self, *, reviewers: Iterable[str] = (DATA_BUREAU,)) -> None:
        super().__init__(reviewers)

    # -- what the register says ----------------------------------------------------------
    @staticmethod
    def _new_state(key: str, seq: int, versions: tuple[Unit, ...]) -> UnitState:
        return UnitState(key, seq, versions)

    @staticmethod
    def _status_diff(was: StrEnum, to: StrEnum) -> dict[str, tuple[Any, Any]]:
        return {"status": (was.value, to.value)}

    def _blank(self) -> UnitBook:
        return UnitBook(reviewers=self.reviewers)

    # -- reading -------------------------------------------------------------------------
    def register(self) -> UnitRegister:
        """Per code its version in force, else its latest version."""
        return UnitRegister((s.in_force or s.latest) for s in self.states())

    # -- commands ------------------------------------------------------------------------
    def submit(self, unit: Unit, actor: str, at_ms: int) -> UnitEvent:
        """Submit ``unit`` for review: a new unit, a resubmission after a rejection or an
        update of the version in force (which stays in force until this one is approved).
        The book assigns the version number. Raises :class:`UnitError` if it fails
        :func:`~streams.units.model.validate_unit` or ``actor`` may not submit it."""
        state = self._states.get(unit.code)
        self._check_submitter(unit, state, actor)
        pending = state.pending if state else None
        if pending is not None:
            raise UnitError(
                f"{unit.code} version {pending.version} awaits review; wait for the data "
                f"bureau to approve or reject it"
            )
        number = max(v.version for v in state.versions) + 1 if state else 1
        new = replace(unit, status=UnitStatus.SUBMITTED, version=number)
        validate_unit(new, self.register())
        base = (state.in_force or state.latest) if state else None
        change = UnitChange(
            seq=state.seq + 1 if state else 1,
            action=UnitAction.SUBMITTED,
            actor=actor,
            at_ms=at_ms,
            version=number,
            from_status=None,
            to_status=UnitStatus.SUBMITTED,
            diff=_diff(base, new),
        )
        return self._emit(UnitEvent(unit.code, change, new))

    def approve(self, code: str, actor: str, reason: str, at_ms: int) -> UnitEvent:
        """Register the submitted version (validated again: the register may have changed)."""
        state, pending = self._submitted(code, "approve")
        self._check_reviewer(actor, "approve")
        validate_unit(pending, self.register())
        current = state.in_force
        return self._emit(
            UnitEvent(
                code,
                self._change(
                    state,
                    UnitAction.APPROVED,
                    actor,
                    at_ms,
                    pending,
                    UnitStatus.APPROVED,
                    reason,
                    current.version if current else None,
                ),
            )
        )

    def reject(self, code: str, actor: str, reason: str, at_ms: int) -> UnitEvent:
        """Refuse the submitted version; ``reason`` (required) says why."""
        state, pending = self._submitted(code, "reject")
        self._check_reviewer(actor, "reject")
        self._require_reason(reason, "reject", code)
        return self._emit(
            UnitEvent(
                code,
                self._change(
                    state, UnitAction.REJECTED, actor, at_ms, pending, UnitStatus.REJECTED, reason
                ),
            )
        )

    def bootstrap(self, units: Iterable[Unit], reviewer: str, at_ms: int) -> list[UnitEvent]:
        """Load a starter register: each unit not yet in the book is submitted and approved
        by ``reviewer``, parents before children. Units already in the book are left alone
        (the book, not the files, is the source of truth). Returns the events to write."""
        ordered = sorted(units, key=lambda u: (KIND_ORDER.index(u.kind), u.code))
        codes = [u.code for u in ordered]
        twice = sorted({c for c in codes if codes.count(c) > 1})
        if twice:
            raise UnitError(f"starter register lists {', '.join(twice)} more than once")
        events: list[UnitEvent] = []
        for u in ordered:
            if u.code in self._states:
                continue
            events.append(self.submit(u, reviewer, at_ms))
            events.append(self.approve(u.code, reviewer, "starter register", at_ms))
        return events

    # -- helpers -------------------------------------------------------------------------
    def _check_submitter(self, unit: Unit, state: UnitState | None, actor: str) -> None:
        if actor in self.reviewers:
            return
        allowed = {unit.parent} if unit.parent else set()
        if state is not None:
            registered = state.in_force or state.latest
            allowed |= {registered.code, *([registered.parent] if registered.parent else [])}
        if actor not in allowed:
            who = " or ".join(sorted(a for a in allowed if a)) or "the data bureau"
            raise UnitError(
                f"{actor or '(no actor)'} may not submit {unit.code}: it is submitted by "
                f"{who} or the data bureau ({', '.join(sorted(self.reviewers))})"
            )

    def _submitted(self, code: str, verb: str) -> tuple[UnitState, Unit]:
        state = self._states.get(code)
        if state is None:
            raise UnitError(f"no unit {code!r} in the register")
        pending = state.pending
        if pending is None:
            raise UnitError(
                f"cannot {verb} {code}: no version awaits review (latest is version "
                f"{state.latest.version}, {state.latest.status})"
            )
        return state, pending
