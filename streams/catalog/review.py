"""The catalog review workflow (目录编制、审核、发布), articles 14 and 15.

A responsible department saves drafts of and submits its catalog entries; the data bureau
approves or rejects each submitted version with a reason; an approved version is in force
until a newer version is approved (the older one becomes ``superseded``) or the resource
is retired. Every change is kept: who, when, which version, and a field-level diff.

Each command returns one :class:`CatalogEvent` per change: the :class:`Change` and, only
when the change creates or overwrites a version (a draft saved, a version submitted), that
version's entry and spec. Its size does not depend on how many changes came before, so the
events go to an append-only change log and are kept forever: the log is the history.

:class:`CatalogBook` holds, per resource id, a bounded :class:`ResourceState`: the version
in force and the latest version (which is the draft or submitted one, if any), each with
its spec, and the ``seq`` of the last change. That state is what a compacted snapshot topic
keyed by resource id holds (as a :class:`CatalogSnapshot`), so a reader rebuilds the current
catalog from the snapshots alone. :meth:`CatalogBook.apply` advances a state by one event
and ignores an event the book already holds (a duplicate or an older one);
:meth:`CatalogBook.restore` takes a snapshot unless the book holds that change or a later
one. A snapshot plus the events after it rebuild the same book as every event from the
start. :class:`ResourceHistory` replays one resource's events into every version and the
whole history, for people (``xiangyun catalog show``).

Commands apply their events to the book before returning them. A store that must write the
events to Kafka first can run the command on :meth:`CatalogBook.copy` and apply the events
to its real book once the write is acknowledged.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import fastavro
from fastavro.schema import to_parsing_canonical_form

from streams.catalog.model import Catalog, CatalogError, Resource, SchemaLoader, Status, load_spec
from streams.catalog.validation import validate_entry
from streams.core.regions import PROVINCE
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
from streams.units.model import UnitRegister
from streams.units.review import DATA_BUREAU
from streams.wire.codec import fingerprint64

__all__ = [
    "DATA_BUREAU",
    "MAX_SPEC_BYTES",
    "Action",
    "CatalogBook",
    "CatalogEvent",
    "CatalogSnapshot",
    "Change",
    "EntryVersion",
    "FieldChange",
    "ResourceHistory",
    "ResourceState",
    "spec_fingerprint",
]

#: the record formats of the change log and of the snapshot topic (1 was the full state
#: with the whole history in every record)
EVENT_FORMAT = 2
SNAPSHOT_FORMAT = 2
#: the largest collection spec (compact JSON, UTF-8) one version may carry: an event carries
#: at most one spec, a snapshot at most two, and both must fit Kafka's default 1 MB limit
MAX_SPEC_BYTES = 900 * 1024
_PENDING = (Status.DRAFT, Status.SUBMITTED)


class Action(StrEnum):
    DRAFTED = "drafted"
    SUBMITTED = "submitted"
    APPROVED = "approved"
    REJECTED = "rejected"
    RETIRED = "retired"


#: the actions that create (or overwrite) a version: their events carry it with its spec
_NEW_VERSION = (Action.DRAFTED, Action.SUBMITTED)


def spec_fingerprint(spec: Mapping[str, Any]) -> str:
    """CRC-64-AVRO fingerprint (hex) of a spec's parsing canonical form: the same number
    :class:`streams.wire.codec.Schema` puts in the header of every payload written with it."""
    parsed = fastavro.parse_schema(json.loads(json.dumps(spec)), _write_hint=False)
    return f"{fingerprint64(to_parsing_canonical_form(parsed).encode()):016x}"


def spec_bytes(spec: Mapping[str, Any]) -> int:
    """The size of a spec as a catalog record carries it (compact JSON, UTF-8)."""
    return len(json.dumps(spec, ensure_ascii=False, separators=(",", ":")).encode())


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One changed field: a dotted path (``share.legal_basis``, ``spec.fields.gender``)."""

    field: str
    old: Any
    new: Any

    def to_mapping(self) -> dict[str, Any]:
        return {"field": self.field, "old": self.old, "new": self.new}

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> FieldChange:
        return cls(str(raw["field"]), raw.get("old"), raw.get("new"))


@dataclass(frozen=True, slots=True)
class Change:
    """One history entry: ``actor`` moved ``version`` from ``from_status`` to ``to_status``."""

    seq: int
    action: Action
    actor: str
    at_ms: int
    version: int
    from_status: Status | None
    to_status: Status
    reason: str = ""
    diff: tuple[FieldChange, ...] = ()
    superseded_version: int | None = None  # the version an approval took out of force

    def to_mapping(self) -> dict[str, Any]:
        return change_mapping(self, [d.to_mapping() for d in self.diff])

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> Change:
        return cls(
            **change_fields(raw, Action, Status),
            diff=tuple(FieldChange.from_mapping(d) for d in raw.get("diff", [])),
        )


@dataclass(frozen=True, slots=True)
class EntryVersion:
    """One version of an entry with the collection spec it was submitted with (the spec
    travels with the version, so a spec file edited in place cannot rewrite history)."""

    resource: Resource
    spec: Mapping[str, Any]
    fingerprint: str

    def to_mapping(self) -> dict[str, Any]:
        return {
            "resource": self.resource.to_mapping(),
            "spec": dict(self.spec),
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> EntryVersion:
        return cls(
            Resource.from_mapping(raw["resource"]), dict(raw["spec"]), str(raw["fingerprint"])
        )


#: how an entry's versions read and change under review
_WORKFLOW: Workflow[EntryVersion, Status] = Workflow(
    error=CatalogError,
    number=lambda v: v.resource.version,
    status=lambda v: v.resource.status,
    with_status=lambda v, status: replace(v, resource=replace(v.resource, status=Status(status))),
    approved=Status.APPROVED,
    superseded=Status.SUPERSEDED,
    pending=frozenset(_PENDING),
    event_key=lambda ev: ev.resource_id,
    state_key=lambda st: st.id,
    new_version=lambda ev: ev.entry,  # drafted, submitted: the version, spec and all
)


class _Versions(Versions[EntryVersion]):
    """What a set of versions says; the pending one is the draft or submitted one."""

    __slots__ = ()
    workflow = _WORKFLOW
    id: str

    def version(self, number: int) -> EntryVersion:
        for v in self.versions:
            if v.resource.version == number:
                return v
        raise CatalogError(f"{self.id} has no version {number}")


@dataclass(frozen=True, slots=True)
class ResourceState(_Versions):
    """The current state of one resource, bounded: the version in force and the latest
    version (the draft or submitted one, if any; else the last rejected or retired one),
    oldest first, at most two; ``seq`` is the number of the last change it includes."""

    id: str
    seq: int
    versions: tuple[EntryVersion, ...]

    def to_mapping(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "seq": self.seq,
            "versions": [v.to_mapping() for v in self.versions],
        }

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> ResourceState:
        return cls(
            str(raw["id"]),
            int(raw["seq"]),
            tuple(EntryVersion.from_mapping(v) for v in raw["versions"]),
        )


@dataclass(frozen=True, slots=True)
class ResourceHistory(_Versions):
    """Every version of one resource and its whole history, oldest first: what its events
    in the change log say (:meth:`replay`)."""

    id: str
    versions: tuple[EntryVersion, ...]
    history: tuple[Change, ...]

    @property
    def seq(self) -> int:
        return self.history[-1].seq if self.history else 0

    @classmethod
    def replay(cls, resource_id: str, events: Iterable[CatalogEvent]) -> ResourceHistory | None:
        """The history of ``resource_id`` from its events in log order (events of other
        resources, duplicates and older events are skipped); None if it has none."""
        replayed = replay(_WORKFLOW, resource_id, events)
        return cls(resource_id, *replayed) if replayed is not None else None

    def to_mapping(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "versions": [v.to_mapping() for v in self.versions],
            "history": [c.to_mapping() for c in self.history],
        }


@dataclass(frozen=True, slots=True)
class CatalogEvent:
    """One record of the change log: key ``resource_id``, value one :class:`Change` and,
    for a change that creates or overwrites a version (drafted, submitted), that version
    with its spec (``entry``); any other change names the version it moves."""

    resource_id: str
    change: Change
    entry: EntryVersion | None = None

    @property
    def key(self) -> bytes:
        return self.resource_id.encode()

    @property
    def seq(self) -> int:
        return self.change.seq

    def to_mapping(self) -> dict[str, Any]:
        return {
            "format": EVENT_FORMAT,
            "resource_id": self.resource_id,
            "change": self.change.to_mapping(),
            "entry": self.entry.to_mapping() if self.entry is not None else None,
        }

    def to_json(self) -> bytes:
        return record_json(self.to_mapping())

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> CatalogEvent:
        try:
            if raw.get("format") != EVENT_FORMAT:
                raise CatalogError(f"unknown catalog event format {raw.get('format')!r}")
            rid = str(raw["resource_id"])
            change = Change.from_mapping(raw["change"])
            entry = EntryVersion.from_mapping(raw["entry"]) if raw.get("entry") else None
            new_version = change.action in _NEW_VERSION
            if (
                change.seq < 1
                or new_version != (entry is not None)
                or (
                    entry is not None
                    and (entry.resource.id != rid or entry.resource.version != change.version)
                )
            ):
                raise CatalogError(f"catalog event for {rid!r} is inconsistent")
            return cls(rid, change, entry)
        except CatalogError:
            raise  # already says what is wrong (it is a ValueError too)
        except (KeyError, TypeError, ValueError) as exc:
            raise CatalogError(f"malformed catalog event: {exc!r}") from exc

    @classmethod
    def from_json(cls, data: bytes | str) -> CatalogEvent:
        return cls.from_mapping(parse_record(data, "catalog event", CatalogError))


@dataclass(frozen=True, slots=True)
class CatalogSnapshot:
    """One record of the snapshot topic: key ``resource_id``, value the resource's bounded
    :class:`ResourceState` and the offset in the change log of the last change it includes
    (written in the same transaction as that change)."""

    state: ResourceState
    change_offset: int

    @property
    def resource_id(self) -> str:
        return self.state.id

    @property
    def key(self) -> bytes:
        return self.state.id.encode()

    def to_mapping(self) -> dict[str, Any]:
        return {
            "format": SNAPSHOT_FORMAT,
            "resource_id": self.state.id,
            "change_offset": self.change_offset,
            "state": self.state.to_mapping(),
        }

    def to_json(self) -> bytes:
        return record_json(self.to_mapping())

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> CatalogSnapshot:
        try:
            if raw.get("format") != SNAPSHOT_FORMAT:
                raise CatalogError(f"unknown catalog snapshot format {raw.get('format')!r}")
            state = ResourceState.from_mapping(raw["state"])
            if state.id != raw["resource_id"] or state.seq < 1 or not state.versions:
                raise CatalogError(f"catalog snapshot for {raw['resource_id']!r} is inconsistent")
            return cls(state, int(raw["change_offset"]))
        except CatalogError:
            raise  # already says what is wrong (it is a ValueError too)
        except (KeyError, TypeError, ValueError) as exc:
            raise CatalogError(f"malformed catalog snapshot: {exc!r}") from exc

    @classmethod
    def from_json(cls, data: bytes | str) -> CatalogSnapshot:
        return cls.from_mapping(parse_record(data, "catalog snapshot", CatalogError))


def _no_loader(path: str) -> Mapping[str, Any]:
    raise CatalogError(f"cannot read {path}: this catalog book has no schema loader")


def _flat(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping) and value:
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


def _view(v: EntryVersion | None) -> dict[str, Any]:
    """The diffable fields of a version: its entry (without status and version number),
    the spec's fingerprint and the type of each spec field."""
    if v is None:
        return {}
    raw = v.resource.to_mapping()
    raw.pop("status")
    raw.pop("version")
    out: dict[str, Any] = {}
    _flat("", raw, out)
    out["spec.fingerprint"] = v.fingerprint
    for f in v.spec.get("fields", []):
        out[f"spec.fields.{f['name']}"] = f["type"]
    return out


def _diff(old: EntryVersion | None, new: EntryVersion) -> tuple[FieldChange, ...]:
    a, b = _view(old), _view(new)
    return tuple(
        FieldChange(k, a.get(k), b.get(k))
        for k in sorted(a.keys() | b.keys())
        if a.get(k) != b.get(k)
    )


class CatalogBook(ReviewBook[EntryVersion, ResourceState, CatalogEvent]):
    """The current state of every catalog entry; applies the review commands.

    ``schema_loader`` reads collection specs for submissions (a book that only replays
    events needs none). ``reviewers`` are the actors who may approve, reject and retire
    (the data bureau by default). A department submits and drafts its own entries: the
    actor must be the entry's department (or the one already responsible for the
    resource), or a reviewer.

    ``units`` gives the unit register (read when an entry is validated): submissions and
    approvals are refused unless department and provider are registered units. A book
    without it does not check units (a pure book in tests; the Kafka store always has one).
    """

    workflow = _WORKFLOW
    change_type = Change
    reviewed = "the catalog"

    def __init__(
        self,
        schema_loader: SchemaLoader | None = None,
        *,
        reviewers: Iterable[str] = (DATA_BUREAU,),
        units: Callable[[], UnitRegister] | None = None,
    ) -> None:
        super().__init__(reviewers)
        self.schema_loader = schema_loader
        self.units = units

    # -- what the register says ----------------------------------------------------------
    @staticmethod
    def _new_state(key: str, seq: int, versions: tuple[EntryVersion, ...]) -> ResourceState:
        return ResourceState(key, seq, versions)

    @staticmethod
    def _status_diff(was: StrEnum, to: StrEnum) -> tuple[FieldChange, ...]:
        return (FieldChange("status", was.value, to.value),)

    def _blank(self) -> CatalogBook:
        return CatalogBook(self.schema_loader, reviewers=self.reviewers, units=self.units)

    # -- reading -------------------------------------------------------------------------
    def catalog(self) -> Catalog:
        """Per resource its version in force, else its latest version (so the ingest can
        tell 'not in force' from 'unknown'); :meth:`Catalog.in_force` is the in-force view."""
        return Catalog((s.in_force or s.latest).resource for s in self.states())

    def specs(self) -> dict[str, Mapping[str, Any]]:
        """The collection spec of every resource in force, as approved."""
        return {s.id: v.spec for s in self._states.values() if (v := s.in_force) is not None}

    # -- commands ------------------------------------------------------------------------
    def save_draft(self, entry: Resource, actor: str, at_ms: int) -> CatalogEvent:
        """Save (or overwrite) the draft of ``entry``; drafts are not validated."""
        return self._put(entry, actor, at_ms, Status.DRAFT)

    def submit(self, entry: Resource, actor: str, at_ms: int) -> CatalogEvent:
        """Submit ``entry`` for review: a new resource, a resubmission after a rejection, or
        an update of the version in force (which stays in force until this one is
        approved). The book assigns the version number; ``entry.status`` and
        ``entry.version`` are ignored. Raises :class:`CatalogError` if the entry fails
        :func:`~streams.catalog.validate_entry`."""
        return self._put(entry, actor, at_ms, Status.SUBMITTED)

    def approve(self, resource_id: str, actor: str, reason: str, at_ms: int) -> CatalogEvent:
        """Put the submitted version in force (validated again: the catalog may have changed
        since submission); the version in force before becomes ``superseded``."""
        state, pending = self._submitted(resource_id, "approve")
        self._check_reviewer(actor, "approve")
        validate_entry(
            pending.resource,
            self.catalog(),
            self.schema_loader or _no_loader,
            specs=self.specs(),
            spec=pending.spec,
            units=self.units() if self.units is not None else None,
        )
        current = state.in_force
        change = self._change(
            state,
            Action.APPROVED,
            actor,
            at_ms,
            pending,
            Status.APPROVED,
            reason,
            superseded=current.resource.version if current else None,
        )
        return self._emit(CatalogEvent(resource_id, change))

    def reject(self, resource_id: str, actor: str, reason: str, at_ms: int) -> CatalogEvent:
        """Refuse the submitted version; ``reason`` (required) tells the department why."""
        state, pending = self._submitted(resource_id, "reject")
        self._check_reviewer(actor, "reject")
        self._require_reason(reason, "reject", resource_id)
        change = self._change(
            state, Action.REJECTED, actor, at_ms, pending, Status.REJECTED, reason
        )
        return self._emit(CatalogEvent(resource_id, change))

    def retire(self, resource_id: str, actor: str, reason: str, at_ms: int) -> list[CatalogEvent]:
        """Take the resource out of force and close any draft or submitted version: one
        event per version closed (the pending one first, then the one in force). Only a
        reviewer retires a version in force; the department may withdraw a resource that
        has never been approved (only a draft or a submission)."""
        state = self._existing(resource_id)
        self._require_reason(reason, "retire", resource_id)
        current, pending = state.in_force, state.pending
        if current is None and pending is None:
            raise CatalogError(
                f"cannot retire {resource_id}: it is {state.latest.resource.status}"
                f" and has no version in force, draft or submitted"
            )
        if current is not None:
            self._check_reviewer(actor, "retire a resource in force")
        elif actor not in self.reviewers:
            self._check_department(state.latest.resource, actor, "withdraw")
        events = []
        for v in (pending, current):
            if v is not None:
                state = self._existing(resource_id)
                change = self._change(
                    state, Action.RETIRED, actor, at_ms, v, Status.RETIRED, reason
                )
                events.append(self._emit(CatalogEvent(resource_id, change)))
        return events

    def bootstrap(
        self, entries: Iterable[Resource], reviewer: str, at_ms: int
    ) -> list[CatalogEvent]:
        """Load a starter catalog (e.g. ``Catalog.from_dir("catalog")``): each entry not yet
        in the book is submitted by its department, then approved by ``reviewer`` if its
        status says ``approved`` (provincial entries first, so city entries are checked
        against them). Entries already in the book are left alone: the book, not the
        files, is the source of truth. Returns the events to write."""
        events: list[CatalogEvent] = []
        ordered = sorted(entries, key=lambda e: (e.region != PROVINCE, e.id))
        for e in ordered:
            if e.id in self._states:
                continue
            if e.status is Status.DRAFT:
                events.append(self.save_draft(e, e.department, at_ms))
                continue
            if e.status not in (Status.SUBMITTED, Status.APPROVED):
                raise CatalogError(f"starter entry {e.id}: status {e.status} cannot be loaded")
            events.append(self.submit(e, e.department, at_ms))
            if e.status is Status.APPROVED:
                events.append(self.approve(e.id, reviewer, "starter catalog", at_ms))
        return events

    # -- helpers -------------------------------------------------------------------------
    def _loader(self) -> SchemaLoader:
        if self.schema_loader is None:
            raise CatalogError("this catalog book has no schema loader; it can only replay")
        return self.schema_loader

    def _existing(self, resource_id: str) -> ResourceState:
        state = self._states.get(resource_id)
        if state is None:
            raise CatalogError(f"no catalog entry {resource_id!r}")
        return state

    def _submitted(self, resource_id: str, verb: str) -> tuple[ResourceState, EntryVersion]:
        state = self._existing(resource_id)
        pending = state.pending
        if pending is None or pending.resource.status is not Status.SUBMITTED:
            latest = state.latest.resource
            raise CatalogError(
                f"cannot {verb} {resource_id}: no version awaits review (latest "
                f"is version {latest.version}, {latest.status}); only a "
                f"submitted version can be approved or rejected"
            )
        return state, pending

    @staticmethod
    def _check_department(entry: Resource, actor: str, verb: str) -> None:
        if actor != entry.department:
            raise CatalogError(
                f"{actor or '(no actor)'} may not {verb} {entry.id}: it is the "
                f"responsibility of department {entry.department}"
            )

    @staticmethod
    def _check_spec_size(resource: Resource, spec: Mapping[str, Any]) -> None:
        size = spec_bytes(spec)
        if size > MAX_SPEC_BYTES:
            raise CatalogError(
                f"{resource.id}: collection spec {resource.schema} is {size:,} bytes, over "
                f"the {MAX_SPEC_BYTES:,} a catalog version may carry; shorten its docs or "
                f"split the resource into smaller ones"
            )

    def _put(self, entry: Resource, actor: str, at_ms: int, status: Status) -> CatalogEvent:
        state = self._states.get(entry.id)
        if actor not in self.reviewers:
            self._check_department(entry, actor, "submit")
            if state is not None:
                self._check_department((state.in_force or state.latest).resource, actor, "update")
        pending = state.pending if state else None
        if pending is not None and pending.resource.status is Status.SUBMITTED:
            raise CatalogError(
                f"{entry.id} version {pending.resource.version} awaits review; "
                f"wait for the data bureau to approve or reject it"
            )
        if state is None:
            number = 1
        elif pending is not None:
            number = pending.resource.version
        else:
            number = max(v.resource.version for v in state.versions) + 1
        resource = replace(entry, status=status, version=number)
        loader = self._loader()
        if status is Status.SUBMITTED:
            validate_entry(
                resource,
                self.catalog(),
                loader,
                specs=self.specs(),
                units=self.units() if self.units is not None else None,
            )
        try:  # read once more for the record: validate_entry accepted it just now
            spec = load_spec(resource, loader)
        except CatalogError:
            if status is Status.SUBMITTED:
                raise
            spec = {}  # a draft may name a spec that does not exist yet
        self._check_spec_size(resource, spec)
        new = EntryVersion(resource, spec, spec_fingerprint(spec) if spec else "")
        base = (
            pending
            if status is Status.DRAFT and pending is not None
            else (state.in_force or pending or state.latest)
            if state
            else None
        )
        change = Change(
            seq=state.seq + 1 if state else 1,
            action=Action.DRAFTED if status is Status.DRAFT else Action.SUBMITTED,
            actor=actor,
            at_ms=at_ms,
            version=number,
            from_status=pending.resource.status if pending else None,
            to_status=status,
            diff=_diff(base, new),
        )
        return self._emit(CatalogEvent(entry.id, change, new))
