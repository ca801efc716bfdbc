"""Inclusion proofs of access-log entries, and their offline check with the public key alone.

A proof document (JSON) holds the entry's bytes, its index, the audit path and the signed
checkpoint it is proved against. :func:`check_proof` needs nothing but the document and the
platform's public key (PEM): no Kafka, no Redis, no Xiangyun settings.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from streams.audit.merkle import inclusion_proof, leaf_hash, verify_inclusion
from streams.audit.signing import Checkpoint, load_public_key, verify_checkpoint

__all__ = ["PROOF_FORMAT", "check_proof", "make_proof"]

PROOF_FORMAT = "xiangyun-inclusion-proof/v1"


def make_proof(
    entry: bytes, index: int, hashes: Sequence[bytes], checkpoint: Checkpoint
) -> dict[str, Any]:
    """The proof that ``entry`` is leaf ``index`` of the tree ``checkpoint`` signs, whose
    first ``checkpoint.tree_size`` leaf hashes are ``hashes``."""
    size = checkpoint.tree_size
    if not 0 <= index < size:
        raise ValueError(f"entry {index} is not covered by the checkpoint of size {size}")
    if leaf_hash(entry) != hashes[index]:
        raise ValueError(f"entry {index} is not the leaf the tree holds")
    return {
        "format": PROOF_FORMAT,
        "log_id": checkpoint.log_id,
        "entry_index": index,
        "entry": base64.b64encode(entry).decode(),
        "leaf_hash": hashes[index].hex(),
        "tree_size": size,
        "audit_path": [h.hex() for h in inclusion_proof(hashes[:size], index)],
        "checkpoint": checkpoint.to_json(),
        "hashing": "RFC 6962: leaf SHA-256(0x00||entry), node SHA-256(0x01||left||right)",
    }


def check_proof(doc: Mapping[str, Any], public_key: Ed25519PublicKey | bytes) -> tuple[bool, str]:
    """Whether ``doc`` proves its entry is in the log the platform signed; with the reason.
    ``public_key``: the key, or its PEM bytes."""
    try:
        key = (
            public_key if isinstance(public_key, Ed25519PublicKey) else load_public_key(public_key)
        )
        if doc.get("format") != PROOF_FORMAT:
            return False, f"not a {PROOF_FORMAT} document"
        cp = Checkpoint.from_json(doc["checkpoint"])
        entry = base64.b64decode(str(doc["entry"]), validate=True)
        index = int(doc["entry_index"])
        size = int(doc["tree_size"])
        path = [bytes.fromhex(str(h)) for h in doc["audit_path"]]
    except (KeyError, TypeError, ValueError) as exc:
        return False, f"malformed proof: {exc}"
    if not verify_checkpoint(key, cp):
        return False, "the checkpoint's signature does not verify with this public key"
    if size != cp.tree_size or doc.get("log_id") != cp.log_id:
        return False, "the proof is not for the tree the checkpoint signs"
    if not verify_inclusion(entry, index, size, path, cp.root_hash):
        return False, "the audit path does not lead from the entry to the signed root"
    return True, f"entry #{index} is in log {cp.log_id} of {size} entries signed by {cp.key_id}"
