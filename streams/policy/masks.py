"""Field masks (脱敏), named as Apache Ranger names its masking types.

=========================  =======================================================
``MASK`` (redact)          upper-case letters → ``X``, lower-case → ``x``, digits → ``n``,
                           any other character but spaces → ``*``
``MASK_SHOW_LAST_4``       like ``MASK`` except the last four characters
``MASK_SHOW_FIRST_4``      like ``MASK`` except the first four characters
``MASK_HASH``              keyed hash: HMAC-SHA256 with the platform key, hex. Never a bare
                           hash: an 18-digit identity number has few enough candidates
                           (about 10^11 per region and birth date range) to be brute-forced
                           from an unkeyed digest
``MASK_DATE_SHOW_YEAR``    a date keeps its year only: ``1990-05-17`` → ``1990-01-01``
                           (``YYYY-MM`` → ``YYYY-01``); anything else → null
``MASK_NULL``              null
=========================  =======================================================

Non-string values are masked as their string form (a masked value is a string or null).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from streams.policy.legal import PolicyError

__all__ = ["MIN_KEY_BYTES", "MaskKind", "apply_masks", "mask_value"]

#: the shortest platform key a keyed hash accepts
MIN_KEY_BYTES = 16
_DATE = re.compile(r"^(\d{4})-(\d{2})(-\d{2})?")


class MaskKind(StrEnum):
    REDACT = "MASK"
    SHOW_LAST_4 = "MASK_SHOW_LAST_4"
    SHOW_FIRST_4 = "MASK_SHOW_FIRST_4"
    KEYED_HASH = "MASK_HASH"
    YEAR_ONLY = "MASK_DATE_SHOW_YEAR"
    NULL = "MASK_NULL"

    @classmethod
    def parse(cls, raw: object) -> MaskKind:
        """A mask by its Ranger name (``MASK_HASH``) or member name (``keyed_hash``)."""
        text = str(raw).strip()
        for m in cls:
            if text in (m.value, m.name, m.name.lower()):
                return m
        names = ", ".join(m.value for m in cls)
        raise PolicyError(f"mask {raw!r} is not one of: {names}")


def _redact_char(c: str) -> str:
    if c.isspace():
        return c
    if c.isascii() and c.isalpha():
        return "X" if c.isupper() else "x"
    if c.isascii() and c.isdigit():
        return "n"
    return "*"


def _redact(text: str) -> str:
    return "".join(_redact_char(c) for c in text)


def _key_bytes(key: bytes | str | None) -> bytes:
    raw = key.encode() if isinstance(key, str) else (key or b"")
    if len(raw) < MIN_KEY_BYTES:
        raise PolicyError(
            f"a keyed hash needs the platform key (at least {MIN_KEY_BYTES} bytes; set "
            f"XIANGYUN_POLICY_MASK_KEY); a bare hash of an identity number can be brute-forced"
        )
    return raw


def mask_value(value: Any, kind: MaskKind, key: bytes | str | None = None) -> str | None:
    """``value`` masked with ``kind``; null stays null."""
    if value is None or kind is MaskKind.NULL:
        return None
    text = value if isinstance(value, str) else str(value)
    if kind is MaskKind.REDACT:
        return _redact(text)
    if kind is MaskKind.SHOW_LAST_4:
        return _redact(text[:-4]) + text[-4:] if len(text) > 4 else text
    if kind is MaskKind.SHOW_FIRST_4:
        return text[:4] + _redact(text[4:])
    if kind is MaskKind.KEYED_HASH:
        return hmac.new(_key_bytes(key), text.encode(), hashlib.sha256).hexdigest()
    if kind is MaskKind.YEAR_ONLY:
        m = _DATE.match(text)
        if m is None:
            return None
        return f"{m.group(1)}-01-01" if m.group(3) else f"{m.group(1)}-01"
    raise PolicyError(f"unknown mask {kind!r}")  # pragma: no cover - every kind is handled


def apply_masks(
    record: Mapping[str, Any], masks: Mapping[str, MaskKind], key: bytes | str | None = None
) -> dict[str, Any]:
    """A copy of ``record`` with each field named in ``masks`` masked; other fields as they
    are. A keyed hash without a platform key of at least :data:`MIN_KEY_BYTES` raises
    :class:`~streams.policy.legal.PolicyError`, before anything is returned."""
    if any(k is MaskKind.KEYED_HASH for k in masks.values()):
        _key_bytes(key)
    out = dict(record)
    for name, kind in masks.items():
        if name in out:
            out[name] = mask_value(out[name], kind, key)
    return out
