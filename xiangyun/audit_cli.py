"""``xiangyun audit``: the access log (可追溯): verify it, prove an entry, show a subject's
trail, the latest checkpoint and the public key anyone checks them with."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any

from streams.audit.proof import check_proof
from streams.audit.signing import (
    SigningKeyError,
    key_id,
    load_public_key,
    public_key_pem,
)
from xiangyun.settings import Settings

__all__ = ["add_audit_parser", "run_audit"]

CLI_TIMEOUT = 30.0


def add_audit_parser(subparsers: Any) -> None:
    """Add ``audit`` and its verbs to the ``xiangyun`` command's subparsers."""
    a = subparsers.add_parser(
        "audit",
        help="the access log: verify, prove, trail, checkpoint, public-key",
        description="Every exchange decision is an entry of the access log, a Merkle tree "
        "(RFC 6962) whose head the platform signs (Ed25519) every few seconds.",
    )
    verbs = a.add_subparsers(dest="verb", required=True, metavar="VERB")

    def common(p: argparse.ArgumentParser, *, topics: bool = False) -> None:
        p.add_argument("--json", action="store_true", help="print JSON")
        if topics:
            p.add_argument("--entries-topic", metavar="TOPIC", help="(default <prefix>.access)")
            p.add_argument(
                "--checkpoints-topic",
                metavar="TOPIC",
                help="(default <prefix>.access.checkpoints)",
            )
            p.add_argument(
                "--log-id", metavar="ID", help="the log the checkpoints sign (default the topic)"
            )
            p.add_argument(
                "--public-key",
                type=Path,
                metavar="PEM",
                help="the platform's public key (default: from XIANGYUN_AUDIT_KEY_FILE)",
            )

    v = verbs.add_parser(
        "verify",
        help="recompute the whole log; exit 1 naming the first bad entry or checkpoint",
        description="Read every entry and checkpoint, recompute the Merkle tree and check "
        "every signature. Exit 0 if all verify; 1 naming the first entry that was changed, "
        "removed, reordered or inserted, and every checkpoint the log no longer matches "
        "(truncation, forks); 2 if the log cannot be read.",
    )
    common(v, topics=True)
    p = verbs.add_parser(
        "prove",
        help="an inclusion proof of ENTRY against the latest checkpoint",
        description="Print the proof that entry ENTRY (its index) is in the log the latest "
        "checkpoint signs; `xiangyun audit check-proof FILE --public-key PEM` or "
        "streams.audit.proof.check_proof checks it offline with the public key alone.",
    )
    p.add_argument("entry", type=int, metavar="ENTRY", help="entry index (its seq)")
    common(p, topics=True)
    c = verbs.add_parser(
        "check-proof",
        help="check a proof document offline with the public key alone",
    )
    c.add_argument("file", type=Path, metavar="FILE", help="proof JSON (`-` for stdin)")
    c.add_argument("--public-key", type=Path, metavar="PEM", required=True)
    c.add_argument("--json", action="store_true", help="print JSON")
    t = verbs.add_parser(
        "trail",
        help="who accessed SUBJECT's data, when, for which duty and case, on which basis",
        description="The data tracker's index (brought up to date with the log's tail "
        "first). Entries of an investigation are shown only from their disclosure date.",
    )
    t.add_argument("subject", metavar="SUBJECT", help="the subject's id")
    t.add_argument("--at", metavar="ISO", help="as disclosed at this time (default: now)")
    common(t)
    k = verbs.add_parser("checkpoint", help="the latest valid signed checkpoint")
    common(k, topics=True)
    pk = verbs.add_parser("public-key", help="the platform's public key (PEM) and key id")
    pk.add_argument("--json", action="store_true", help="print JSON")
    a.set_defaults(handler=run_audit)


def run_audit(args: argparse.Namespace, settings: Settings) -> int:
    from streams.audit.log import AuditError

    try:
        return _VERBS[args.verb](args, settings)
    except (AuditError, SigningKeyError, OSError, ValueError) as exc:
        print(f"xiangyun audit {args.verb}: {exc}", file=sys.stderr)
        return 2


def _public(args: argparse.Namespace, settings: Settings) -> Any:
    path = getattr(args, "public_key", None) or settings.audit_key_path
    if not path.exists():
        raise SigningKeyError(
            f"no key at {path}: a worker makes it on first start, or pass --public-key PEM"
        )
    return load_public_key(path)


def _log(args: argparse.Namespace, settings: Settings) -> Any:
    from streams.audit.log import AccessLog

    return AccessLog(
        settings.streams,
        entries_topic=getattr(args, "entries_topic", None),
        checkpoints_topic=getattr(args, "checkpoints_topic", None),
        log_id=getattr(args, "log_id", None),
        timeout=CLI_TIMEOUT,
    )


def _print(args: argparse.Namespace, doc: Any, text: str) -> None:
    print(json.dumps(doc, ensure_ascii=False, indent=2) if args.json else text)


def _when(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _verify(args: argparse.Namespace, settings: Settings) -> int:
    report = _log(args, settings).verify(_public(args, settings))
    _print(args, report.to_json(), report.render())
    return 0 if report.ok else 1


def _prove(args: argparse.Namespace, settings: Settings) -> int:
    public = _public(args, settings)
    doc = _log(args, settings).prove(args.entry, public)
    ok, why = check_proof(doc, public)
    cp = doc["checkpoint"]
    text = "\n".join(
        [
            f"entry #{doc['entry_index']} of {doc['log_id']}, leaf {doc['leaf_hash']}",
            f"checkpoint: {cp['tree_size']} entries, root {cp['root_hash']}, "
            f"signed {_when(cp['time_ms'])} by key {cp['key_id']}",
            "audit path:",
            *(f"  {h}" for h in doc["audit_path"]),
            f"checked: {why}",
            "(--json prints the proof document to check offline with the public key)",
        ]
    )
    _print(args, doc, text)
    return 0 if ok else 1


def _check_proof(args: argparse.Namespace, settings: Settings) -> int:
    raw = sys.stdin.read() if str(args.file) == "-" else args.file.read_text(encoding="utf-8")
    ok, why = check_proof(json.loads(raw), args.public_key.read_bytes())
    _print(args, {"ok": ok, "detail": why}, ("OK: " if ok else "FAILED: ") + why)
    return 0 if ok else 1


def _trail(args: argparse.Namespace, settings: Settings) -> int:
    from streams.audit.tracker import Tracker

    now = (
        int(dt.datetime.fromisoformat(args.at).timestamp() * 1000)
        if args.at
        else time.time_ns() // 1_000_000
    )
    tracker = Tracker(settings.streams, log=_log(args, settings))
    tracker.catch_up()
    trail = tracker.trail(args.subject, now)
    lines = [f"{len(trail)} accesses to the data of {args.subject}:"]
    for e in trail:
        case = f" case {e.case_id}" if e.case_id else ""
        lines.append(
            f"  #{e.seq:<5} {_when(e.decided_at_ms)}  {e.requester} ({e.official})  "
            f"{e.decision}  {e.resource_id}  duty: {e.purpose}{case}  basis: {e.legal_basis}"
        )
    _print(
        args, {"subject": args.subject, "entries": [e.to_json() for e in trail]}, "\n".join(lines)
    )
    return 0


def _checkpoint(args: argparse.Namespace, settings: Settings) -> int:
    log = _log(args, settings)
    cp = log.latest_checkpoint(_public(args, settings))
    if cp is None:
        print(
            f"xiangyun audit checkpoint: no valid checkpoint of {log.log_id} yet", file=sys.stderr
        )
        return 1
    text = (
        f"{cp.log_id}: {cp.tree_size} entries, root {cp.root_hash.hex()}, "
        f"signed {_when(cp.time_ms)} by key {cp.key_id}"
    )
    _print(args, cp.to_json(), text)
    return 0


def _public_key(args: argparse.Namespace, settings: Settings) -> int:
    public = _public(args, settings)
    pem = public_key_pem(public)
    _print(args, {"key_id": key_id(public), "public_key": pem}, f"key id {key_id(public)}\n{pem}")
    return 0


_VERBS = {
    "verify": _verify,
    "prove": _prove,
    "check-proof": _check_proof,
    "trail": _trail,
    "checkpoint": _checkpoint,
    "public-key": _public_key,
}
