"""The policy decision: may this department get these fields of this resource for this duty?

:func:`decide` applies, in order (the first that fails refuses the request, citing its
legal basis):

1. a duty is stated (article 24), the requester is on the responsibility list that applies
   to it (the province's, or its city's as derived from it) and the duty is one of its own;
2. the resource is in the catalog and in force; the requested fields are fields of it;
3. the resource is not on the negative list, and not ``not_shared`` in the catalog;
   requested fields on the negative list are withheld (each with its legal basis), and if
   none is left the request is refused;
4. ``conditional``: a demand-list entry of the requester for this resource and duty is
   needed; its fields are given (clear, or masked as the entry says), the other requested
   fields masked (the provider's default mask from the responsibility list, else ``MASK``);
   ``unconditional``: every remaining field is given;
5. a bulk copy (the whole pool, or more subjects than the threshold) needs an active
   approval on record covering requester, resource, duty and scope.

A :class:`Decision` that refuses cannot be built without a reason code and a legal basis.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from streams.catalog.model import (
    Catalog,
    Resource,
    SchemaLoader,
    ShareAttribute,
    field_names,
    load_spec,
)
from streams.policy.approvals import Approval
from streams.policy.legal import (
    ARTICLE_24_DUTY,
    BULK_COPY,
    CATALOG_ONLY,
    DSL_38,
    PIPL_34,
    REGISTERED_DEPARTMENTS,
    PolicyError,
    PolicyReason,
    require_basis,
)
from streams.policy.masks import MaskKind
from streams.policy.model import EffectiveLists, department_region

__all__ = [
    "DEFAULT_BULK_THRESHOLD",
    "Decision",
    "FieldSource",
    "Request",
    "decide",
    "spec_fields",
]

#: more subjects than this in one request is a bulk copy (the application's setting
#: XIANGYUN_POLICY_BULK_THRESHOLD overrides it)
DEFAULT_BULK_THRESHOLD = 100

#: the field names of a resource's collection spec
FieldSource = Callable[[Resource], Sequence[str]]


def spec_fields(loader: SchemaLoader) -> FieldSource:
    """A :data:`FieldSource` reading each resource's collection spec with ``loader``."""
    cache: dict[tuple[str, int], tuple[str, ...]] = {}

    def fields(resource: Resource) -> Sequence[str]:
        key = (resource.id, resource.version)
        if key not in cache:
            cache[key] = tuple(field_names(load_spec(resource, loader)))
        return cache[key]

    return fields


@dataclass(frozen=True, slots=True)
class Request:
    """One request: ``fields`` None asks for every field of the resource; ``subjects`` is
    how many subjects it asks about; ``whole_pool`` asks for the whole resource."""

    requester: str
    resource: str
    purpose: str = ""
    fields: tuple[str, ...] | None = None
    subjects: int = 1
    whole_pool: bool = False
    approval_id: str | None = None

    def to_mapping(self) -> dict[str, Any]:
        return {
            "requester": self.requester,
            "resource": self.resource,
            "purpose": self.purpose,
            "fields": list(self.fields) if self.fields is not None else None,
            "subjects": self.subjects,
            "whole_pool": self.whole_pool,
            "approval_id": self.approval_id,
        }


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to a :class:`Request`, for the response and the access log.

    Allowed: ``fields`` are returned clear, ``masks`` are returned masked (field → mask),
    ``withheld`` are left out (field → legal basis). Refused: ``reason`` and ``legal_basis``
    are set (the constructor refuses a refusal without them), nothing is returned.
    ``policy_version`` names the list versions decided on; ``approval_id`` the approval the
    request uses (the caller records the use once the data has gone out).
    """

    allowed: bool
    requester: str
    resource: str
    purpose: str
    policy_version: str
    reason: PolicyReason | None = None
    legal_basis: str = ""
    message: str = ""
    fields: tuple[str, ...] = ()
    masks: Mapping[str, MaskKind] = field(default_factory=dict)
    withheld: Mapping[str, str] = field(default_factory=dict)
    approval_id: str | None = None

    def __post_init__(self) -> None:
        for name, basis in self.withheld.items():
            require_basis(basis, f"withholding field {name}")
        if self.allowed:
            if self.reason is not None:
                raise PolicyError("an allowed decision has no refusal reason")
            return
        if not isinstance(self.reason, PolicyReason):
            raise PolicyError("a refusal needs a reason code (PolicyReason)")
        object.__setattr__(
            self, "legal_basis", require_basis(self.legal_basis, f"a refusal ({self.reason})")
        )
        if self.fields or self.masks:
            raise PolicyError("a refusal returns no field")

    @property
    def returned(self) -> tuple[str, ...]:
        """Every field that goes out, clear or masked."""
        return (*self.fields, *self.masks)

    def to_mapping(self) -> dict[str, Any]:
        return {
            "allowed": self.allowed,
            "requester": self.requester,
            "resource": self.resource,
            "purpose": self.purpose,
            "policy_version": self.policy_version,
            "reason": self.reason.value if self.reason else None,
            "legal_basis": self.legal_basis,
            "message": self.message,
            "fields": list(self.fields),
            "masks": {k: v.value for k, v in self.masks.items()},
            "withheld": dict(self.withheld),
            "approval_id": self.approval_id,
        }


def _or(basis: str, fallback: str) -> str:
    """``basis`` unless it is blank, else ``fallback``."""
    return basis if basis.strip() else fallback


def decide(
    request: Request,
    catalog: Catalog,
    lists: EffectiveLists | Callable[[str], EffectiveLists],
    approvals: Mapping[str, Approval] | Iterable[Approval],
    now_ms: int,
    *,
    fields_of: FieldSource,
    bulk_threshold: int = DEFAULT_BULK_THRESHOLD,
) -> Decision:
    """Decide ``request``. ``lists`` is what applies to the requester (or a function from
    the requester's region to it: :meth:`PolicySet.effective`)."""
    by_id = dict(approvals) if isinstance(approvals, Mapping) else {a.id: a for a in approvals}
    r = request

    def refuse(reason: PolicyReason, basis: str, message: str, version: str = "") -> Decision:
        return Decision(
            False,
            r.requester,
            r.resource,
            r.purpose,
            version or "none",
            reason,
            basis,
            message,
        )

    # 1. who asks, for which duty
    if not r.purpose.strip():
        return refuse(
            PolicyReason.NO_DUTY,
            ARTICLE_24_DUTY,
            "state the duty the data is needed for (--purpose DUTY, one of the requester's "
            "duties on the responsibility list)",
        )
    try:
        region = department_region(r.requester)
    except PolicyError as exc:
        return refuse(PolicyReason.UNREGISTERED_DEPARTMENT, REGISTERED_DEPARTMENTS, str(exc))
    eff = lists(region) if callable(lists) else lists
    version = eff.version
    entry = eff.responsibility.get(r.requester)
    if entry is None:
        return refuse(
            PolicyReason.UNREGISTERED_DEPARTMENT,
            REGISTERED_DEPARTMENTS,
            f"{r.requester} is not on the responsibility list that applies to it",
            version,
        )
    if entry.duty(r.purpose) is None:
        duties = ", ".join(d.code for d in entry.duties)
        return refuse(
            PolicyReason.DUTY_NOT_OF_REQUESTER,
            PIPL_34 + DSL_38,
            f"{r.purpose!r} is not a duty of {r.requester} (its duties: {duties})",
            version,
        )

    # 2. what is asked for
    resource = catalog.get(r.resource)
    if resource is None:
        return refuse(
            PolicyReason.UNKNOWN_RESOURCE,
            CATALOG_ONLY,
            f"{r.resource} is not in the catalog",
            version,
        )
    if not resource.in_force:
        return refuse(
            PolicyReason.RESOURCE_NOT_IN_FORCE,
            CATALOG_ONLY,
            f"{r.resource} is {resource.status.value}, not in force",
            version,
        )
    known = tuple(fields_of(resource))
    wanted = known if r.fields is None else tuple(dict.fromkeys(r.fields))
    unknown = [f for f in wanted if f not in known]
    if unknown or not wanted:
        return refuse(
            PolicyReason.UNKNOWN_FIELD,
            CATALOG_ONLY,
            f"{r.resource} has no field {unknown}; its fields: {', '.join(known)}"
            if unknown
            else "the request names no field",
            version,
        )

    # 3. negative list and share attribute
    negative = eff.negative_for(r.resource)
    whole = next((n for n in negative if n.whole_resource), None)
    if whole is not None:
        return refuse(
            PolicyReason.NEGATIVE_LIST,
            whole.legal_basis,
            f"{r.resource} is on the negative list" + (f": {whole.note}" if whole.note else ""),
            version,
        )
    if resource.share is ShareAttribute.NOT_SHARED:
        return refuse(
            PolicyReason.NOT_SHARED,
            _or(resource.share_legal_basis, CATALOG_ONLY),
            f"{r.resource} is not shared (catalog share attribute not_shared)",
            version,
        )
    withheld: dict[str, str] = {}
    for n in negative:
        for f in n.fields:
            if f in wanted and f not in withheld:
                withheld[f] = n.legal_basis
    left = [f for f in wanted if f not in withheld]
    if not left:
        return refuse(
            PolicyReason.NEGATIVE_LIST,
            "；".join(dict.fromkeys(withheld.values())),
            f"every requested field of {r.resource} is on the negative list",
            version,
        )

    # 4. conditional: the requester's demand entry
    clear: list[str] = []
    masks: dict[str, MaskKind] = {}
    if resource.share is ShareAttribute.CONDITIONAL:
        demand = eff.demand.get((r.requester, r.resource, r.purpose))
        if demand is None:
            basis = _or(resource.share_legal_basis, PIPL_34)
            conditions = resource.share_conditions or "see the catalog"
            return refuse(
                PolicyReason.NO_DEMAND_ENTRY,
                basis,
                f"{r.resource} is shared on conditions ({conditions}); the demand list has "
                f"no entry of {r.requester} for it and duty {r.purpose!r}",
                version,
            )
        for f in left:
            if f in demand.fields and f not in demand.masks:
                clear.append(f)
            else:
                masks[f] = demand.masks.get(f) or eff.default_mask(r.resource, f)
    else:
        clear = left

    # 5. bulk copies
    approval_id: str | None = None
    if r.whole_pool or r.subjects > bulk_threshold:
        scope = "the whole pool" if r.whole_pool else f"{r.subjects} subjects"
        candidates = (
            [by_id[r.approval_id]]
            if r.approval_id is not None and r.approval_id in by_id
            else []
            if r.approval_id is not None
            else [a for a in by_id.values() if a.requester == r.requester]
        )
        matching = [
            a
            for a in candidates
            if a.covers(r.requester, r.resource, r.purpose, r.whole_pool, r.subjects)
        ]
        usable = [a for a in matching if a.problem(now_ms) is None]
        if usable:
            approval_id = min(usable, key=lambda a: (a.expires_at_ms, a.id)).id
        elif matching:
            a = matching[0]
            problem = a.problem(now_ms)
            assert problem is not None
            return refuse(
                problem, BULK_COPY, f"approval {a.id} is {a.status(now_ms).value}", version
            )
        elif candidates and r.approval_id is not None:
            return refuse(
                PolicyReason.APPROVAL_MISMATCH,
                BULK_COPY,
                f"approval {r.approval_id} is not for {r.requester}, {r.resource}, duty "
                f"{r.purpose!r} and {scope}",
                version,
            )
        else:
            return refuse(
                PolicyReason.BULK_NEEDS_APPROVAL,
                BULK_COPY,
                f"{scope} is a bulk copy (more than {bulk_threshold} subjects, or a whole "
                f"pool): it needs an approval on record (`xiangyun approvals grant`)",
                version,
            )

    return Decision(
        True,
        r.requester,
        r.resource,
        r.purpose,
        version,
        fields=tuple(clear),
        masks=masks,
        withheld=withheld,
        approval_id=approval_id,
        message=f"conditions: {resource.share_conditions}" if resource.share_conditions else "",
    )
