"""The access log (可追溯): every exchange decision, tamper-evident.

* :mod:`streams.audit.entry`: an entry (:class:`AccessEntry`) and its Avro encoding;
* :mod:`streams.audit.merkle`: RFC 6962 Merkle hashing, inclusion and consistency proofs;
* :mod:`streams.audit.signing`: the Ed25519 key and signed checkpoints (tree heads);
* :mod:`streams.audit.proof`: inclusion proof documents, checked offline with the public key;
* :mod:`streams.audit.verify`: the check of a log against its checkpoints (pure);
* :mod:`streams.audit.log`: the Kafka topics, the entry writer's numbering, the
  :class:`~streams.audit.log.Checkpointer`;
* :mod:`streams.audit.tracker`: the data tracker's index in Redis;
* :mod:`streams.audit.agent`: :func:`~streams.audit.agent.register_audit` for a Faust worker.

This package imports only the pure modules, so a proof can be checked without Kafka or Faust.
"""

from __future__ import annotations

from streams.audit.entry import AccessEntry, Decision, FieldMask
from streams.audit.merkle import verify_inclusion
from streams.audit.proof import check_proof
from streams.audit.signing import Checkpoint, verify_checkpoint

__all__ = [
    "AccessEntry",
    "Checkpoint",
    "Decision",
    "FieldMask",
    "check_proof",
    "verify_checkpoint",
    "verify_inclusion",
]
