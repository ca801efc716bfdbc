"""Bulk-copy approvals (批量获取审批): who may copy what, for which duty, how often, until when.

A bulk copy is a request for a whole pool or for more subjects than the configured
threshold. It needs an :class:`Approval` on record: requester, resource, scope, purpose,
quota (uses), expiry, granted by. An approval is revocable at once, and every use is counted
against its quota.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from streams.policy.legal import PolicyError, PolicyReason
from streams.policy.model import department_region

__all__ = ["POOL", "Approval", "ApprovalStatus"]

#: the scope of an approval for a whole pool (else a number of subjects)
POOL = "pool"


class ApprovalStatus(StrEnum):
    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"
    EXHAUSTED = "exhausted"


@dataclass(frozen=True, slots=True)
class Approval:
    """One approval. ``max_subjects`` None: the whole pool; else at most that many subjects
    per request. ``quota``: how many requests it covers; ``uses``: how many it has served."""

    id: str
    requester: str
    resource: str
    purpose: str
    quota: int
    expires_at_ms: int
    granted_by: str
    granted_at_ms: int
    max_subjects: int | None = None
    uses: int = 0
    revoked_at_ms: int | None = None
    revoked_by: str = ""
    revoke_reason: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        department_region(self.requester)
        problems = []
        if not self.id.strip() or "/" in self.id:
            problems.append("an approval needs an id without '/'")
        if not self.resource.strip():
            problems.append("an approval names a resource")
        if not self.purpose.strip():
            problems.append("an approval names the duty it serves (article 24)")
        if self.quota < 1:
            problems.append(f"quota {self.quota}: at least 1 use")
        if self.max_subjects is not None and self.max_subjects < 1:
            problems.append(f"max_subjects {self.max_subjects}: at least 1 (or the whole pool)")
        if self.expires_at_ms <= self.granted_at_ms:
            problems.append("the expiry must be after the grant")
        if not self.granted_by.strip():
            problems.append("an approval says who granted it")
        if self.uses < 0:
            problems.append("uses cannot be negative")
        if problems:
            raise PolicyError(f"approval {self.id}: " + "; ".join(problems), problems)

    @property
    def key(self) -> str:
        return f"approval/{self.id}"

    @property
    def scope(self) -> str:
        return POOL if self.max_subjects is None else f"{self.max_subjects} subjects"

    @property
    def remaining(self) -> int:
        return max(self.quota - self.uses, 0)

    def status(self, now_ms: int) -> ApprovalStatus:
        if self.revoked_at_ms is not None and self.revoked_at_ms <= now_ms:
            return ApprovalStatus.REVOKED
        if now_ms >= self.expires_at_ms:
            return ApprovalStatus.EXPIRED
        if self.uses >= self.quota:
            return ApprovalStatus.EXHAUSTED
        return ApprovalStatus.ACTIVE

    def covers(
        self, requester: str, resource: str, purpose: str, whole_pool: bool, subjects: int
    ) -> bool:
        """True when this approval is for that request (whatever its status)."""
        if (requester, resource, purpose) != (self.requester, self.resource, self.purpose):
            return False
        if self.max_subjects is None:
            return True
        return not whole_pool and subjects <= self.max_subjects

    def problem(self, now_ms: int) -> PolicyReason | None:
        """Why this approval cannot serve a request now, or None."""
        return {
            ApprovalStatus.ACTIVE: None,
            ApprovalStatus.EXPIRED: PolicyReason.APPROVAL_EXPIRED,
            ApprovalStatus.REVOKED: PolicyReason.APPROVAL_REVOKED,
            ApprovalStatus.EXHAUSTED: PolicyReason.APPROVAL_EXHAUSTED,
        }[self.status(now_ms)]

    def used(self, now_ms: int) -> Approval:
        """This approval with one more use; refused unless it is active."""
        status = self.status(now_ms)
        if status is not ApprovalStatus.ACTIVE:
            raise PolicyError(f"approval {self.id} is {status.value}: it cannot be used")
        return replace(self, uses=self.uses + 1)

    def revoked(self, actor: str, reason: str, now_ms: int) -> Approval:
        if self.revoked_at_ms is not None:
            raise PolicyError(f"approval {self.id} was already revoked")
        if not reason.strip():
            raise PolicyError(f"revoking approval {self.id}: give a reason")
        return replace(self, revoked_at_ms=now_ms, revoked_by=actor, revoke_reason=reason)

    def to_mapping(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "requester": self.requester,
            "resource": self.resource,
            "purpose": self.purpose,
            "quota": self.quota,
            "expires_at_ms": self.expires_at_ms,
            "granted_by": self.granted_by,
            "granted_at_ms": self.granted_at_ms,
            "max_subjects": self.max_subjects,
            "uses": self.uses,
            "revoked_at_ms": self.revoked_at_ms,
            "revoked_by": self.revoked_by,
            "revoke_reason": self.revoke_reason,
            "note": self.note,
        }

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> Approval:
        try:
            ms = raw.get("max_subjects")
            rev = raw.get("revoked_at_ms")
            return cls(
                id=str(raw["id"]),
                requester=str(raw["requester"]),
                resource=str(raw["resource"]),
                purpose=str(raw["purpose"]),
                quota=int(raw["quota"]),
                expires_at_ms=int(raw["expires_at_ms"]),
                granted_by=str(raw["granted_by"]),
                granted_at_ms=int(raw["granted_at_ms"]),
                max_subjects=int(ms) if ms is not None else None,
                uses=int(raw.get("uses", 0)),
                revoked_at_ms=int(rev) if rev is not None else None,
                revoked_by=str(raw.get("revoked_by", "")),
                revoke_reason=str(raw.get("revoke_reason", "")),
                note=str(raw.get("note", "")),
            )
        except KeyError as exc:
            raise PolicyError(f"approval: missing field {exc.args[0]!r}") from exc
        except (TypeError, ValueError) as exc:
            raise PolicyError(f"approval: {exc}") from exc
