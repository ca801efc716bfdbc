"""Multi-source verification (多源校核, articles 20 and 22): evidence from registered units
other than a resource's provider is compared field by field with the pool's authoritative
current value; agreement counts towards that version's verification, disagreement raises a
conflict for the provider to resolve.

:func:`register_verifier` runs the exactly-once verifier agent in a worker;
:mod:`~streams.verification.compare` is the comparison rule;
:class:`~streams.verification.conflicts.ConflictStore` lists and resolves conflicts.
"""

from __future__ import annotations

from streams.verification.agent import register_verifier
from streams.verification.compare import conflict_id, differing_fields, normalise
from streams.verification.conflicts import (
    ConflictBook,
    ConflictRefused,
    ConflictStore,
    ConflictTracker,
)
from streams.verification.decision import Output, Verifier
from streams.verification.runtime import VerifyRuntime

__all__ = [
    "ConflictBook",
    "ConflictRefused",
    "ConflictStore",
    "ConflictTracker",
    "Output",
    "Verifier",
    "VerifyRuntime",
    "conflict_id",
    "differing_fields",
    "normalise",
    "register_verifier",
]
