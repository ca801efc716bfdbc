"""RFC 6962 Merkle hashing against the Certificate Transparency test vectors and against a
naive transcription of the RFC's definitions (MTH, PATH, PROOF) written here on purpose."""

from __future__ import annotations

import hashlib

import pytest

from streams.audit.merkle import (
    EMPTY_ROOT,
    CompactTree,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)

LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
]

#: tree heads of the first n leaves, as published with Certificate Transparency's tests
ROOTS = {
    1: "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    2: "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    3: "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    4: "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    5: "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    6: "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    7: "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    8: "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
}

#: audit paths of the CT test suite: (leaf index, tree size) -> path
PATHS = {
    (0, 1): [],
    (0, 8): [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (5, 8): [
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
    (2, 3): ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    (1, 5): [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ],
}

#: consistency proofs of the CT test suite: (old size, new size) -> proof
CONSISTENCY = {
    (1, 1): [],
    (1, 8): [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (6, 8): [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
    (2, 5): [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ],
}


# -- the RFC's definitions, written out as plainly as possible -------------------------------


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(d: list[bytes]) -> bytes:
    if not d:
        return _h(b"")
    if len(d) == 1:
        return _h(b"\x00" + d[0])
    k = _k(len(d))
    return _h(b"\x01" + mth(d[:k]) + mth(d[k:]))


def path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return [*path(m, d[:k]), mth(d[k:])]
    return [*path(m - k, d[k:]), mth(d[:k])]


def proof(m: int, d: list[bytes]) -> list[bytes]:
    def sub(m: int, d: list[bytes], b: bool) -> list[bytes]:
        n = len(d)
        if m == n:
            return [] if b else [mth(d)]
        k = _k(n)
        if m <= k:
            return [*sub(m, d[:k], b), mth(d[k:])]
        return [*sub(m - k, d[k:], False), mth(d[:k])]

    return sub(m, d, True)


HASHES = [leaf_hash(x) for x in LEAVES]
SIZES = range(1, len(LEAVES) + 1)


def test_the_empty_tree_and_the_hash_prefixes():
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert root_of([]) == EMPTY_ROOT
    assert leaf_hash(b"") == _h(b"\x00")


@pytest.mark.parametrize("n", SIZES)
def test_roots_of_every_size_match_the_vectors_and_the_rfc(n):
    assert mth(LEAVES[:n]).hex() == ROOTS[n]  # the transcription itself is right
    assert root_of(HASHES[:n]).hex() == ROOTS[n]
    assert CompactTree(HASHES[:n]).root().hex() == ROOTS[n]


def test_a_compact_tree_gives_every_intermediate_root():
    tree = CompactTree()
    for n, h in enumerate(HASHES, 1):
        tree.append(h)
        assert (len(tree), tree.root().hex()) == (n, ROOTS[n])


@pytest.mark.parametrize(("index", "size"), sorted(PATHS))
def test_audit_paths_match_the_published_vectors(index, size):
    assert [p.hex() for p in inclusion_proof(HASHES[:size], index)] == PATHS[(index, size)]


@pytest.mark.parametrize("size", SIZES)
def test_inclusion_proofs_of_every_leaf_of_every_size(size):
    root = bytes.fromhex(ROOTS[size])
    for index in range(size):
        p = inclusion_proof(HASHES[:size], index)
        assert p == path(index, LEAVES[:size])
        assert verify_inclusion(LEAVES[index], index, size, p, root)
        # wrong leaf, index, size, root, or a changed, missing or extra proof hash: refused
        assert not verify_inclusion(LEAVES[index] + b"x", index, size, p, root)
        assert not verify_inclusion(LEAVES[index], index, size, p, bytes(32))
        if size > 1:
            assert not verify_inclusion(LEAVES[index], (index + 1) % size, size, p, root)
            assert not verify_inclusion(LEAVES[index], index, size, p[:-1], root)
            bad = [*p]
            bad[0] = bytes([bad[0][0] ^ 1]) + bad[0][1:]
            assert not verify_inclusion(LEAVES[index], index, size, bad, root)
        assert not verify_inclusion(LEAVES[index], index, size, [*p, bytes(32)], root)
        assert not verify_inclusion(LEAVES[index], size, size, p, root)


def test_the_rfc_transcription_gives_the_published_paths():
    for (index, size), want in PATHS.items():
        assert [p.hex() for p in path(index, LEAVES[:size])] == want


@pytest.mark.parametrize(("old", "new"), sorted(CONSISTENCY))
def test_consistency_proofs_match_the_published_vectors(old, new):
    got = consistency_proof(HASHES[:new], old)
    assert [p.hex() for p in got] == CONSISTENCY[(old, new)]
    assert [p.hex() for p in got] == [p.hex() for p in proof(old, LEAVES[:new])] or old == new


@pytest.mark.parametrize("new", SIZES)
def test_consistency_proofs_between_every_pair_of_sizes(new):
    new_root = bytes.fromhex(ROOTS[new])
    for old in range(0, new + 1):
        old_root = bytes.fromhex(ROOTS[old]) if old else EMPTY_ROOT
        p = consistency_proof(HASHES[:new], old)
        if 0 < old < new:
            assert p == proof(old, LEAVES[:new])
        assert verify_consistency(old, new, old_root, new_root, p)
        if old:  # every tree extends the empty one
            assert not verify_consistency(old, new, old_root, bytes(32), p)
        if 0 < old < new:
            assert not verify_consistency(old, new, bytes(32), new_root, p)
            bad = [*p]
            bad[-1] = bytes(32)
            assert not verify_consistency(old, new, old_root, new_root, bad)
        # a tree that differs in one leaf is not an extension
        forked = [*HASHES[:new]]
        forked[0] = leaf_hash(b"forged")
        if 0 < old < new:
            assert not verify_consistency(old, new, old_root, root_of(forked), p)


def test_proofs_outside_the_tree_are_refused():
    with pytest.raises(ValueError):
        inclusion_proof(HASHES[:3], 3)
    with pytest.raises(ValueError):
        consistency_proof(HASHES[:3], 4)
    with pytest.raises(ValueError):
        CompactTree().append(b"short")
    assert not verify_consistency(5, 4, EMPTY_ROOT, EMPTY_ROOT, [])


def test_larger_trees_agree_with_the_rfc_transcription():
    data = [bytes([i % 256, i // 256]) for i in range(70)]
    hashes = [leaf_hash(x) for x in data]
    for n in (9, 15, 16, 17, 31, 33, 64, 70):
        root = mth(data[:n])
        assert root_of(hashes[:n]) == root
        for i in (0, n // 2, n - 1):
            assert verify_inclusion(data[i], i, n, inclusion_proof(hashes[:n], i), root)
        for m in (1, 3, n // 2, n - 1):
            assert verify_consistency(m, n, mth(data[:m]), root, consistency_proof(hashes[:n], m))
