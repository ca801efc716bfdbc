"""The ingest (采集汇聚): the per-record decision, the collect reader, the runtime a
worker holds and the Faust agent that decides each batch.
"""

from __future__ import annotations

from streams.ingest.agent import register_ingest
from streams.ingest.decision import (
    Ingestor,
    IngestRejection,
    Outcome,
    OutcomeKind,
    SpecOf,
    file_spec_loader,
)
from streams.ingest.reader import CollectReader
from streams.ingest.runtime import CatalogSource, Runtime, StaticCatalog

__all__ = [
    "CatalogSource",
    "CollectReader",
    "IngestRejection",
    "Ingestor",
    "Outcome",
    "OutcomeKind",
    "Runtime",
    "SpecOf",
    "StaticCatalog",
    "file_spec_loader",
    "register_ingest",
]
