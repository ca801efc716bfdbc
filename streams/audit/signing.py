"""The platform's Ed25519 signing key and its signed checkpoints (tree heads).

The private key is a PKCS#8 PEM file readable by its owner only (0600, in a 0700 folder):
:func:`load_or_create_key` makes one on first use and refuses a key file others can read.
Anyone checks a checkpoint with the public key alone (:func:`public_key_pem`,
:func:`verify_checkpoint`); the key id is the SHA-256 of the raw 32-byte public key, hex.

The signed message is a small text, so any Ed25519 implementation can check it::

    xiangyun-checkpoint/v1
    <log id>
    <tree size>
    <root hash, hex>
    <time, ms since the epoch>
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

__all__ = [
    "Checkpoint",
    "SigningKeyError",
    "checkpoint_message",
    "key_id",
    "load_or_create_key",
    "load_public_key",
    "public_key_pem",
    "sign_checkpoint",
    "verify_checkpoint",
]

_HEADER = b"xiangyun-checkpoint/v1\n"


class SigningKeyError(RuntimeError):
    """The signing key is missing, unreadable or readable by others."""


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The private key in ``path``; a new one is written there (0600) if there is none."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it a moment ago: use that one
            return load_private_key(path)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        return key
    return load_private_key(path)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise SigningKeyError(f"signing key {path}: cannot read it: {exc.strerror or exc}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SigningKeyError(
            f"signing key {path} is readable by others (mode {stat.filemode(mode)}); "
            f"`chmod 600 {path}`"
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"signing key {path}: not an unencrypted PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"signing key {path}: not an Ed25519 key")
    return key


def load_public_key(source: Path | bytes) -> Ed25519PublicKey:
    """A public key from a PEM public key, or the public half of a PEM private key (file or
    bytes); never creates a key."""
    if isinstance(source, Path):
        try:
            data = source.read_bytes()
        except OSError as exc:
            raise SigningKeyError(f"key {source}: cannot read it: {exc.strerror or exc}") from exc
    else:
        data = source
    if b"PRIVATE KEY" in data:
        if isinstance(source, Path):
            return load_private_key(source).public_key()
        private = serialization.load_pem_private_key(data, password=None)
        if not isinstance(private, Ed25519PrivateKey):
            raise SigningKeyError("not an Ed25519 key")
        return private.public_key()
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise SigningKeyError("not a PEM public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError("not an Ed25519 public key")
    return key


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public: Ed25519PublicKey) -> str:
    """SHA-256 of the raw public key, hex."""
    return hashlib.sha256(_raw(public)).hexdigest()


def public_key_pem(public: Ed25519PublicKey) -> str:
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def checkpoint_message(log_id: str, tree_size: int, root_hash: bytes, time_ms: int) -> bytes:
    """The bytes a checkpoint's signature covers."""
    if "\n" in log_id:
        raise ValueError("a log id is one line")
    return _HEADER + f"{log_id}\n{tree_size}\n{root_hash.hex()}\n{time_ms}\n".encode()


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed tree head; ``from_size`` and ``leaf_hashes`` (the leaves added since the
    checkpoint before) travel with it, bound by ``root_hash``, not by the signature."""

    log_id: str
    tree_size: int
    root_hash: bytes
    time_ms: int
    key_id: str
    signature: bytes
    from_size: int = 0
    leaf_hashes: bytes = b""

    def message(self) -> bytes:
        return checkpoint_message(self.log_id, self.tree_size, self.root_hash, self.time_ms)

    def to_record(self) -> dict[str, Any]:
        return {
            "log_id": self.log_id,
            "tree_size": self.tree_size,
            "root_hash": self.root_hash,
            "time_ms": self.time_ms,
            "key_id": self.key_id,
            "signature": self.signature,
            "from_size": self.from_size,
            "leaf_hashes": self.leaf_hashes,
        }

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> Checkpoint:
        return cls(
            rec["log_id"],
            rec["tree_size"],
            bytes(rec["root_hash"]),
            rec["time_ms"],
            rec["key_id"],
            bytes(rec["signature"]),
            rec.get("from_size", 0),
            bytes(rec.get("leaf_hashes", b"")),
        )

    def to_json(self) -> dict[str, Any]:
        """The signed part, for people and for offline checks (no leaf hashes)."""
        return {
            "log_id": self.log_id,
            "tree_size": self.tree_size,
            "root_hash": self.root_hash.hex(),
            "time_ms": self.time_ms,
            "key_id": self.key_id,
            "signature": base64.b64encode(self.signature).decode(),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Checkpoint:
        return cls(
            str(doc["log_id"]),
            int(doc["tree_size"]),
            bytes.fromhex(str(doc["root_hash"])),
            int(doc["time_ms"]),
            str(doc["key_id"]),
            base64.b64decode(str(doc["signature"])),
        )


def sign_checkpoint(
    key: Ed25519PrivateKey,
    log_id: str,
    tree_size: int,
    root_hash: bytes,
    time_ms: int,
    *,
    from_size: int = 0,
    leaf_hashes: bytes = b"",
) -> Checkpoint:
    signature = key.sign(checkpoint_message(log_id, tree_size, root_hash, time_ms))
    return Checkpoint(
        log_id,
        tree_size,
        root_hash,
        time_ms,
        key_id(key.public_key()),
        signature,
        from_size,
        leaf_hashes,
    )


def verify_checkpoint(public: Ed25519PublicKey, checkpoint: Checkpoint) -> bool:
    """Whether ``checkpoint`` was signed by ``public``'s key as it stands."""
    if checkpoint.key_id != key_id(public):
        return False
    try:
        public.verify(checkpoint.signature, checkpoint.message())
    except InvalidSignature:
        return False
    return True
