"""The register of participating units (参与单位名录), article 22: each unit's code, name,
kind, parent, region and duties, validation and the review workflow. No Kafka here; the
catalog asks it whether a department or provider is a registered unit."""

from __future__ import annotations

from streams.units.model import (
    CODE_PATTERN,
    KIND_ORDER,
    Unit,
    UnitError,
    UnitKind,
    UnitRegister,
    UnitStatus,
    load_units,
    unit_of_source,
    validate_unit,
)
from streams.units.review import (
    DATA_BUREAU,
    UnitAction,
    UnitBook,
    UnitChange,
    UnitEvent,
    UnitHistory,
    UnitSnapshot,
    UnitState,
)

__all__ = [
    "CODE_PATTERN",
    "DATA_BUREAU",
    "KIND_ORDER",
    "Unit",
    "UnitAction",
    "UnitBook",
    "UnitChange",
    "UnitError",
    "UnitEvent",
    "UnitHistory",
    "UnitKind",
    "UnitRegister",
    "UnitSnapshot",
    "UnitState",
    "UnitStatus",
    "load_units",
    "unit_of_source",
    "validate_unit",
]
