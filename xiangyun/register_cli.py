"""What the registers' commands share (``xiangyun catalog``, ``xiangyun units``): the review
verb, how a verb's refusal is reported, the tables, and how a change is told to people."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from streams.core.review import Change
from streams.units.review import DATA_BUREAU
from xiangyun.settings import Settings

__all__ = [
    "Verb",
    "add_reason_and_actor",
    "add_review_verb",
    "add_show_verb",
    "change_line",
    "decide",
    "load_file",
    "print_table",
    "report_change",
    "run_verb",
    "when",
]

#: one verb of a register's command: exits with what it returns
Verb = Callable[[argparse.Namespace, Settings], int]
T = TypeVar("T")
EventT = TypeVar("EventT", covariant=True)


class Reviewing(Protocol[EventT]):
    """A register store's review commands."""

    def approve(self, key: str, reason: str = "", /, *, actor: str = ...) -> EventT: ...

    def reject(self, key: str, reason: str, /, *, actor: str = ...) -> EventT: ...


def add_review_verb(
    verbs: Any, *, what: str, key: str, metavar: str, key_help: str, description: str
) -> None:
    """Add ``review KEY --approve|--reject --reason TEXT [--as ACTOR]`` to ``verbs``: ``what``
    the register holds ("entry", "unit"), ``key`` the attribute that names it."""
    r = verbs.add_parser(
        "review", help=f"approve or reject a submitted {what}", description=description
    )
    r.add_argument(key, metavar=metavar, help=key_help)
    decision = r.add_mutually_exclusive_group(required=True)
    decision.add_argument(
        "--approve", dest="decision", action="store_const", const="approve", help="approve"
    )
    decision.add_argument(
        "--reject", dest="decision", action="store_const", const="reject", help="reject"
    )
    add_reason_and_actor(r, f"the reviewer (default: the data bureau, {DATA_BUREAU})")


def add_reason_and_actor(verb: Any, actor_help: str) -> None:
    """``--reason TEXT`` (required, kept in the history) and ``--as ACTOR`` (default: the data
    bureau) of a verb that decides on a register entry."""
    verb.add_argument("--reason", required=True, metavar="TEXT", help="why (kept in the history)")
    verb.add_argument("--as", dest="actor", metavar="ACTOR", default=DATA_BUREAU, help=actor_help)


def decide(store: Reviewing[T], key: str, args: argparse.Namespace) -> T:
    """Approve or reject the version of ``key`` awaiting review, as ``review`` was told."""
    if args.decision == "approve":
        return store.approve(key, args.reason, actor=args.actor)
    return store.reject(key, args.reason, actor=args.actor)


def add_show_verb(
    verbs: Any, *, what: str, key: str, metavar: str, key_help: str, description: str
) -> None:
    """Add ``show KEY [--json]`` to ``verbs``."""
    sh = verbs.add_parser(
        "show", help=f"show {what} with its full history", description=description
    )
    sh.add_argument(key, metavar=metavar, help=key_help)
    sh.add_argument("--json", action="store_true", help="print every version and change as JSON")


def run_verb(
    command: str,
    verbs: Mapping[str, Verb],
    refusals: tuple[type[Exception], ...],
    args: argparse.Namespace,
    settings: Settings,
) -> int:
    """Run one verb of ``xiangyun <command>``; a refusal or an unreachable Kafka exits 2
    with the reason."""
    try:
        return verbs[args.verb](args, settings)
    except refusals as exc:
        print(f"xiangyun {command} {args.verb}: {exc}", file=sys.stderr)
        return 2


def load_file(load: Callable[[Path], T], path: Path, error: type[Exception]) -> T:
    """What ``load`` reads from ``path``; a file that cannot be read is the register's
    refusal (``error``), not a traceback."""
    try:
        return load(path)
    except OSError as exc:
        raise error(f"{path}: cannot read it: {exc.strerror or exc}") from exc


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Columns as wide as their widest cell, two spaces apart."""
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=False)]
    for row in (header, *rows):
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def report_change(key: str, change: Change) -> None:
    """``KEY: version N STATUS by ACTOR``: what a command did."""
    print(f"{key}: version {change.version} {change.to_status.value} by {change.actor}")


def when(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def change_line(c: Change) -> str:
    """One line of a history: number, time, actor, action, version and the status move."""
    moved = f"{c.from_status.value} → {c.to_status.value}" if c.from_status else c.to_status.value
    return f"  #{c.seq:<3} {when(c.at_ms)}  {c.actor:<12} {c.action.value:<9} v{c.version}  {moved}"
