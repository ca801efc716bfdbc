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
    FIELD_RULE = "FIELD_RULE"  # a field rule failed (check character, region, date, enum, length)
    INVALID_SUBJECT = "INVALID_SUBJECT"  # subject id fails its identifier check
