"""Where the files that ship with Xiangyun are: Avro schemas, starter catalog, starter unit
register and sharing lists, stack files.

The repository keeps them in top-level folders (``schemas/avro/``, ``catalog/``, ``units/``,
``policy/``, ``stack/``). The wheel maps those folders into this package
(``[tool.setuptools.package-dir]`` of ``pyproject.toml``), so an installed copy finds them
next to this file; a source checkout (and the editable install ``make`` uses) finds them in
the checkout. Every default that names one of these folders comes from here.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "CHECKOUT",
    "catalog_dir",
    "policy_dir",
    "schema_dir",
    "shipped",
    "stack_dir",
    "units_dir",
]

_HERE = Path(__file__).resolve().parent

#: the source checkout this package runs from (also an editable install), ``None`` when installed
CHECKOUT: Path | None = _HERE.parent if (_HERE.parent / "pyproject.toml").is_file() else None


def shipped(name: str) -> Path:
    """The shipped folder ``name`` (``schemas``, ``catalog``, ``units``, ``policy`` or
    ``stack``): in the checkout when running from one, else the copy installed inside this
    package."""
    return (CHECKOUT or _HERE) / name


def schema_dir() -> Path:
    """The Avro schemas: ``envelope.avsc``, ``rejected.avsc`` and the collection specs."""
    return shipped("schemas") / "avro"


def catalog_dir() -> Path:
    """The starter catalog (provincial and city entries)."""
    return shipped("catalog")


def policy_dir() -> Path:
    """The starter sharing lists (the province's responsibility, demand and negative lists)."""
    return shipped("policy")


def units_dir() -> Path:
    """The starter unit register (provincial departments, cities and their bodies)."""
    return shipped("units")


def stack_dir() -> Path:
    """Files of the local stack (``pom.xml`` of the Kafka jars)."""
    return shipped("stack")
