"""Redis views of the resource pools: each pool's current records, keyed by resource and
subject, so the exchange answers "what is the current record of this subject" without
scanning Kafka.

:class:`Materializer` reads every pool topic (read committed: aborted transactions never
reach Redis) and writes each batch atomically with the offsets it applied; Redis is its
offset store, and a view that disappears from Redis is replayed from the pool topics.
:class:`PoolView` reads one record, the view's freshness, digest and size.
:func:`register_materializer` runs the materializer in a Faust worker. The key layout and
value encoding are in :mod:`streams.views.layout`.
"""

from __future__ import annotations

from streams.views.agent import MaterializerService, register_materializer
from streams.views.layout import Layout, digest_entries, entry_of
from streams.views.materializer import Materializer, Progress
from streams.views.reader import Freshness, PoolView, ResourceStats, ViewStats

__all__ = [
    "Freshness",
    "Layout",
    "Materializer",
    "MaterializerService",
    "PoolView",
    "Progress",
    "ResourceStats",
    "ViewStats",
    "digest_entries",
    "entry_of",
    "register_materializer",
]
