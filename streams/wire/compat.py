"""Avro schema compatibility for collection-spec updates (采集规范变更的兼容性检查).

:func:`check_backward` answers: can a consumer holding the *new* schema (the reader) read
every record written with the *old* one (the writer), so that pool data already collected
under the version in force stays readable after an update?

The rule is Avro schema resolution (specification, "Schema Resolution") made stricter in
two places, as the catalog issue asks ("an added optional field passes, a removed
required field or a changed type fails"):

* a field added in the new schema passes only with a ``default`` (Avro's own rule);
* a field removed from the new schema passes only if the old schema gave it a
  ``default``: a *required* field (one without a default) is part of the collection spec
  that sources must fill, so dropping it silently is refused (Avro itself would allow it);
* a changed type fails, except Avro's promotions ``int → long → float → double`` (also
  ``int → float/double``, ``long → double``) and ``string ↔ bytes``;
* an enum that loses a symbol fails, even when the new enum has a ``default`` symbol
  (that default would silently replace old values);
* a changed ``logicalType`` (e.g. ``timestamp-millis`` to ``timestamp-micros``) fails: the
  stored numbers would be read with another meaning;
* records and enums match by unqualified name or by an alias of the new type; fixed types
  need the same name and size; arrays and maps compare their items and values;
* unions: every branch the old schema could write must be readable by the new one, so
  ``["null", "string"] → "string"`` fails while ``"string" → ["null", "string"]`` passes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import fastavro

__all__ = ["PROMOTIONS", "check_backward"]

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
NAMED = frozenset({"record", "error", "enum", "fixed"})

#: writer type -> reader types that may read it (Avro schema resolution promotions)
PROMOTIONS: Mapping[str, frozenset[str]] = {
    "int": frozenset({"long", "float", "double"}),
    "long": frozenset({"float", "double"}),
    "float": frozenset({"double"}),
    "string": frozenset({"bytes"}),
    "bytes": frozenset({"string"}),
}


def check_backward(old_schema: Mapping[str, Any], new_schema: Mapping[str, Any]) -> list[str]:
    """Problems that keep ``new_schema`` from reading data written with ``old_schema``.

    An empty list means compatible. Each problem names the field path (``address.city``,
    ``tags[]`` for array items, ``scores{}`` for map values) and what to fix.
    """
    parsed: list[Any] = []
    for label, schema in (("old", old_schema), ("new", new_schema)):
        try:
            parsed.append(fastavro.parse_schema(_plain(schema), _write_hint=False))
        except Exception as exc:  # fastavro raises several types for invalid schemas
            return [f"{label} schema is not valid Avro: {exc}"]
    checker = _Checker(_named_types(parsed[0]), _named_types(parsed[1]))
    checker.check(parsed[0], parsed[1], "")
    return checker.problems


def _plain(schema: Any) -> Any:
    """A deep copy made of dicts and lists (fastavro wants plain containers)."""
    if isinstance(schema, Mapping):
        return {str(k): _plain(v) for k, v in schema.items()}
    if isinstance(schema, list | tuple):
        return [_plain(v) for v in schema]
    return schema


def _named_types(schema: Any) -> dict[str, dict[str, Any]]:
    """Fullname -> definition for every record, enum and fixed in a fastavro-parsed schema
    (fastavro qualifies every name and reference, so lookups need no namespace logic)."""
    out: dict[str, dict[str, Any]] = {}

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for branch in node:
                walk(branch)
        elif isinstance(node, dict):
            kind = node.get("type")
            if kind in NAMED:
                out[str(node["name"])] = node
            if kind in ("record", "error"):
                for f in node.get("fields", []):
                    walk(f["type"])
            elif kind == "array":
                walk(node["items"])
            elif kind == "map":
                walk(node["values"])
            elif isinstance(kind, dict | list):
                walk(kind)

    walk(schema)
    return out


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


class _Checker:
    def __init__(self, old_names: dict[str, dict[str, Any]], new_names: dict[str, dict[str, Any]]):
        self.old_names = old_names
        self.new_names = new_names
        self.problems: list[str] = []
        self._seen: set[tuple[str, str]] = set()  # record pairs already compared (recursion)

    # -- normalisation -------------------------------------------------------------------
    @staticmethod
    def _resolve(node: Any, names: dict[str, dict[str, Any]]) -> Any:
        """Replace a named reference by its definition; unwrap ``{"type": "string"}``."""
        if isinstance(node, str):
            return node if node in PRIMITIVES else names.get(node, node)
        if isinstance(node, dict):
            kind = node.get("type")
            if isinstance(kind, dict | list):
                return _Checker._resolve(kind, names)
            if (
                isinstance(kind, str)
                and kind not in PRIMITIVES
                and kind not in NAMED
                and kind not in ("array", "map")
            ):
                return names.get(kind, kind)
        return node

    @staticmethod
    def _kind(node: Any) -> str:
        if isinstance(node, list):
            return "union"
        if isinstance(node, dict):
            return str(node.get("type"))
        return str(node)

    def describe(self, node: Any, names: dict[str, dict[str, Any]]) -> str:
        node = self._resolve(node, names)
        kind = self._kind(node)
        if kind == "union":
            return "[" + ", ".join(self.describe(b, names) for b in node) + "]"
        if kind in NAMED:
            return f"{kind} {_short(str(node['name']))}"
        if kind == "array":
            return f"array<{self.describe(node['items'], names)}>"
        if kind == "map":
            return f"map<{self.describe(node['values'], names)}>"
        logical = node.get("logicalType") if isinstance(node, dict) else None
        return f"{kind} ({logical})" if logical else kind

    # -- the check -------------------------------------------------------------------------
    def check(self, writer: Any, reader: Any, path: str) -> None:
        """Append every problem reading ``writer`` data with ``reader`` at ``path``."""
        problem = self._match(writer, reader, path)
        if problem:
            self.problems.append(problem)

    def _readable(self, writer: Any, reader: Any, path: str) -> bool:
        """Whether ``reader`` reads ``writer`` without any problem (for picking branches)."""
        saved = (list(self.problems), set(self._seen))
        ok = self._match(writer, reader, path) is None and len(self.problems) == len(saved[0])
        self.problems, self._seen = saved
        return ok

    def _match(self, writer: Any, reader: Any, path: str) -> str | None:
        """None if compatible at this level (nested problems are appended), else the problem."""
        w = self._resolve(writer, self.old_names)
        r = self._resolve(reader, self.new_names)
        wk, rk = self._kind(w), self._kind(r)
        where = path or "(top level)"
        if wk == "union":
            for b in w:
                self._branch(b, r, path, w)
            return None
        if rk == "union":
            self._branch(w, r, path, w)
            return None
        if wk != rk and rk not in PROMOTIONS.get(wk, frozenset()):
            return (
                f"{where}: type changed from {self.describe(w, self.old_names)} to "
                f"{self.describe(r, self.new_names)}"
            )
        if wk in PRIMITIVES:
            wl = w.get("logicalType") if isinstance(w, dict) else None
            rl = r.get("logicalType") if isinstance(r, dict) else None
            if wl != rl:
                return f"{where}: logical type changed from {wl or 'none'} to {rl or 'none'}"
            return None
        if wk in ("record", "error"):
            return self._record(w, r, path)
        if wk == "enum":
            return self._enum(w, r, where)
        if wk == "fixed":
            if not self._same_name(w, r):
                return f"{where}: fixed {_short(w['name'])} renamed to {_short(r['name'])}"
            if w.get("size") != r.get("size"):
                return f"{where}: fixed {_short(w['name'])} size changed {w['size']} → {r['size']}"
            return None
        if wk == "array":
            self.check(w["items"], r["items"], f"{path}[]")
        elif wk == "map":
            self.check(w["values"], r["values"], f"{path}{{}}")
        return None

    def _branch(self, writer: Any, reader: Any, path: str, whole: Any) -> None:
        """One non-union writer type against a reader that may be a union: fine if some
        reader branch reads it; else report the problems against the branch of the same
        kind and name (the one Avro would pick), or that no branch fits. ``whole`` is the
        writer's full type, for the message."""
        r = self._resolve(reader, self.new_names)
        branches = r if isinstance(r, list) else [r]
        w = self._resolve(writer, self.old_names)
        if any(self._readable(w, b, path) for b in branches):
            return
        wk = self._kind(w)
        same = [
            b
            for b in branches
            if self._kind(self._resolve(b, self.new_names)) == wk
            and (wk not in NAMED or self._same_name(w, self._resolve(b, self.new_names)))
        ]
        if same:
            self.check(w, same[0], path)
            return
        self.problems.append(
            f"{path or '(top level)'}: type changed from {self.describe(whole, self.old_names)} to "
            f"{self.describe(r, self.new_names)}, which cannot hold "
            f"{self.describe(w, self.old_names)} values"
        )

    @staticmethod
    def _same_name(w: Mapping[str, Any], r: Mapping[str, Any]) -> bool:
        names = {_short(str(r["name"]))} | {_short(str(a)) for a in r.get("aliases", ())}
        return _short(str(w["name"])) in names

    def _record(self, w: dict[str, Any], r: dict[str, Any], path: str) -> str | None:
        where = path or "(top level)"
        if not self._same_name(w, r):
            return (
                f"{where}: record {_short(w['name'])} renamed to {_short(r['name'])}; "
                f'add "aliases": ["{_short(w["name"])}"] to the new record'
            )
        pair = (str(w["name"]), str(r["name"]))
        if pair in self._seen:
            return None
        self._seen.add(pair)
        old_fields = {f["name"]: f for f in w.get("fields", [])}
        matched: set[str] = set()
        for rf in r.get("fields", []):
            fpath = f"{path}.{rf['name']}" if path else str(rf["name"])
            candidates = [rf["name"], *rf.get("aliases", ())]
            wf = next((old_fields[n] for n in candidates if n in old_fields), None)
            if wf is None:
                if "default" not in rf:
                    self.problems.append(
                        f"{fpath}: field added without a default, so records written with the "
                        f"old schema cannot be read; give it a default (e.g. type "
                        f'["null", ...] with default null)'
                    )
                continue
            matched.add(wf["name"])
            self.check(wf["type"], rf["type"], fpath)
        for name, wf in old_fields.items():
            if name not in matched and "default" not in wf:
                fpath = f"{path}.{name}" if path else str(name)
                self.problems.append(
                    f"{fpath}: required field removed (it has no default in the version in "
                    f"force); keep it, or rename it with an alias"
                )
        return None

    def _enum(self, w: dict[str, Any], r: dict[str, Any], where: str) -> str | None:
        if not self._same_name(w, r):
            return f"{where}: enum {_short(w['name'])} renamed to {_short(r['name'])}"
        lost = [s for s in w.get("symbols", []) if s not in set(r.get("symbols", []))]
        if lost:
            return f"{where}: enum {_short(w['name'])} lost symbol(s) {', '.join(lost)}"
        return None
