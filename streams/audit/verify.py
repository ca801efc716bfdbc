"""Checking an access log against its signed checkpoints. Pure: the caller reads the topics.

The signed history is rebuilt from the checkpoints alone: each valid checkpoint (signed by
the platform's key, of this log) carries the leaf hashes added since the one before, bound by
its signed root. The log's entries are then compared with that history leaf by leaf, so the
first entry that was changed, removed, reordered or inserted is named exactly, and each
checkpoint's root is recomputed from the log (a checkpoint over more entries than the log
holds: truncation; another root: alteration or a fork). Entries after the last checkpoint are
checked by their own sequence numbers (0, 1, 2, … without gaps).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from streams.audit.merkle import HASH_SIZE, CompactTree, leaf_hash
from streams.audit.signing import Checkpoint, verify_checkpoint

__all__ = ["Finding", "Kind", "VerifyReport", "verify_log"]


class Kind(enum.StrEnum):
    CHANGED = "changed"
    REMOVED = "removed"
    INSERTED = "inserted"
    REORDERED = "reordered"
    TRUNCATED = "truncated"
    UNREADABLE = "unreadable"
    SEQUENCE = "sequence"
    CHECKPOINT_MISMATCH = "checkpoint-mismatch"
    CHECKPOINT_TRUNCATED = "checkpoint-beyond-log"
    CHECKPOINT_FORK = "checkpoint-fork"
    CHECKPOINT_INVALID = "checkpoint-invalid"


@dataclass(frozen=True, slots=True)
class Finding:
    kind: Kind
    detail: str
    entry: int | None = None
    checkpoint: int | None = None  # position in the checkpoint topic

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "entry": self.entry,
            "checkpoint": self.checkpoint,
            "detail": self.detail,
        }


@dataclass(slots=True)
class VerifyReport:
    log_id: str
    entries: int
    checkpoints: int
    valid_checkpoints: int
    signed_size: int  # entries covered by the signed history
    root: bytes  # the log's own tree head
    first_bad_entry: Finding | None = None
    checkpoint_findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.first_bad_entry is None and not self.checkpoint_findings

    @property
    def unsigned(self) -> int:
        """Entries after the last checkpoint (not yet signed)."""
        return max(0, self.entries - self.signed_size)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "log_id": self.log_id,
            "entries": self.entries,
            "checkpoints": self.checkpoints,
            "valid_checkpoints": self.valid_checkpoints,
            "signed_size": self.signed_size,
            "unsigned_entries": self.unsigned,
            "root_hash": self.root.hex(),
            "first_bad_entry": self.first_bad_entry.to_json() if self.first_bad_entry else None,
            "checkpoint_findings": [f.to_json() for f in self.checkpoint_findings],
        }

    def render(self) -> str:
        lines = [
            f"access log {self.log_id}: {self.entries} entries, root {self.root.hex()}",
            f"checkpoints: {self.checkpoints} ({self.valid_checkpoints} valid); "
            f"signed history covers {self.signed_size} entries",
        ]
        if self.unsigned:
            lines.append(f"{self.unsigned} entries after the last checkpoint (checked by sequence)")
        if self.first_bad_entry is not None:
            f = self.first_bad_entry
            lines.append(f"TAMPERED: first bad entry #{f.entry} ({f.kind.value}): {f.detail}")
        for f in self.checkpoint_findings:
            lines.append(f"TAMPERED: checkpoint #{f.checkpoint} ({f.kind.value}): {f.detail}")
        if self.ok:
            lines.append("OK: every entry and every checkpoint verifies")
        return "\n".join(lines)


def _split(blob: bytes) -> list[bytes]:
    return [blob[i : i + HASH_SIZE] for i in range(0, len(blob), HASH_SIZE)]


def verify_log(
    entries: Sequence[bytes],
    seqs: Sequence[int | None],
    checkpoints: Sequence[Checkpoint | None],
    public: Ed25519PublicKey,
    log_id: str,
) -> VerifyReport:
    """Check ``entries`` (each entry's exact bytes, in log order; ``seqs`` their sequence
    numbers, None where unreadable) against ``checkpoints`` (in topic order; None where
    unreadable), signed by ``public``'s key for the log ``log_id``."""
    leaves = [leaf_hash(v) for v in entries]
    findings: list[Finding] = []
    known: list[bytes] = []  # the signed history's leaf hashes
    valid: list[tuple[int, Checkpoint]] = []
    for k, cp in enumerate(checkpoints):
        if cp is None:
            findings.append(Finding(Kind.CHECKPOINT_INVALID, "cannot be read", checkpoint=k))
            continue
        if cp.log_id != log_id:
            findings.append(
                Finding(Kind.CHECKPOINT_INVALID, f"is of log {cp.log_id!r}", checkpoint=k)
            )
            continue
        if not verify_checkpoint(public, cp):
            findings.append(
                Finding(
                    Kind.CHECKPOINT_INVALID,
                    f"size {cp.tree_size}: its signature does not verify with key "
                    f"{cp.key_id[:16]}…",
                    checkpoint=k,
                )
            )
            continue
        valid.append((k, cp))
        _extend(known, k, cp, findings)

    # Each valid checkpoint's root, recomputed from the log.
    tree = CompactTree()
    for k, cp in sorted(valid, key=lambda kc: kc[1].tree_size):
        if cp.tree_size > len(leaves):
            findings.append(
                Finding(
                    Kind.CHECKPOINT_TRUNCATED,
                    f"signs {cp.tree_size} entries but the log holds {len(leaves)}: "
                    "entries were removed from its end",
                    checkpoint=k,
                )
            )
            continue
        while len(tree) < cp.tree_size:
            tree.append(leaves[len(tree)])
        root = tree.root()
        if root != cp.root_hash:
            findings.append(
                Finding(
                    Kind.CHECKPOINT_MISMATCH,
                    f"size {cp.tree_size}: signed root {cp.root_hash.hex()} but the log's "
                    f"first {cp.tree_size} entries have root {root.hex()}",
                    checkpoint=k,
                )
            )
    full = CompactTree(leaves)
    first = _first_bad_entry(leaves, seqs, known)
    return VerifyReport(
        log_id=log_id,
        entries=len(leaves),
        checkpoints=len(checkpoints),
        valid_checkpoints=len(valid),
        signed_size=len(known),
        root=full.root(),
        first_bad_entry=first,
        checkpoint_findings=sorted(findings, key=lambda f: f.checkpoint or 0),
    )


def _extend(known: list[bytes], k: int, cp: Checkpoint, findings: list[Finding]) -> None:
    """Add ``cp``'s leaves to the signed history, or say why they cannot be."""
    delta = _split(cp.leaf_hashes)
    if (
        len(cp.leaf_hashes) % HASH_SIZE
        or cp.from_size < 0
        or len(delta) != cp.tree_size - cp.from_size
    ):
        findings.append(
            Finding(Kind.CHECKPOINT_INVALID, "its leaf hashes do not fit its sizes", checkpoint=k)
        )
        return
    if cp.from_size > len(known):
        findings.append(
            Finding(
                Kind.CHECKPOINT_INVALID,
                f"continues from size {cp.from_size} but the checkpoints before it sign "
                f"{len(known)} entries: a checkpoint is missing",
                checkpoint=k,
            )
        )
        return
    candidate = known[: cp.from_size] + delta
    if CompactTree(candidate).root() != cp.root_hash:
        findings.append(
            Finding(
                Kind.CHECKPOINT_FORK,
                f"size {cp.tree_size}: its signed root is not that of the checkpoints before "
                "it and its own leaves: it forks from the signed history",
                checkpoint=k,
            )
        )
        return
    overlap = min(len(known), len(candidate))
    for i in range(cp.from_size, overlap):
        if known[i] != candidate[i]:
            findings.append(
                Finding(
                    Kind.CHECKPOINT_FORK,
                    f"size {cp.tree_size}: disagrees with the checkpoints before it from entry "
                    f"{i} on: two signed histories (a fork)",
                    checkpoint=k,
                )
            )
            return
    if len(candidate) > len(known):
        known.extend(candidate[len(known) :])


def _first_bad_entry(
    leaves: Sequence[bytes], seqs: Sequence[int | None], known: Sequence[bytes]
) -> Finding | None:
    found: list[Finding] = []
    where = {h: i for i, h in reversed(list(enumerate(known)))}
    for i in range(min(len(leaves), len(known))):
        if leaves[i] != known[i]:
            found.append(_classify(i, leaves, known, where))
            break
    else:
        if len(leaves) < len(known):
            found.append(
                Finding(
                    Kind.TRUNCATED,
                    f"the signed history has {len(known)} entries, the log {len(leaves)}: "
                    f"entries from #{len(leaves)} on were removed",
                    entry=len(leaves),
                )
            )
    for i, s in enumerate(seqs):
        if s is None:
            found.append(Finding(Kind.UNREADABLE, "not an access-log entry", entry=i))
            break
        if s != i:
            found.append(
                Finding(
                    Kind.SEQUENCE,
                    f"carries sequence number {s} at position {i}: an entry was "
                    + ("removed or moved" if s > i else "inserted or moved"),
                    entry=i,
                )
            )
            break
    if not found:
        return None
    # The leaf comparison is exact within the signed history: prefer it at equal index.
    return min(found, key=lambda f: (f.entry or 0, f.kind is Kind.SEQUENCE))


def _classify(
    i: int, leaves: Sequence[bytes], known: Sequence[bytes], where: dict[bytes, int]
) -> Finding:
    if i + 1 < len(known) and leaves[i] == known[i + 1]:
        return Finding(
            Kind.REMOVED,
            f"signed entry #{i} is missing: the log's entry #{i} is signed entry #{i + 1}",
            entry=i,
        )
    if i + 1 < len(leaves) and leaves[i + 1] == known[i]:
        return Finding(
            Kind.INSERTED,
            f"an entry that was never signed was inserted before signed entry #{i}",
            entry=i,
        )
    j = where.get(leaves[i])
    if j is not None:
        return Finding(
            Kind.REORDERED, f"the log's entry #{i} is signed entry #{j}: entries moved", entry=i
        )
    return Finding(
        Kind.CHANGED, f"its bytes are not those signed (leaf {known[i].hex()[:16]}…)", entry=i
    )
