"""Random identifiers in uuid4 form (decision ids, request ids) that never wait for the GIL.

``uuid.uuid4()`` reads 16 bytes with ``os.urandom``, which releases the GIL for the system
call; in a busy worker, taking it back waited up to a thread switch interval (5 ms) on
every decision. Here ``os.urandom`` is read for many ids at once: the same randomness, one
release per ``per_read`` ids. A forked child reads afresh: it never repeats its parent's ids.
"""

from __future__ import annotations

import os
import threading

__all__ = ["RandomIds"]

_VERSION_MASK = ~((0xF000 << 64) | (0xC000 << 48))
_VERSION_4 = (0x4000 << 64) | (0x8000 << 48)  # version 4, RFC 4122 variant


class RandomIds:
    """``hex()``: 32 hex digits of a random (version 4) UUID; safe across threads."""

    def __init__(self, per_read: int = 4096) -> None:
        if per_read < 1:
            raise ValueError("per_read must be at least 1")
        self._per_read = per_read
        self._lock = threading.Lock()
        self._buffer = b""
        self._at = 0
        self._pid = os.getpid()

    def hex(self) -> str:
        with self._lock:
            if self._at >= len(self._buffer) or self._pid != os.getpid():
                self._buffer, self._at = os.urandom(16 * self._per_read), 0
                self._pid = os.getpid()
            at = self._at
            self._at = at + 16
            raw = self._buffer[at : at + 16]
        return f"{(int.from_bytes(raw, 'big') & _VERSION_MASK) | _VERSION_4:032x}"
