"""Field-by-field comparison of evidence with the authoritative value (多源校核): pure.

The rule, applied to the payloads as decoded field maps:

* only fields both records carry are compared (two versions of a collection spec may differ
  in their fields; a field one side lacks says nothing about the other's value);
* bookkeeping fields are skipped: :data:`~streams.catalog.model.GENERIC_FIELDS` (record id,
  version, observed/updated times, remarks, source...): they differ between any two sources
  and are not the fact being checked;
* text is trimmed and runs of whitespace are folded into one space; empty text equals no
  value (``None``);
* codes compare without case: a field named ``code``, ``*_code``, ``*_id``, ``*_no`` or
  ``*_number`` (an identity number's ``x`` and ``X``, a licence plate's letters);
* numbers compare by value (``1 == 1.0``); lists and records element by element with the
  same rule (a record's inner fields take their own names).

The values put into a conflict are the original (not normalised) values as JSON text.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from streams.catalog.model import GENERIC_FIELDS

__all__ = [
    "CODE_SUFFIXES",
    "conflict_id",
    "differing_fields",
    "display",
    "is_code",
    "normalise",
]

#: a field whose name is or ends with one of these holds a code: compared without case
CODE_SUFFIXES = ("code", "_id", "_no", "_number")


def is_code(name: str) -> bool:
    return name.lower().endswith(CODE_SUFFIXES)


def normalise(name: str, value: Any) -> Any:
    """The value as compared: see the module's rule."""
    if value is None:
        return None
    if isinstance(value, str):
        text = " ".join(value.split())
        if not text:
            return None
        return text.upper() if is_code(name) else text
    if isinstance(value, Mapping):
        return {k: normalise(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [normalise(name, v) for v in value]
    return value


def differing_fields(authoritative: Mapping[str, Any], evidence: Mapping[str, Any]) -> list[str]:
    """Names of the compared fields whose normalised values differ, sorted."""
    return sorted(
        name
        for name in authoritative.keys() & evidence.keys()
        if name not in GENERIC_FIELDS
        and normalise(name, authoritative[name]) != normalise(name, evidence[name])
    )


def display(value: Any) -> str:
    """A field value as JSON text for a conflict record (dates and decimals as text)."""
    if isinstance(value, bytes):
        return json.dumps(value.hex())
    return json.dumps(value, ensure_ascii=False, default=str, sort_keys=True)


def conflict_id(key: bytes, version: int, evidence_record_id: str) -> str:
    """Deterministic: the same key, authoritative version and evidence record give the
    same id, so the evidence read twice raises one conflict."""
    h = hashlib.sha256()
    for part in (key, str(version).encode(), evidence_record_id.encode()):
        h.update(len(part).to_bytes(4, "big"))
        h.update(part)
    return h.hexdigest()[:32]
