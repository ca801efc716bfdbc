"""Reason codes: why a record did not become a pool's truth (拒收原因).

Every rejected record carries exactly one of these; dashboards and alerts group by them.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Reason"]


class Reason(StrEnum):
    # Bytes and schemas
    MALFORMED = "MALFORMED"  # not Avro single-object encoding
    UNKNOWN_SCHEMA = "UNKNOWN_SCHEMA"  # writer fingerprint not in the schema registry
    UNDECODABLE = "UNDECODABLE"  # body does not decode with its writer schema
    SCHEMA_MISMATCH = "SCHEMA_MISMATCH"  # writer cannot be resolved to the collection spec
    WRONG_TYPE = "WRONG_TYPE"  # a value of the wrong type (encoding side)
    INVALID_SCHEMA = "INVALID_SCHEMA"  # a schema that is not valid Avro
    OVERSIZED = "OVERSIZED"  # record larger than the ingest accepts
    KEY_MISMATCH = "KEY_MISMATCH"  # Kafka key is not resource_id|subject_id of the envelope
    # Catalog and collection spec (articles 15 to 18)
    UNKNOWN_RESOURCE = "UNKNOWN_RESOURCE"  # resource not in the catalog, or not in force
    RESOURCE_NOT_IN_FORCE = "RESOURCE_NOT_IN_FORCE"  # in the catalog, but draft/retired/rejected
    REGION_MISMATCH = "REGION_MISMATCH"  # region not the resource's region or one of its cities
    CHANNEL_NOT_ALLOWED = "CHANNEL_NOT_ALLOWED"  # collection channel the catalog does not allow
    CONSENT_MISSING = "CONSENT_MISSING"  # consent required and no consent reference
    # The consent reference checked against the consents on record (streams.core.consent)
    CONSENT_UNKNOWN = "CONSENT_UNKNOWN"  # no consent on record with that reference (or erased)
    CONSENT_MISMATCH = "CONSENT_MISMATCH"  # the consent is another subject's or resource's
    CONSENT_NOT_YET_GIVEN = "CONSENT_NOT_YET_GIVEN"  # observed before the consent was granted
    CONSENT_EXPIRED = "CONSENT_EXPIRED"  # observed at or after the consent's expiry
    CONSENT_WITHDRAWN = "CONSENT_WITHDRAWN"  # observed at or after the subject withdrew it
    FIELD_RULE = "FIELD_RULE"  # a field rule failed (check character, region, date, enum, length)
    INVALID_SUBJECT = "INVALID_SUBJECT"  # subject id fails its identifier check
    # Who sends what (article 22): the register of units and the principal's topic
    UNREGISTERED_PROVIDER = "UNREGISTERED_PROVIDER"  # provider is no unit in force
    PROVIDER_NOT_IN_PRINCIPAL = "PROVIDER_NOT_IN_PRINCIPAL"  # not the topic's principal or below it
    COMMISSION_MISMATCH = "COMMISSION_MISMATCH"  # COMMISSIONED iff a registered third party sent it
    WRONG_PARTITION = "WRONG_PARTITION"  # not where Kafka's partitioner puts its key
    INVALID_RECORD_ID = "INVALID_RECORD_ID"  # record id is not a UUID as the envelope documents
    # Versions and times: checked before they can pin a key (article 21, dynamic update)
    INVALID_VERSION = "INVALID_VERSION"  # a negative source version
    INVALID_TIME = "INVALID_TIME"  # observed-at before 1970 or beyond the allowed clock skew
    # Pool outcomes that change nothing (superseded topic, not rejected)
    DUPLICATE = "DUPLICATE"  # same key, same content as the pool's current version
    STALE = "STALE"  # older than the pool's current version (source version, then observed-at)
    VERSION_CONFLICT = "VERSION_CONFLICT"  # same version and time, other content: for the provider
    # The platform's own fault, never the data's
    INTERNAL = "INTERNAL"  # an unexpected error in the decision; alerts, and stops a failing worker
