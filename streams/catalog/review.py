"""The catalog review workflow (目录编制、审核、发布), articles 14 and 15.

A responsible department saves drafts of and submits its catalog entries; the data bureau
approves or rejects each submitted version with a reason; an approved version is in force
until a newer version is approved (the older one becomes ``superseded``) or the resource
is retired. Every change is kept: who, when, which version, and a field-level diff.

:class:`CatalogBook` holds, per resource id, every version and the whole history in one
immutable :class:`ResourceState`. Each command returns a :class:`CatalogEvent` whose value
is that complete state, so the events can go to a compacted Kafka topic keyed by resource
id: compaction keeps only the last event per resource, and that event alone rebuilds the
resource. :meth:`CatalogBook.apply` ignores an event that is not newer than what it holds,
so replaying a topic (compacted or not, with duplicates) rebuilds the same book.

Commands apply their event to the book before returning it. A store that must write the
event to Kafka first can run the command on :meth:`CatalogBook.copy` and apply the event
to its real book once the write is acknowledged.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import fastavro
from fastavro.schema import to_parsing_canonical_form

from streams.catalog.model import Catalog, CatalogError, Resource, SchemaLoader, Status, load_spec
from streams.catalog.validation import validate_entry
from streams.core.regions import PROVINCE
from streams.wire.codec import fingerprint64

__all__ = [
    "DATA_BUREAU",
    "Action",
    "CatalogBook",
    "CatalogEvent",
    "Change",
    "EntryVersion",
    "FieldChange",
    "ResourceState",
    "spec_fingerprint",
]

#: the provincial data bureau (省政务服务和数字化局), the default reviewer
DATA_BUREAU = "220000-ZSJ"
EVENT_FORMAT = 1
_PENDING = (Status.DRAFT, Status.SUBMITTED)


class Action(StrEnum):
    DRAFTED = "drafted"
    SUBMITTED = "submitted"
    APPROVED = "approved"
    REJECTED = "rejected"
    RETIRED = "retired"


def spec_fingerprint(spec: Mapping[str, Any]) -> str:
    """CRC-64-AVRO fingerprint (hex) of a spec's parsing canonical form: the same number
    :class:`streams.wire.codec.Schema` puts in the header of every payload written with it."""
    parsed = fastavro.parse_schema(json.loads(json.dumps(spec)), _write_hint=False)
    return f"{fingerprint64(to_parsing_canonical_form(parsed).encode()):016x}"


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
        return {
            "seq": self.seq,
            "action": self.action.value,
            "actor": self.actor,
            "at_ms": self.at_ms,
            "version": self.version,
            "from_status": self.from_status.value if self.from_status else None,
            "to_status": self.to_status.value,
            "reason": self.reason,
            "diff": [d.to_mapping() for d in self.diff],
            "superseded_version": self.superseded_version,
        }

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> Change:
        sup = raw.get("superseded_version")
        return cls(
            seq=int(raw["seq"]),
            action=Action(raw["action"]),
            actor=str(raw["actor"]),
            at_ms=int(raw["at_ms"]),
            version=int(raw["version"]),
            from_status=Status(raw["from_status"]) if raw.get("from_status") else None,
            to_status=Status(raw["to_status"]),
            reason=str(raw.get("reason", "")),
            diff=tuple(FieldChange.from_mapping(d) for d in raw.get("diff", [])),
            superseded_version=int(sup) if sup is not None else None,
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


@dataclass(frozen=True, slots=True)
class ResourceState:
    """Every version of one resource and its full history, oldest first."""

    id: str
    versions: tuple[EntryVersion, ...]
    history: tuple[Change, ...]

    @property
    def in_force(self) -> EntryVersion | None:
        return next((v for v in self.versions if v.resource.status is Status.APPROVED), None)

    @property
    def pending(self) -> EntryVersion | None:
        """The draft or submitted version, if any (at most one at a time)."""
        return next((v for v in self.versions if v.resource.status in _PENDING), None)

    @property
    def latest(self) -> EntryVersion:
        return self.versions[-1]

    @property
    def seq(self) -> int:
        return self.history[-1].seq if self.history else 0

    def version(self, number: int) -> EntryVersion:
        for v in self.versions:
            if v.resource.version == number:
                return v
        raise CatalogError(f"{self.id} has no version {number}")

    def to_mapping(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "versions": [v.to_mapping() for v in self.versions],
            "history": [c.to_mapping() for c in self.history],
        }

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> ResourceState:
        return cls(
            str(raw["id"]),
            tuple(EntryVersion.from_mapping(v) for v in raw["versions"]),
            tuple(Change.from_mapping(c) for c in raw["history"]),
        )


@dataclass(frozen=True, slots=True)
class CatalogEvent:
    """The record for the compacted catalog topic: key ``resource_id``, value the complete
    state after the change; :attr:`change` is the change this event records."""

    resource_id: str
    state: ResourceState

    @property
    def change(self) -> Change:
        return self.state.history[-1]

    @property
    def key(self) -> bytes:
        return self.resource_id.encode()

    def to_mapping(self) -> dict[str, Any]:
        return {
            "format": EVENT_FORMAT,
            "resource_id": self.resource_id,
            "change": self.change.to_mapping(),
            "state": self.state.to_mapping(),
        }

    def to_json(self) -> bytes:
        return json.dumps(self.to_mapping(), ensure_ascii=False, sort_keys=True).encode()

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> CatalogEvent:
        """Inverse of :meth:`to_mapping` (``change`` is read from the state's history)."""
        try:
            if raw.get("format") != EVENT_FORMAT:
                raise CatalogError(f"unknown catalog event format {raw.get('format')!r}")
            state = ResourceState.from_mapping(raw["state"])
            if state.id != raw["resource_id"] or not state.history or not state.versions:
                raise CatalogError(f"catalog event for {raw['resource_id']!r} is inconsistent")
            return cls(str(raw["resource_id"]), state)
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, CatalogError):
                raise
            raise CatalogError(f"malformed catalog event: {exc!r}") from exc

    @classmethod
    def from_json(cls, data: bytes | str) -> CatalogEvent:
        try:
            raw = json.loads(data)
        except ValueError as exc:
            raise CatalogError(f"catalog event is not JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise CatalogError("catalog event is not a JSON object")
        return cls.from_mapping(raw)


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


class CatalogBook:
    """All versions and history of every catalog entry; applies the review commands.

    ``schema_loader`` reads collection specs for submissions (a book that only replays
    events needs none). ``reviewers`` are the actors who may approve, reject and retire
    (the data bureau by default). A department submits and drafts its own entries: the
    actor must be the entry's department (or the one already responsible for the
    resource), or a reviewer.
    """

    def __init__(
        self,
        schema_loader: SchemaLoader | None = None,
        *,
        reviewers: Iterable[str] = (DATA_BUREAU,),
    ) -> None:
        self.schema_loader = schema_loader
        self.reviewers = frozenset(reviewers)
        self._states: dict[str, ResourceState] = {}

    # -- reading -------------------------------------------------------------------------
    def state(self, resource_id: str) -> ResourceState | None:
        return self._states.get(resource_id)

    def states(self) -> list[ResourceState]:
        return [self._states[k] for k in sorted(self._states)]

    def catalog(self) -> Catalog:
        """Per resource its version in force, else its latest version (so the ingest can
        tell 'not in force' from 'unknown'); :meth:`Catalog.in_force` is the in-force view."""
        return Catalog((s.in_force or s.latest).resource for s in self.states())

    def specs(self) -> dict[str, Mapping[str, Any]]:
        """The collection spec of every resource in force, as approved."""
        return {s.id: v.spec for s in self._states.values() if (v := s.in_force) is not None}

    def copy(self) -> CatalogBook:
        other = CatalogBook(self.schema_loader, reviewers=self.reviewers)
        other._states = dict(self._states)
        return other

    # -- replay --------------------------------------------------------------------------
    def apply(self, event: CatalogEvent) -> bool:
        """Take ``event``'s state unless the book already holds that change or a later one;
        True if the state changed."""
        current = self._states.get(event.resource_id)
        if current is not None and current.seq >= event.state.seq:
            return False
        self._states[event.resource_id] = event.state
        return True

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
        )
        current = state.in_force
        versions = []
        for v in state.versions:
            if v is pending:
                v = replace(v, resource=replace(v.resource, status=Status.APPROVED))
            elif v is current:
                v = replace(v, resource=replace(v.resource, status=Status.SUPERSEDED))
            versions.append(v)
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
        return self._emit(ResourceState(resource_id, tuple(versions), (*state.history, change)))

    def reject(self, resource_id: str, actor: str, reason: str, at_ms: int) -> CatalogEvent:
        """Refuse the submitted version; ``reason`` (required) tells the department why."""
        state, pending = self._submitted(resource_id, "reject")
        self._check_reviewer(actor, "reject")
        self._require_reason(reason, "reject", resource_id)
        return self._set_status(
            state, pending, Action.REJECTED, Status.REJECTED, actor, reason, at_ms
        )

    def retire(self, resource_id: str, actor: str, reason: str, at_ms: int) -> CatalogEvent:
        """Take the resource out of force and close any draft or submitted version. Only a
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
        for v in (pending, current):
            if v is not None:
                state = self._set_status(
                    state, v, Action.RETIRED, Status.RETIRED, actor, reason, at_ms, emit=False
                ).state
        return self._emit(state)

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

    def _check_reviewer(self, actor: str, verb: str) -> None:
        if actor not in self.reviewers:
            raise CatalogError(
                f"{actor or '(no actor)'} may not {verb}: only the data bureau "
                f"({', '.join(sorted(self.reviewers))}) reviews the catalog"
            )

    @staticmethod
    def _check_department(entry: Resource, actor: str, verb: str) -> None:
        if actor != entry.department:
            raise CatalogError(
                f"{actor or '(no actor)'} may not {verb} {entry.id}: it is the "
                f"responsibility of department {entry.department}"
            )

    @staticmethod
    def _require_reason(reason: str, verb: str, resource_id: str) -> None:
        if not reason.strip():
            raise CatalogError(f"give a reason to {verb} {resource_id}")

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
            validate_entry(resource, self.catalog(), loader, specs=self.specs())
        try:  # read once more for the record: validate_entry accepted it just now
            spec = load_spec(resource, loader)
        except CatalogError:
            if status is Status.SUBMITTED:
                raise
            spec = {}  # a draft may name a spec that does not exist yet
        new = EntryVersion(resource, spec, spec_fingerprint(spec) if spec else "")
        base = (
            pending
            if status is Status.DRAFT and pending is not None
            else (state.in_force or pending or state.latest)
            if state
            else None
        )
        versions = [v for v in (state.versions if state else ()) if v is not pending]
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
        return self._emit(
            ResourceState(entry.id, (*versions, new), (*(state.history if state else ()), change))
        )

    @staticmethod
    def _change(
        state: ResourceState,
        action: Action,
        actor: str,
        at_ms: int,
        v: EntryVersion,
        to: Status,
        reason: str,
        superseded: int | None = None,
    ) -> Change:
        return Change(
            seq=state.seq + 1,
            action=action,
            actor=actor,
            at_ms=at_ms,
            version=v.resource.version,
            from_status=v.resource.status,
            to_status=to,
            reason=reason,
            diff=(FieldChange("status", v.resource.status.value, to.value),),
            superseded_version=superseded,
        )

    def _set_status(
        self,
        state: ResourceState,
        v: EntryVersion,
        action: Action,
        to: Status,
        actor: str,
        reason: str,
        at_ms: int,
        *,
        emit: bool = True,
    ) -> CatalogEvent:
        updated = replace(v, resource=replace(v.resource, status=to))
        versions = tuple(updated if x is v else x for x in state.versions)
        change = self._change(state, action, actor, at_ms, v, to, reason)
        new_state = ResourceState(state.id, versions, (*state.history, change))
        return self._emit(new_state) if emit else CatalogEvent(state.id, new_state)

    def _emit(self, state: ResourceState) -> CatalogEvent:
        event = CatalogEvent(state.id, state)
        self.apply(event)
        return event
