"""Merkle tree hashing of RFC 6962 (Certificate Transparency), section 2.1. Pure: no I/O.

* leaf hash ``SHA-256(0x00 || leaf)``, interior node ``SHA-256(0x01 || left || right)``;
* the tree head of ``n`` leaves splits at ``k``, the largest power of two below ``n``;
  the head of the empty tree is ``SHA-256("")``;
* an inclusion proof (audit path, 2.1.1) proves that a leaf is at an index of a tree of a
  given size; a consistency proof (2.1.2) that a tree of one size is a prefix of a larger one.

Proofs are built from the list of leaf hashes; they are checked (RFC 9162, 2.1.3.2 and
2.1.4.2) with the leaf, the sizes and the roots alone. :class:`CompactTree` keeps the root of
a growing tree in O(log n) memory and time per leaf, for followers and verifiers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "CompactTree",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_of",
    "verify_consistency",
    "verify_inclusion",
    "verify_inclusion_hash",
]

HASH_SIZE = 32
#: the tree head of the empty tree, ``SHA-256("")``
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(leaf: bytes) -> bytes:
    """``SHA-256(0x00 || leaf)``."""
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(hashes: Sequence[bytes]) -> bytes:
    """The tree head (MTH) of the tree whose leaf hashes are ``hashes``."""
    tree = CompactTree()
    for h in hashes:
        tree.append(h)
    return tree.root()


def inclusion_proof(hashes: Sequence[bytes], index: int) -> list[bytes]:
    """The audit path of leaf ``index`` in the tree of ``hashes`` (RFC 6962 PATH)."""
    if not 0 <= index < len(hashes):
        raise ValueError(f"leaf {index} is not in a tree of {len(hashes)} leaves")
    return _path(index, hashes)


def _path(m: int, d: Sequence[bytes]) -> list[bytes]:
    n = len(d)
    if n <= 1:
        return []
    k = _split(n)
    if m < k:
        return [*_path(m, d[:k]), root_of(d[k:])]
    return [*_path(m - k, d[k:]), root_of(d[:k])]


def consistency_proof(hashes: Sequence[bytes], old_size: int) -> list[bytes]:
    """The proof that the tree of ``hashes[:old_size]`` is a prefix of the tree of
    ``hashes`` (RFC 6962 PROOF); empty for ``old_size`` 0 or ``len(hashes)``."""
    if not 0 <= old_size <= len(hashes):
        raise ValueError(f"size {old_size} is not within a tree of {len(hashes)} leaves")
    if old_size in (0, len(hashes)):
        return []
    return _subproof(old_size, hashes, True)


def _subproof(m: int, d: Sequence[bytes], whole: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if whole else [root_of(d)]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, d[:k], whole), root_of(d[k:])]
    return [*_subproof(m - k, d[k:], False), root_of(d[:k])]


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """Whether ``leaf`` (the entry's bytes) is leaf ``index`` of the tree of ``size``
    leaves whose head is ``root``, by its audit path ``proof``."""
    return verify_inclusion_hash(leaf_hash(leaf), index, size, proof, root)


def verify_inclusion_hash(
    leaf_digest: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """:func:`verify_inclusion` given the leaf's hash (RFC 9162, 2.1.3.2)."""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf_digest
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Whether the tree of ``old_size`` leaves with head ``old_root`` is a prefix of the tree
    of ``new_size`` leaves with head ``new_root`` (RFC 9162, 2.1.4.2)."""
    if not 0 <= old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof and old_root == EMPTY_ROOT
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is a node of the new tree
        path.insert(0, old_root)
    if not path:
        return False
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0


class CompactTree:
    """A growing tree kept as its perfect subtrees, largest first (the binary digits of its
    size): O(log n) hashes, O(1) amortised per :meth:`append`, O(log n) per :meth:`root`."""

    __slots__ = ("_size", "_stack")

    def __init__(self, hashes: Iterable[bytes] = ()) -> None:
        self._stack: list[tuple[int, bytes]] = []  # (leaves, hash) of each perfect subtree
        self._size = 0
        for h in hashes:
            self.append(h)

    def __len__(self) -> int:
        return self._size

    def append(self, digest: bytes) -> None:
        """Add a leaf by its hash (:func:`leaf_hash`)."""
        if len(digest) != HASH_SIZE:
            raise ValueError(f"a leaf hash has {HASH_SIZE} bytes, not {len(digest)}")
        size, h = 1, digest
        while self._stack and self._stack[-1][0] == size:
            left = self._stack.pop()[1]
            h = node_hash(left, h)
            size *= 2
        self._stack.append((size, h))
        self._size += 1

    def root(self) -> bytes:
        """The tree head: the perfect subtrees folded from the right (RFC 6962 MTH)."""
        if not self._stack:
            return EMPTY_ROOT
        acc = self._stack[-1][1]
        for _, h in reversed(self._stack[:-1]):
            acc = node_hash(h, acc)
        return acc
