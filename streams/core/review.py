"""The review workflow the registers share: versions submitted, approved or rejected, a
change log of numbered changes and a bounded current state per key.

The catalog (:mod:`streams.catalog.review`) and the unit register
(:mod:`streams.units.review`) keep their versions differently (an entry with its spec, a
unit), name their keys differently (resource id, unit code) and raise their own errors, but
they advance, bound and replay their states the same way: :class:`Workflow` says how one
register's versions read and change, :class:`ReviewBook` holds the states and applies the
events, :class:`Versions` reads a set of versions. :class:`StateBook`, the states per key
restored from snapshots, serves the policy's book (:mod:`streams.policy.review`) as well.
Pure: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar

__all__ = [
    "Change",
    "Event",
    "ReviewBook",
    "Sequenced",
    "State",
    "StateBook",
    "Versions",
    "Workflow",
    "change_fields",
    "change_mapping",
    "parse_record",
    "record_json",
    "replay",
]

VersionT = TypeVar("VersionT")
VersionT_co = TypeVar("VersionT_co", covariant=True)
StatusT = TypeVar("StatusT", bound=StrEnum)


class Change(Protocol):
    """One change of a register: ``actor`` moved ``version`` from ``from_status`` to
    ``to_status`` (an approval names the version it took out of force)."""

    @property
    def seq(self) -> int: ...

    @property
    def action(self) -> StrEnum: ...

    @property
    def actor(self) -> str: ...

    @property
    def at_ms(self) -> int: ...

    @property
    def version(self) -> int: ...

    @property
    def from_status(self) -> StrEnum | None: ...

    @property
    def to_status(self) -> StrEnum: ...

    @property
    def reason(self) -> str: ...

    @property
    def superseded_version(self) -> int | None: ...


def parse_record(data: bytes | str, what: str, error: type[ValueError]) -> Mapping[str, Any]:
    """A record of a register's topic as a JSON object; ``error`` (the register's own)
    says why it is not one."""
    try:
        raw = json.loads(data)
    except ValueError as exc:
        raise error(f"{what} is not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise error(f"{what} is not a JSON object")
    return raw


def record_json(mapping: Mapping[str, Any]) -> bytes:
    """A record as the registers write it: compact, sorted, UTF-8 (the same state always
    gives the same bytes)."""
    return json.dumps(mapping, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


def change_mapping(change: Change, diff: Any) -> dict[str, Any]:
    """A change as its record holds it, with the register's own form of its ``diff``."""
    return {
        "seq": change.seq,
        "action": change.action.value,
        "actor": change.actor,
        "at_ms": change.at_ms,
        "version": change.version,
        "from_status": change.from_status.value if change.from_status else None,
        "to_status": change.to_status.value,
        "reason": change.reason,
        "diff": diff,
        "superseded_version": change.superseded_version,
    }


def change_fields(
    raw: Mapping[str, Any], action: Callable[[str], StrEnum], status: Callable[[str], StrEnum]
) -> dict[str, Any]:
    """The fields of a change read back from :func:`change_mapping`, all but its diff."""
    sup = raw.get("superseded_version")
    return {
        "seq": int(raw["seq"]),
        "action": action(raw["action"]),
        "actor": str(raw["actor"]),
        "at_ms": int(raw["at_ms"]),
        "version": int(raw["version"]),
        "from_status": status(raw["from_status"]) if raw.get("from_status") else None,
        "to_status": status(raw["to_status"]),
        "reason": str(raw.get("reason", "")),
        "superseded_version": int(sup) if sup is not None else None,
    }


@dataclass(frozen=True)
class Workflow(Generic[VersionT, StatusT]):
    """How one register's versions read and change under review."""

    #: the register's own error (a ValueError)
    error: type[ValueError]
    number: Callable[[VersionT], int]
    status: Callable[[VersionT], StatusT]
    with_status: Callable[[VersionT, StrEnum], VersionT]
    #: in force
    approved: StatusT
    #: was in force until a newer version was approved
    superseded: StatusT
    #: not yet decided (at most one version at a time)
    pending: frozenset[StatusT]
    #: the key an event or a state is about (resource id, unit code)
    event_key: Callable[[Any], str]
    state_key: Callable[[Any], str]
    #: the version an event creates or overwrites, if it does
    new_version: Callable[[Any], VersionT | None]

    def in_force(self, versions: Iterable[VersionT]) -> VersionT | None:
        return next((v for v in versions if self.status(v) is self.approved), None)

    def pending_of(self, versions: Iterable[VersionT]) -> VersionT | None:
        return next((v for v in versions if self.status(v) in self.pending), None)

    def advance(
        self,
        key: str,
        seq: int,
        versions: tuple[VersionT, ...],
        change: Change,
        new: VersionT | None,
    ) -> tuple[VersionT, ...]:
        """The versions of ``key`` (at change ``seq``) after ``change``, which must follow
        it; ``new`` is the version the change creates or overwrites, if it does. Every
        version is kept: callers bound them."""
        if change.seq != seq + 1:
            raise self.error(
                f"{key}: change #{change.seq} does not follow #{seq}: "
                f"changes #{seq + 1} to #{change.seq - 1} are missing"
            )
        current = next((v for v in versions if self.number(v) == change.version), None)
        found = self.status(current) if current is not None else None
        if found is not change.from_status:
            raise self.error(
                f"{key} change #{change.seq} moves version {change.version} from "
                f"{change.from_status or 'nothing'}, but it is {found or 'not there'}"
            )
        if new is not None:
            return (*(v for v in versions if v is not current), new)
        out = []
        for v in versions:
            if v is current:
                v = self.with_status(v, change.to_status)
            elif change.superseded_version is not None and self.number(v) == (
                change.superseded_version
            ):
                v = self.with_status(v, self.superseded)
            out.append(v)
        return tuple(out)

    def bounded(self, versions: tuple[VersionT, ...]) -> tuple[VersionT, ...]:
        """The versions a current state keeps: the one in force and the latest."""
        last = len(versions) - 1
        return tuple(
            v for i, v in enumerate(versions) if i == last or self.status(v) is self.approved
        )


class Versions(Generic[VersionT]):
    """What a set of versions says: the one in force, the pending one, the latest."""

    __slots__ = ()
    versions: tuple[VersionT, ...]
    workflow: ClassVar[Workflow[Any, Any]]

    @property
    def in_force(self) -> VersionT | None:
        version: VersionT | None = self.workflow.in_force(self.versions)
        return version

    @property
    def pending(self) -> VersionT | None:
        """The version awaiting a decision, if any (at most one at a time)."""
        version: VersionT | None = self.workflow.pending_of(self.versions)
        return version

    @property
    def latest(self) -> VersionT:
        return self.versions[-1]


class State(Protocol[VersionT_co]):
    """One key's bounded current state."""

    @property
    def seq(self) -> int: ...

    @property
    def versions(self) -> tuple[VersionT_co, ...]: ...


class Event(Protocol):
    """One record of a change log."""

    @property
    def seq(self) -> int: ...

    @property
    def change(self) -> Change: ...


StateT = TypeVar("StateT", bound=State[Any])
EventT = TypeVar("EventT", bound=Event)


class Sequenced(Protocol):
    """A key's state: ``seq`` is the number of the last change it includes."""

    @property
    def seq(self) -> int: ...


SequencedT = TypeVar("SequencedT", bound=Sequenced)


class StateBook(Generic[SequencedT]):
    """The bounded current state of every key of one register, as its snapshot topic holds
    them; ``reviewers`` decide on its changes. Subclasses add the register's commands."""

    def __init__(self, reviewers: Iterable[str]) -> None:
        self.reviewers = frozenset(reviewers)
        self._states: dict[str, SequencedT] = {}

    def _state_key(self, state: SequencedT) -> str:
        raise NotImplementedError

    def _blank(self) -> Self:
        """An empty book like this one (same reviewers and settings)."""
        raise NotImplementedError

    def state(self, key: str) -> SequencedT | None:
        return self._states.get(key)

    def states(self) -> list[SequencedT]:
        return [self._states[k] for k in sorted(self._states)]

    def copy(self) -> Self:
        other = self._blank()
        other._states = dict(self._states)
        return other

    def restore(self, state: SequencedT) -> bool:
        """Take ``state`` (a snapshot) unless the book holds that change or a later one;
        True if the state changed."""
        key = self._state_key(state)
        current = self._states.get(key)
        if current is not None and current.seq >= state.seq:
            return False
        self._states[key] = state
        return True


class ReviewBook(StateBook[StateT], Generic[VersionT, StateT, EventT]):
    """The current state of every key of a register whose versions are reviewed
    (:class:`Workflow`); applies its events. Subclasses add the register's commands;
    ``reviewers`` approve and reject."""

    workflow: ClassVar[Workflow[Any, Any]]
    #: the register's change record, built from the fields of :func:`change_mapping`
    change_type: ClassVar[type[Any]]
    #: the register in a refusal: "only the data bureau (...) reviews <reviewed>"
    reviewed: ClassVar[str]

    # -- what each register says ---------------------------------------------------------
    @staticmethod
    def _status_diff(was: StrEnum, to: StrEnum) -> Any:
        """The diff of a change that only moves a version's status, in the register's form."""
        raise NotImplementedError

    @staticmethod
    def _new_state(key: str, seq: int, versions: tuple[VersionT, ...]) -> StateT:
        raise NotImplementedError

    def _state_key(self, state: StateT) -> str:
        return self.workflow.state_key(state)

    # -- replay --------------------------------------------------------------------------
    def apply(self, event: EventT) -> bool:
        """Advance the key's state by ``event``; False (and nothing changes) if the book
        already holds that change or a later one. Raises the register's error if changes
        are missing before it or it does not fit the state."""
        key = self.workflow.event_key(event)
        current = self._states.get(key)
        seq = current.seq if current is not None else 0
        if event.seq <= seq:
            return False
        new = self.workflow.new_version(event)
        versions = self.workflow.advance(
            key, seq, current.versions if current else (), event.change, new
        )
        self._states[key] = self._new_state(key, event.seq, self.workflow.bounded(versions))
        return True

    # -- helpers -------------------------------------------------------------------------
    def _change(
        self,
        state: StateT,
        action: StrEnum,
        actor: str,
        at_ms: int,
        v: VersionT,
        to: StrEnum,
        reason: str,
        superseded: int | None = None,
    ) -> Any:
        """The change that moves version ``v`` of the key at ``state`` to status ``to``."""
        was = self.workflow.status(v)
        return self.change_type(
            seq=state.seq + 1,
            action=action,
            actor=actor,
            at_ms=at_ms,
            version=self.workflow.number(v),
            from_status=was,
            to_status=to,
            reason=reason,
            diff=self._status_diff(was, to),
            superseded_version=superseded,
        )

    def _require_reason(self, reason: str, verb: str, key: str) -> None:
        if not reason.strip():
            raise self.workflow.error(f"give a reason to {verb} {key}")

    def _check_reviewer(self, actor: str, verb: str) -> None:
        if actor not in self.reviewers:
            raise self.workflow.error(
                f"{actor or '(no actor)'} may not {verb}: only the data bureau "
                f"({', '.join(sorted(self.reviewers))}) reviews {self.reviewed}"
            )

    def _emit(self, event: EventT) -> EventT:
        """Commands apply their events before returning them."""
        self.apply(event)
        return event


def replay(
    workflow: Workflow[VersionT, Any], key: str, events: Iterable[EventT]
) -> tuple[tuple[VersionT, ...], tuple[Any, ...]] | None:
    """Every version of ``key`` and its changes, oldest first, from its events in log order
    (events of other keys, duplicates and older events are skipped); None if it has none."""
    versions: tuple[VersionT, ...] = ()
    changes: tuple[Any, ...] = ()
    seq = 0
    for ev in events:
        if workflow.event_key(ev) != key or ev.seq <= seq:
            continue
        versions = workflow.advance(key, seq, versions, ev.change, workflow.new_version(ev))
        changes = (*changes, ev.change)
        seq = ev.seq
    return (versions, changes) if changes else None
