"""The signing key, signed checkpoints, offline proofs and the pure log check."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from streams.audit.merkle import CompactTree, leaf_hash
from streams.audit.proof import check_proof, make_proof
from streams.audit.signing import (
    Checkpoint,
    SigningKeyError,
    key_id,
    load_or_create_key,
    load_public_key,
    public_key_pem,
    sign_checkpoint,
    verify_checkpoint,
)
from streams.audit.verify import Kind, verify_log


def test_a_key_is_made_once_owner_only_and_reloaded(tmp_path: Path):
    path = tmp_path / "audit" / "key.pem"
    key = load_or_create_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    again = load_or_create_key(path)
    assert key_id(again.public_key()) == key_id(key.public_key())
    assert len(key_id(key.public_key())) == 64
    pem = public_key_pem(key.public_key())
    assert pem.startswith("-----BEGIN PUBLIC KEY-----")
    assert key_id(load_public_key(pem.encode())) == key_id(key.public_key())
    assert key_id(load_public_key(path)) == key_id(key.public_key())


def test_a_key_others_can_read_is_refused(tmp_path: Path):
    path = tmp_path / "key.pem"
    load_or_create_key(path)
    path.chmod(0o644)
    with pytest.raises(SigningKeyError, match="readable by others"):
        load_or_create_key(path)


def _key(tmp_path: Path, name: str = "k.pem"):
    return load_or_create_key(tmp_path / name)


def test_checkpoint_signatures_cover_every_signed_field(tmp_path: Path):
    key = _key(tmp_path)
    pub = key.public_key()
    cp = sign_checkpoint(key, "xy.access", 5, bytes(range(32)), 1_700_000_000_000)
    assert verify_checkpoint(pub, cp)
    assert verify_checkpoint(pub, Checkpoint.from_json(json.loads(json.dumps(cp.to_json()))))
    assert Checkpoint.from_record(cp.to_record()) == cp
    for changed in (
        {"tree_size": 6},
        {"root_hash": bytes(32)},
        {"time_ms": 1},
        {"log_id": "other"},
        {"signature": bytes(64)},
    ):
        forged = Checkpoint(**{**cp.to_record(), **changed})
        assert not verify_checkpoint(pub, forged), changed
    other = _key(tmp_path, "other.pem")
    assert not verify_checkpoint(other.public_key(), cp)


ENTRIES = [f"entry-{i}".encode() for i in range(10)]
HASHES = [leaf_hash(e) for e in ENTRIES]


def _checkpoints(key, sizes, log_id="L"):
    out, prev = [], 0
    for s in sizes:
        root = CompactTree(HASHES[:s]).root()
        out.append(
            sign_checkpoint(
                key, log_id, s, root, 1000 + s, from_size=prev, leaf_hashes=b"".join(HASHES[prev:s])
            )
        )
        prev = s
    return out


def test_a_proof_is_checked_with_the_public_key_alone(tmp_path: Path):
    key = _key(tmp_path)
    cp = _checkpoints(key, [7])[0]
    pem = public_key_pem(key.public_key()).encode()
    for i in range(7):
        doc = json.loads(json.dumps(make_proof(ENTRIES[i], i, HASHES, cp)))
        ok, why = check_proof(doc, pem)
        assert ok, why
    doc = make_proof(ENTRIES[3], 3, HASHES, cp)
    tampered = {**doc, "audit_path": [bytes(32).hex(), *doc["audit_path"][1:]]}
    assert check_proof(tampered, pem) == (
        False,
        "the audit path does not lead from the entry to the signed root",
    )
    assert not check_proof({**doc, "entry_index": 4}, pem)[0]
    assert not check_proof({**doc, "entry": "ZmFrZQ=="}, pem)[0]
    other = public_key_pem(_key(tmp_path, "o.pem").public_key()).encode()
    assert "signature" in check_proof(doc, other)[1]
    assert not check_proof({"format": "x"}, pem)[0]


def _verify(entries, checkpoints, key, seqs=None):
    seqs = list(range(len(entries))) if seqs is None else seqs
    return verify_log(entries, seqs, checkpoints, key.public_key(), "L")


def test_an_untouched_log_verifies(tmp_path: Path):
    key = _key(tmp_path)
    report = _verify(ENTRIES, _checkpoints(key, [3, 7, 10]), key)
    assert report.ok, report.render()
    assert (report.signed_size, report.unsigned, report.valid_checkpoints) == (10, 0, 3)


@pytest.mark.parametrize(
    ("make", "index", "kind"),
    [
        (lambda e: [*e[:4], b"changed", *e[5:]], 4, Kind.CHANGED),
        (lambda e: [*e[:4], *e[5:]], 4, Kind.REMOVED),
        (lambda e: [*e[:4], b"new", *e[4:]], 4, Kind.INSERTED),
        (lambda e: [*e[:2], e[6], *e[3:6], e[2], *e[7:]], 2, Kind.REORDERED),
        (lambda e: e[:6], 6, Kind.TRUNCATED),
    ],
)
def test_tampering_names_the_first_bad_entry(tmp_path: Path, make, index, kind):
    key = _key(tmp_path)
    report = _verify(make(ENTRIES), _checkpoints(key, [3, 7, 10]), key)
    assert not report.ok
    assert report.first_bad_entry is not None
    assert (report.first_bad_entry.entry, report.first_bad_entry.kind) == (index, kind)
    assert report.checkpoint_findings  # the checkpoints after it no longer match
    first_cp = report.checkpoint_findings[0]
    assert first_cp.checkpoint == (0 if index < 3 else 1)


def test_entries_after_the_last_checkpoint_are_checked_by_sequence(tmp_path: Path):
    key = _key(tmp_path)
    seqs = [0, 1, 2, 3, 4, 6, 7]
    report = _verify(ENTRIES[:7], _checkpoints(key, [3]), key, seqs=seqs)
    assert report.first_bad_entry is not None
    assert (report.first_bad_entry.entry, report.first_bad_entry.kind) == (5, Kind.SEQUENCE)
    assert report.unsigned == 4


def test_forged_and_forked_checkpoints_are_named(tmp_path: Path):
    key = _key(tmp_path)
    good = _checkpoints(key, [3, 7])
    # a second, validly signed history that differs at entry 5
    forked = [*HASHES]
    forked[5] = leaf_hash(b"forged")
    fork = sign_checkpoint(
        key,
        "L",
        8,
        CompactTree(forked[:8]).root(),
        9,
        from_size=3,
        leaf_hashes=b"".join(forked[3:8]),
    )
    unsigned = Checkpoint(**{**good[1].to_record(), "signature": bytes(64)})
    report = _verify(ENTRIES, [*good, fork, unsigned, None], key)
    found = {(f.checkpoint, f.kind) for f in report.checkpoint_findings}
    assert (2, Kind.CHECKPOINT_FORK) in found
    assert (2, Kind.CHECKPOINT_MISMATCH) in found
    assert {(3, Kind.CHECKPOINT_INVALID), (4, Kind.CHECKPOINT_INVALID)} <= found
    assert report.first_bad_entry is None  # the log itself agrees with the signed history
    mismatch = [f for f in report.checkpoint_findings if f.kind is Kind.CHECKPOINT_MISMATCH]
    assert [f.checkpoint for f in mismatch] == [2]
