"""Consent to collection (article 18): the rule a consent reference must pass, free of I/O.

A resource whose catalog entry says ``consent_required`` takes a record only when the
record's ``consent_ref`` names a consent *on record* (the consents topic, followed by
:class:`streams.kafka.consent_store.ConsentBook`) that

1. exists: else :attr:`~Reason.CONSENT_UNKNOWN` (never recorded, or erased by a tombstone);
2. is the record's own subject's, for the record's own resource: else
   :attr:`~Reason.CONSENT_MISMATCH`. A consent is personal and covers one resource; a
   reference to somebody else's consent is a source's error worth telling apart from a
   reference that names nothing;
3. was in force when the fact was observed, ``granted_at <= observed_at < expires_at``:
   before the grant :attr:`~Reason.CONSENT_NOT_YET_GIVEN`, from the expiry on
   :attr:`~Reason.CONSENT_EXPIRED`;
4. had not been withdrawn by then: from ``withdrawn_at`` on :attr:`~Reason.CONSENT_WITHDRAWN`.
   A withdrawal is honoured from its time on, not before: a fact observed while the consent
   stood was lawfully collected.

The checks run in that order, so a record gets the first reason that applies (a withdrawn
consent that has also expired is reported as expired if it expired first, else withdrawn:
whichever ended it first). Withdrawal is sticky: once a consent id was seen withdrawn, a later
record of the same id without a withdrawal (a source re-sending an old state) does not bring
it back; a new consent needs a new id (:func:`merge`).

In memory a consent is a :class:`ConsentTerms` tuple of the subject id, the resource id and
three times: granter and scope are not needed to decide and are not kept (see
:class:`~streams.kafka.consent_store.ConsentBook` for the bytes per consent).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from streams.core.reasons import Reason

__all__ = ["CONSENT_SCHEMA_NAME", "Consent", "ConsentTerms", "check_terms", "merge"]

#: the Avro record name of ``schemas/avro/consent.avsc``
CONSENT_SCHEMA_NAME = "org.xiangyun.Consent"


class ConsentTerms(NamedTuple):
    """What the decision needs of one consent: a plain tuple, the smallest Python object
    that holds five fields."""

    subject_id: str
    resource_id: str
    granted_at_ms: int
    expires_at_ms: int | None
    withdrawn_at_ms: int | None


@dataclass(frozen=True, slots=True)
class Consent:
    """One consent record, as the consents topic carries it (``consent.avsc``)."""

    consent_id: str
    subject_id: str
    resource_id: str
    granted_by: str
    scope: str
    granted_at_ms: int
    expires_at_ms: int | None = None
    withdrawn_at_ms: int | None = None

    def __post_init__(self) -> None:
        for name in ("consent_id", "subject_id", "resource_id", "granted_by"):
            if not getattr(self, name):
                raise ValueError(f"consent: {name} is empty")
        if self.expires_at_ms is not None and self.expires_at_ms < self.granted_at_ms:
            raise ValueError(
                f"consent {self.consent_id}: expires ({self.expires_at_ms}) before it is "
                f"granted ({self.granted_at_ms})"
            )

    @property
    def key(self) -> bytes:
        """The Kafka key on the consents topic."""
        return self.consent_id.encode()

    def to_avro(self) -> dict[str, Any]:
        return {
            "consent_id": self.consent_id,
            "subject_id": self.subject_id,
            "resource_id": self.resource_id,
            "granted_by": self.granted_by,
            "scope": self.scope,
            "granted_at_ms": self.granted_at_ms,
            "expires_at_ms": self.expires_at_ms,
            "withdrawn_at_ms": self.withdrawn_at_ms,
        }

    @classmethod
    def from_avro(cls, rec: Mapping[str, Any]) -> Consent:
        return cls(
            str(rec["consent_id"]),
            str(rec["subject_id"]),
            str(rec["resource_id"]),
            str(rec["granted_by"]),
            str(rec["scope"]),
            int(rec["granted_at_ms"]),
            None if rec.get("expires_at_ms") is None else int(rec["expires_at_ms"]),
            None if rec.get("withdrawn_at_ms") is None else int(rec["withdrawn_at_ms"]),
        )

    def withdrawn(self, at_ms: int) -> Consent:
        """This consent, withdrawn from ``at_ms`` on (an earlier withdrawal stands)."""
        at = at_ms if self.withdrawn_at_ms is None else min(at_ms, self.withdrawn_at_ms)
        return Consent(
            self.consent_id,
            self.subject_id,
            self.resource_id,
            self.granted_by,
            self.scope,
            self.granted_at_ms,
            self.expires_at_ms,
            at,
        )

    def terms(self) -> ConsentTerms:
        """The decision's part. Resource ids repeat across millions of consents and are
        interned, so each is stored once."""
        return ConsentTerms(
            self.subject_id,
            sys.intern(self.resource_id),
            self.granted_at_ms,
            self.expires_at_ms,
            self.withdrawn_at_ms,
        )


def merge(old: ConsentTerms | None, new: ConsentTerms) -> ConsentTerms:
    """The consent's state after ``new`` arrived for an id that held ``old``: ``new``, but a
    withdrawal already seen stays (the earlier of the two withdrawal times)."""
    if old is None or old.withdrawn_at_ms is None:
        return new
    if new.withdrawn_at_ms is not None and new.withdrawn_at_ms <= old.withdrawn_at_ms:
        return new
    return new._replace(withdrawn_at_ms=old.withdrawn_at_ms)


def check_terms(
    terms: ConsentTerms | None, subject_id: str, resource_id: str, observed_at_ms: int
) -> Reason | None:
    """None if ``terms`` let a record of ``subject_id`` in ``resource_id`` observed at
    ``observed_at_ms`` be collected, else the reason it may not (module doc, in order)."""
    if terms is None:
        return Reason.CONSENT_UNKNOWN
    if terms.subject_id != subject_id or terms.resource_id != resource_id:
        return Reason.CONSENT_MISMATCH
    if observed_at_ms < terms.granted_at_ms:
        return Reason.CONSENT_NOT_YET_GIVEN
    expires, withdrawn = terms.expires_at_ms, terms.withdrawn_at_ms
    if expires is not None and observed_at_ms >= expires:
        if withdrawn is None or expires <= withdrawn:
            return Reason.CONSENT_EXPIRED
        return Reason.CONSENT_WITHDRAWN
    if withdrawn is not None and observed_at_ms >= withdrawn:
        return Reason.CONSENT_WITHDRAWN
    return None
