"""The consent rule (article 18): on record, the subject's and resource's own, in force at
the observed time, not withdrawn by then; each failure with its own reason code."""

from __future__ import annotations

import pytest

from streams.core.consent import Consent, ConsentTerms, check_terms, merge
from streams.core.reasons import Reason

SUBJECT = "220102194503071234"
RESOURCE = "220100.population.elderly_allowance"
T0 = 1_767_225_600_000
DAY = 86_400_000


def consent(**kw: object) -> Consent:
    fields: dict[str, object] = {
        "consent_id": "C-1",
        "subject_id": SUBJECT,
        "resource_id": RESOURCE,
        "granted_by": "220100-MZ",
        "scope": "elderly allowance",
        "granted_at_ms": T0,
    }
    fields.update(kw)
    return Consent(**fields)  # type: ignore[arg-type]


def check(c: Consent | None, observed: int, subject: str = SUBJECT, resource: str = RESOURCE):
    return check_terms(None if c is None else c.terms(), subject, resource, observed)


def test_a_consent_in_force_lets_the_record_in() -> None:
    assert check(consent(), T0) is None  # from the grant on, inclusive
    assert check(consent(), T0 + 365 * DAY) is None  # no expiry: no end
    assert check(consent(expires_at_ms=T0 + DAY), T0 + DAY - 1) is None


def test_unknown_consent() -> None:
    assert check(None, T0) is Reason.CONSENT_UNKNOWN


def test_another_subjects_or_resources_consent_is_a_mismatch() -> None:
    assert check(consent(), T0, subject="220102194503079999") is Reason.CONSENT_MISMATCH
    assert check(consent(), T0, resource="population.resident") is Reason.CONSENT_MISMATCH


def test_observed_before_the_grant() -> None:
    assert check(consent(), T0 - 1) is Reason.CONSENT_NOT_YET_GIVEN


def test_expired_from_the_expiry_on() -> None:
    c = consent(expires_at_ms=T0 + DAY)
    assert check(c, T0 + DAY) is Reason.CONSENT_EXPIRED
    assert check(c, T0 + 9 * DAY) is Reason.CONSENT_EXPIRED


def test_withdrawal_is_honoured_from_its_time_on_not_before() -> None:
    c = consent().withdrawn(T0 + DAY)
    assert check(c, T0 + DAY - 1) is None  # collected while the consent stood
    assert check(c, T0 + DAY) is Reason.CONSENT_WITHDRAWN


def test_whichever_ended_the_consent_first_is_the_reason() -> None:
    expired_first = consent(expires_at_ms=T0 + DAY).withdrawn(T0 + 2 * DAY)
    assert check(expired_first, T0 + 3 * DAY) is Reason.CONSENT_EXPIRED
    withdrawn_first = consent(expires_at_ms=T0 + 2 * DAY).withdrawn(T0 + DAY)
    assert check(withdrawn_first, T0 + 3 * DAY) is Reason.CONSENT_WITHDRAWN
    assert check(withdrawn_first, T0 + DAY + 1) is Reason.CONSENT_WITHDRAWN


def test_a_withdrawal_is_sticky_and_the_earlier_one_stands() -> None:
    granted, withdrawn = consent().terms(), consent().withdrawn(T0 + DAY).terms()
    assert merge(None, granted) == granted
    assert merge(granted, withdrawn) == withdrawn
    # The source re-sends the old grant: the withdrawal stays.
    assert merge(withdrawn, granted).withdrawn_at_ms == T0 + DAY
    later = consent().withdrawn(T0 + 5 * DAY).terms()
    assert merge(withdrawn, later).withdrawn_at_ms == T0 + DAY
    earlier = consent().withdrawn(T0 + 1).terms()
    assert merge(withdrawn, earlier).withdrawn_at_ms == T0 + 1
    assert consent().withdrawn(T0 + DAY).withdrawn(T0 + 5 * DAY).withdrawn_at_ms == T0 + DAY


def test_avro_round_trip_and_key() -> None:
    c = consent(expires_at_ms=T0 + DAY, withdrawn_at_ms=T0 + 5)
    assert Consent.from_avro(c.to_avro()) == c
    assert c.key == b"C-1"
    assert isinstance(c.terms(), ConsentTerms)


@pytest.mark.parametrize(
    "kw",
    [
        {"consent_id": ""},
        {"subject_id": ""},
        {"resource_id": ""},
        {"granted_by": ""},
        {"expires_at_ms": T0 - 1},
    ],
)
def test_a_malformed_consent_is_refused(kw: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        consent(**kw)
