"""``xiangyun units``: the register of participating units from the command line.

A unit's parent (or the data bureau) submits units (YAML or JSON files); the data bureau
reviews them; anyone lists and shows them. Every verb reads and writes the unit topics of
``XIANGYUN_TOPIC_PREFIX`` (the compacted snapshot topic and the change log, its history).
The catalog refuses entries whose department or provider is not a registered unit.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from streams.kafka.topics import ensure_topics
from streams.kafka.units_store import UnitsStore, UnitsUnavailable
from streams.units.model import UnitError, UnitStatus, load_units
from streams.units.review import DATA_BUREAU, UnitHistory
from xiangyun.register_cli import (
    Verb,
    add_review_verb,
    add_show_verb,
    change_line,
    decide,
    load_file,
    print_table,
    report_change,
    run_verb,
)
from xiangyun.settings import Settings

__all__ = ["add_units_parser", "bootstrap_units", "run_units"]

#: seconds to wait for Kafka before a verb gives up with a message
CLI_TIMEOUT = 15.0


def add_units_parser(subparsers: Any) -> None:
    """Add ``units`` and its verbs to the ``xiangyun`` command's subparsers."""
    u = subparsers.add_parser(
        "units",
        help="the register of participating units: list, show, submit, review",
        description="The units taking part in the exchange (provincial departments, cities, "
        "city departments, district and county bodies, commissioned third parties), kept in "
        "Kafka (a compacted topic of current states and an append-only change log). A unit's "
        "parent submits it, the data bureau approves or rejects it; a catalog entry may only "
        "name registered units as its department and provider.",
    )
    verbs = u.add_subparsers(dest="verb", required=True, metavar="VERB")

    ls = verbs.add_parser(
        "list",
        help="list the units",
        description="One line per unit: code, kind, status, region, parent, name. Rejected "
        "units are shown with --all.",
    )
    ls.add_argument("--all", action="store_true", help="include rejected units")
    ls.add_argument("--kind", metavar="KIND", help="only units of this kind, e.g. city")
    ls.add_argument("--region", metavar="CODE", help="only units of this region, e.g. 220100")

    add_show_verb(
        verbs,
        what="a unit",
        key="code",
        metavar="CODE",
        key_help="unit code, e.g. 220000-GA",
        description="The unit (version in force, else latest), its children and every "
        "change: who, when, what, read from the register's change log.",
    )

    s = verbs.add_parser(
        "submit",
        help="submit units from a YAML or JSON file for review",
        description="Submit the units in FILE (YAML or JSON; one unit or a list, fields code, "
        "name, kind, region, parent, duties) for review by the data bureau: new units or "
        "updates of registered ones. All units or none.",
    )
    s.add_argument("file", type=Path, metavar="FILE", help="YAML or JSON units")
    s.add_argument(
        "--as",
        dest="actor",
        metavar="ACTOR",
        help=f"who submits (default: each unit's parent; the data bureau, {DATA_BUREAU}, "
        "for a unit without one)",
    )

    add_review_verb(
        verbs,
        what="unit",
        key="code",
        metavar="CODE",
        key_help="unit code, e.g. 220100-MZ",
        description="Approve (register) or reject the version of CODE awaiting review.",
    )

    b = verbs.add_parser(
        "bootstrap",
        help="load the starter register into the unit topics",
        description="Submit and approve the starter register (XIANGYUN_UNITS_DIR) for the "
        "units not yet registered. Idempotent. `xiangyun stack up` and `xiangyun catalog "
        "bootstrap` do this themselves.",
    )
    b.add_argument(
        "--dir", type=Path, metavar="DIR", help="starter register (default: XIANGYUN_UNITS_DIR)"
    )

    u.set_defaults(handler=run_units)


def run_units(args: argparse.Namespace, settings: Settings) -> int:
    """Run one ``units`` verb; a refusal or an unreachable Kafka exits 2 with the reason."""
    return run_verb("units", _VERBS, (UnitError, UnitsUnavailable), args, settings)


def _store(settings: Settings) -> UnitsStore:
    return UnitsStore(settings.streams, timeout=CLI_TIMEOUT)


def _list(args: argparse.Namespace, settings: Settings) -> int:
    with _store(settings) as store:
        store.start()
        states = store.states()
    rows = []
    for st in states:
        u = st.in_force or st.latest
        if not args.all and u.status is UnitStatus.REJECTED:
            continue
        if args.kind and u.kind.value != args.kind:
            continue
        if args.region and u.region != args.region:
            continue
        pending = st.pending
        status = u.status.value + (
            f" (v{pending.version} submitted)" if pending is not None and pending is not u else ""
        )
        rows.append((u.code, u.kind.value, status, u.region, u.parent or "-", u.name))
    print_table(("code", "kind", "status", "region", "parent", "name"), rows)
    if not states:
        print("(the register is empty: `xiangyun units bootstrap` loads the starter register)")
    return 0


def _show(args: argparse.Namespace, settings: Settings) -> int:
    with _store(settings) as store:
        store.start()
        state = store.state(args.code)
        if state is None:
            near = [s.code for s in store.states() if args.code.upper() in s.code]
            hint = f"; did you mean {', '.join(near[:3])}?" if near else "; `xiangyun units list`"
            raise UnitError(f"no unit {args.code!r}{hint}")
        history = store.history(args.code)
        children = store.current().children(args.code)
    if history is None or history.seq < state.seq:
        raise UnitError(f"{args.code}: the change log holds an incomplete history of it")
    if args.json:
        print(json.dumps(history.to_mapping(), ensure_ascii=False, indent=2))
    else:
        print(render_history(history, [f"{c.code} {c.name}" for c in children]))
    return 0


def _submit(args: argparse.Namespace, settings: Settings) -> int:
    path: Path = args.file
    units = load_file(load_units, path, UnitError)
    with _store(settings) as store:
        events = store.submit(units, args.actor)
    for ev in events:
        report_change(ev.code, ev.change)
    print(
        "awaiting review by the data bureau: "
        "`xiangyun units review CODE --approve|--reject --reason TEXT`"
    )
    return 0


def _review(args: argparse.Namespace, settings: Settings) -> int:
    with _store(settings) as store:
        ev = decide(store, args.code, args)
    ch = ev.change
    report_change(ev.code, ch)
    if ch.superseded_version is not None:
        print(f"version {ch.superseded_version} is superseded")
    return 0


def _bootstrap(args: argparse.Namespace, settings: Settings) -> int:
    print(bootstrap_units(settings, args.dir))
    return 0


def ensure_collect_topics(settings: Settings) -> list[str]:
    """Every topic, and a collect topic for each principal in force in the register: the
    principals' sources can publish before a worker runs. Returns the principals."""
    with UnitsStore(settings.streams) as store:
        principals = store.start().current().principals()
    ensure_topics(settings.streams, principals=principals)
    return principals


def bootstrap_units(settings: Settings, directory: Path | None = None) -> str:
    """Load the starter register (idempotent) and create its principals' collect topics;
    a line saying what was written."""
    with UnitsStore(settings.streams) as store:
        events = store.bootstrap(directory)
        registered = sum(1 for u in store.current() if u.in_force)
        ensure_topics(settings.streams, principals=store.current().principals())
    if not events:
        return f"units: {store.topic} already up to date ({registered} units registered)"
    added = len({ev.code for ev in events})
    return (
        f"units: starter register loaded into {store.topic}: {added} units "
        f"({len(events)} events); {registered} registered"
    )


_VERBS: dict[str, Verb] = {
    "list": _list,
    "show": _show,
    "submit": _submit,
    "review": _review,
    "bootstrap": _bootstrap,
}


def render_history(h: UnitHistory, children: list[str] | None = None) -> str:
    """A unit, its versions and its history, for people."""
    u = h.in_force or h.latest
    lines = [f"{u.code}: {u.name}"]
    lines.append(
        f"registered: version {u.version}"
        if h.in_force is not None
        else f"not registered: latest version {u.version} is {u.status.value}"
    )
    lines += [
        f"kind: {u.kind.value}",
        f"region: {u.region}",
        f"parent: {u.parent or '-'}",
        "duties: " + (", ".join(u.duties) if u.duties else "-"),
    ]
    if children:
        lines.append("units below it: " + ", ".join(children))
    lines.append("")
    lines.append("history:")
    for c in h.history:
        lines.append(change_line(c))
        if c.reason:
            lines.append(f"        reason: {c.reason}")
        for field, (old, new) in c.diff.items():
            if field != "status":
                lines.append(f"        ~ {field}: {old} → {new}")
    return "\n".join(lines)
