"""Collection spec field rules (采集规范字段规则): the one home for rule logic.

A catalog resource's ``field_rules`` map a payload field to rules::

    citizen_id: {check: citizen_id}          # GB 11643-1999
    credit_code: {check: credit_code}        # GB 32100-2015
    household_region: {check: region}        # a known GB/T 2260 Jilin code
    birth_date: {check: date}                # a real ISO date YYYY-MM-DD
    gender: {enum: [M, F]}
    name: {min_length: 1, max_length: 64}    # in characters (code points)
    area_m2: {min: 0.01}                     # also max
    period: {pattern: "^[0-9]{4}Q[1-4]$"}    # the whole value must match

Whatever the rules, every payload is also screened for hostile input: a string longer than
:data:`MAX_STRING` characters, a control character other than tab, CR and LF, a Unicode
bidirectional embedding/override/isolate character (the "Trojan Source" characters), a lone
surrogate, or a NaN or infinite number fails the record.

:func:`check_fields` returns ``None`` when a payload passes, else one short human-readable
failure such as ``"citizen_id: bad check character"`` that never echoes the offending value
(so a 1 MB string never ends up in a log line). A payload that fails here is rejected with
:attr:`~streams.core.reasons.Reason.FIELD_RULE`; a subject id failing :func:`check_subject` with
:attr:`~streams.core.reasons.Reason.INVALID_SUBJECT`. The subject is part of the envelope, so the
ingest checks it before it decodes the payload; a record whose subject id is bad is therefore
rejected as INVALID_SUBJECT even though its payload would also fail the field rules.

Rules are compiled once per resource version (:func:`compile_rules`, which the catalog review
should call to refuse an entry with bad rules) and cached by ``(resource.id, resource.version)``.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from streams.catalog.model import Resource
from streams.core.identifiers import citizen_id_error, credit_code_error, is_valid_date
from streams.core.regions import REGIONS

__all__ = [
    "MAX_STRING",
    "MAX_SUBJECT",
    "RULE_KEYS",
    "CompiledSpec",
    "SpecError",
    "check_fields",
    "check_subject",
    "compile_rules",
    "hostile_problem",
    "subject_of",
]

MAX_STRING = 4096  # characters; any longer string in a payload is hostile input
MAX_SUBJECT = 128  # characters of a subject id that is not a citizen id or credit code

RULE_KEYS = frozenset({"check", "enum", "min_length", "max_length", "min", "max", "pattern"})
CHECKS = ("citizen_id", "credit_code", "region", "date")

# C0 controls except TAB, LF, CR; DEL and C1 controls; bidi embeddings, overrides and isolates
# (U+202A-U+202E, U+2066-U+2069); lone surrogates.
_HOSTILE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)

Check = Callable[[Any], str | None]


class SpecError(ValueError):
    """Field rules that cannot be compiled (a catalog error, not a data error)."""


@dataclass(frozen=True, slots=True)
class CompiledSpec:
    """A resource's field rules, compiled: per field, the checks to run in order."""

    fields: tuple[tuple[str, tuple[Check, ...]], ...]


# ---------------------------------------------------------------------------------------------
# Hostile input
# ---------------------------------------------------------------------------------------------


# Value types the screen passes whatever the value (exact types: a subclass takes the full walk).
_INERT_TYPES = frozenset({int, bool, bytes, type(None)})


def _hostile_value(path: str, value: Any, depth: int) -> str | None:
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            return f"{path}: longer than {MAX_STRING} characters"
        if _HOSTILE.search(value) is not None:
            return f"{path}: control, bidi override or surrogate character"
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path}: not a finite number"
    if depth > 8:
        return None
    if isinstance(value, Mapping):
        for k, v in value.items():
            if isinstance(k, str) and (len(k) > MAX_STRING or _HOSTILE.search(k) is not None):
                return f"{path}: hostile map key"
            problem = _hostile_value(f"{path}[]", v, depth + 1)
            if problem is not None:
                return problem
    elif isinstance(value, list | tuple):
        for v in value:
            problem = _hostile_value(f"{path}[]", v, depth + 1)
            if problem is not None:
                return problem
    return None


def hostile_problem(payload: Mapping[str, Any]) -> str | None:
    """The first hostile value in a decoded payload (see the module doc), or None."""
    if type(payload) is dict:
        # Fast path for a flat record (every payload the specs describe): if each value is a
        # plain str, a finite float or an inert scalar, and the strings together are short
        # enough and free of hostile characters, the full walk below finds nothing. Anything
        # else, including any problem, takes the full walk, which names the first problem.
        strings: list[str] = []
        for value in payload.values():
            kind = type(value)
            if kind is str:
                strings.append(value)
            elif kind is float:
                if not math.isfinite(value):
                    break
            elif kind not in _INERT_TYPES:
                break
        else:
            # _HOSTILE matches single characters, so joining cannot make or hide a match;
            # every character it matches is unprintable, so a printable string has none
            # (isprintable() is the quicker scan; the unit tests hold the claim).
            joined = "".join(strings)
            if (len(joined) <= MAX_STRING or max(map(len, strings)) <= MAX_STRING) and (
                joined.isprintable() or _HOSTILE.search(joined) is None
            ):
                return None
    return _first_hostile(payload)


def _first_hostile(payload: Mapping[str, Any]) -> str | None:
    for name, value in payload.items():
        problem = _hostile_value(str(name)[:64], value, 0)
        if problem is not None:
            return problem
    return None


# ---------------------------------------------------------------------------------------------
# Rule compilation
# ---------------------------------------------------------------------------------------------


def _check_region(v: Any) -> str | None:
    # identifiers.is_region, inlined: this runs for most records
    if isinstance(v, str) and v in REGIONS:
        return None
    return "not a known Jilin region code (GB/T 2260)"


def _check_date(v: Any) -> str | None:
    return None if is_valid_date(v) else "not a real date YYYY-MM-DD"


_CHECK_FUNCS: dict[str, Check] = {
    "citizen_id": citizen_id_error,
    "credit_code": credit_code_error,
    "region": _check_region,
    "date": _check_date,
}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)  # a tuple: quicker than |


def _number(field: str, key: str, raw: Any) -> float:
    if not _is_number(raw) or not math.isfinite(raw):
        raise SpecError(f"{field}: {key} must be a finite number, got {raw!r:.40}")
    return float(raw)


def _length(field: str, key: str, raw: Any) -> int:
    if not isinstance(raw, int) or isinstance(raw, bool) or raw < 0:
        raise SpecError(f"{field}: {key} must be a non-negative integer, got {raw!r:.40}")
    return raw


def _compile_field(field: str, rules: Mapping[str, Any]) -> tuple[Check, ...]:
    if not isinstance(rules, Mapping):
        raise SpecError(f"{field}: rules must be a mapping")
    unknown = set(rules) - RULE_KEYS
    if unknown:
        raise SpecError(f"{field}: unknown rule(s) {sorted(map(str, unknown))}")
    checks: list[Check] = []
    if "check" in rules:
        name = rules["check"]
        if name not in _CHECK_FUNCS:
            raise SpecError(f"{field}: unknown check {name!r:.40}; known: {', '.join(CHECKS)}")
        checks.append(_CHECK_FUNCS[name])
    if "enum" in rules:
        values = rules["enum"]
        if not isinstance(values, list | tuple) or not values:
            raise SpecError(f"{field}: enum must be a non-empty list")
        allowed = frozenset(str(v) for v in values)
        shown = ", ".join(sorted(allowed)[:8]) + (", ..." if len(allowed) > 8 else "")
        msg = f"not one of {shown}"

        def _enum(v: Any, allowed: frozenset[str] = allowed, msg: str = msg) -> str | None:
            return None if isinstance(v, str) and v in allowed else msg

        checks.append(_enum)
    lo = _length(field, "min_length", rules["min_length"]) if "min_length" in rules else None
    hi = _length(field, "max_length", rules["max_length"]) if "max_length" in rules else None
    if lo is not None or hi is not None:
        lo_, hi_ = lo or 0, hi if hi is not None else MAX_STRING
        if lo_ > hi_:
            raise SpecError(f"{field}: min_length {lo_} > max_length {hi_}")

        def _len(v: Any, lo: int = lo_, hi: int = hi_) -> str | None:
            if not isinstance(v, (str, list, tuple, bytes)):  # a tuple: quicker than |
                return "has no length"
            if len(v) < lo:
                return f"shorter than {lo} characters"
            if len(v) > hi:
                return f"longer than {hi} characters"
            return None

        checks.append(_len)
    mn = _number(field, "min", rules["min"]) if "min" in rules else None
    mx = _number(field, "max", rules["max"]) if "max" in rules else None
    if mn is not None or mx is not None:
        if mn is not None and mx is not None and mn > mx:
            raise SpecError(f"{field}: min {mn} > max {mx}")

        def _range(v: Any, mn: float | None = mn, mx: float | None = mx) -> str | None:
            if not _is_number(v) or (isinstance(v, float) and not math.isfinite(v)):
                return "not a finite number"
            if mn is not None and v < mn:
                return f"below minimum {mn:g}"
            if mx is not None and v > mx:
                return f"above maximum {mx:g}"
            return None

        checks.append(_range)
    if "pattern" in rules:
        raw = rules["pattern"]
        if not isinstance(raw, str):
            raise SpecError(f"{field}: pattern must be a string")
        try:
            rx = re.compile(raw)
        except re.error as exc:
            raise SpecError(f"{field}: bad pattern: {exc}") from exc

        def _pattern(v: Any, rx: re.Pattern[str] = rx) -> str | None:
            # fullmatch: "$" alone would also accept a trailing newline
            return None if isinstance(v, str) and rx.fullmatch(v) else "does not match pattern"

        checks.append(_pattern)
    return tuple(checks)


def compile_rules(resource: Resource) -> CompiledSpec:
    """Compile a resource's field rules; raises :class:`SpecError` on an unusable rule."""
    if not isinstance(resource.field_rules, Mapping):
        raise SpecError("field_rules must be a mapping")
    return CompiledSpec(
        tuple((str(f), _compile_field(str(f), r)) for f, r in resource.field_rules.items())
    )


#: a compiled spec flattened for :func:`check_fields`: per field in order, one ``(field,
#: check)`` pair per check, or ``(field, None)`` for a field without checks (it must be present)
_Flat = tuple[tuple[str, Check | None], ...]

# (resource.id, resource.version) -> (the field_rules object compiled, result flattened)
_CACHE: dict[tuple[str, int], tuple[Mapping[str, Any], _Flat | SpecError]] = {}
_CACHE_LOCK = threading.Lock()


def _flatten(spec: CompiledSpec) -> _Flat:
    flat: list[tuple[str, Check | None]] = []
    for name, checks in spec.fields:
        if checks:
            flat.extend((name, check) for check in checks)
        else:
            flat.append((name, None))
    return tuple(flat)


def _compiled(resource: Resource) -> _Flat | SpecError:
    key = (resource.id, resource.version)
    hit = _CACHE.get(key)
    # Same id and version normally means the same rules; compare anyway (identity first, so
    # the hot path is one dict lookup) in case a caller built a different entry under one key.
    if hit is not None and (hit[0] is resource.field_rules or hit[0] == resource.field_rules):
        return hit[1]
    result: _Flat | SpecError
    try:
        result = _flatten(compile_rules(resource))
    except SpecError as exc:
        result = exc
    with _CACHE_LOCK:
        _CACHE[key] = (resource.field_rules, result)
    return result


# ---------------------------------------------------------------------------------------------
# Public checks
# ---------------------------------------------------------------------------------------------


def check_fields(resource: Resource, payload: Mapping[str, Any]) -> str | None:
    """None if ``payload`` passes the hostile-input screen and the resource's field rules.

    A field named by a rule must be present; a null value (an optional field left empty)
    skips that field's rules. If the catalog entry's rules do not compile, every payload
    fails with a message starting ``"spec:"`` rather than raising: bad input, including a
    bad catalog entry, is data and never crashes a worker.
    """
    if type(payload) is not dict and not isinstance(payload, Mapping):
        return "payload: not a record"
    problem = hostile_problem(payload)
    if problem is not None:
        return problem
    flat = _compiled(resource)
    if isinstance(flat, SpecError):
        return f"spec: {flat}"
    # One pair per check: a field with several checks is looked up again for each, which
    # gives the same answers as looking it up once (a missing field fails at its first pair).
    for name, check in flat:
        if name not in payload:
            return f"{name}: missing"
        value = payload[name]
        if value is None or check is None:
            continue
        msg = check(value)
        if msg is not None:
            return f"{name}: {msg}"
    return None


def check_subject(resource: Resource, subject_id: str) -> str | None:
    """None if ``subject_id`` is a valid subject id for the resource's subject kind.

    ``citizen_id`` and ``credit_code`` subjects must pass their standard's check; any other
    kind must be non-empty, at most :data:`MAX_SUBJECT` characters and printable.
    """
    if not isinstance(subject_id, str):
        return "subject: not a string"
    kind = resource.subject
    if kind == "citizen_id":
        err = citizen_id_error(subject_id)
    elif kind == "credit_code":
        err = credit_code_error(subject_id)
    elif not subject_id:
        err = "empty"
    elif len(subject_id) > MAX_SUBJECT:
        err = f"longer than {MAX_SUBJECT} characters"
    elif not subject_id.isprintable():
        err = "not printable"
    else:
        err = None
    return None if err is None else f"subject: {err}"


def subject_of(resource: Resource, payload: Mapping[str, Any]) -> str | None:
    """The subject id a payload is about: the field named by ``resource.subject``, or
    ``"region:period"`` for the ``region_period`` kind; None if the payload lacks it.

    The ingest can compare it with the envelope's ``subject_id`` so a record cannot be filed
    under another subject's key; the generator uses it to derive subject ids.
    """
    kind = resource.subject
    value = payload.get(kind)
    if isinstance(value, str):
        return value
    if kind == "region_period":
        region, period = payload.get("region"), payload.get("period")
        if isinstance(region, str) and isinstance(period, str):
            return f"{region}:{period}"
    return None
