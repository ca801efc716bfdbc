"""``xiangyun catalog``: the review workflow of the resource catalog from the command line.

Departments submit entries (YAML or JSON files), the data bureau reviews them, anyone lists
and shows them; every verb reads and writes the catalog topics of ``XIANGYUN_TOPIC_PREFIX``
(the compacted snapshot topic with each resource's current state, and the change log, its
history). Running workers follow the snapshot topic: an approval or a retirement takes effect
within seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from streams.catalog.dcat import DEFAULT_BASE_URI, to_dcat_ap
from streams.catalog.model import CatalogError, Resource, Status, load_entries, schema_file_loader
from streams.catalog.review import DATA_BUREAU, Change, ResourceHistory
from streams.kafka.catalog_store import CatalogStore, CatalogUnavailable
from xiangyun.register_cli import (
    Verb,
    add_reason_and_actor,
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

__all__ = ["add_catalog_parser", "run_catalog"]

#: seconds to wait for Kafka before a verb gives up with a message
CLI_TIMEOUT = 15.0
_HIDDEN = (Status.RETIRED, Status.REJECTED, Status.SUPERSEDED)


def add_catalog_parser(subparsers: Any) -> None:
    """Add ``catalog`` and its verbs to the ``xiangyun`` command's subparsers."""
    c = subparsers.add_parser(
        "catalog",
        help="the resource catalog: submit, review, list, show, retire, export",
        description="The public data resource catalog, kept in Kafka (a compacted topic of "
        "current states and an append-only change log). A department submits its entries; "
        "the data bureau approves or rejects them "
        "with a reason; approved entries are in force and running workers apply changes "
        "within seconds. Every change keeps its history.",
    )
    verbs = c.add_subparsers(dest="verb", required=True, metavar="VERB")

    s = verbs.add_parser(
        "submit",
        help="submit entries from a YAML or JSON file for review",
        description="Submit the catalog entries in FILE (YAML or JSON; one entry or a list) "
        "for review by the data bureau: new resources, or updates of resources in force "
        "(which stay in force until the update is approved). All entries or none.",
    )
    s.add_argument("file", type=Path, metavar="FILE", help="YAML or JSON catalog entries")
    s.add_argument(
        "--as",
        dest="actor",
        metavar="ACTOR",
        help="who submits, e.g. 220000-GA (default: each entry's department)",
    )
    s.add_argument(
        "--draft", action="store_true", help="save as drafts, not yet submitted for review"
    )
    s.add_argument(
        "--schema-dir",
        type=Path,
        metavar="DIR",
        help="where the entries' `schema` paths are read from (default: XIANGYUN_SCHEMA_DIR); "
        "the spec is stored with the version, so the file is not needed afterwards",
    )

    add_review_verb(
        verbs,
        what="entry",
        key="resource_id",
        metavar="ID",
        key_help="resource id, e.g. population.resident",
        description="Approve (put in force) or reject the version of ID awaiting review.",
    )

    t = verbs.add_parser(
        "retire",
        help="take a resource out of force",
        description="Retire ID: records for it are refused from then on (RESOURCE_NOT_IN_FORCE); "
        "a draft or submitted version is closed too. Its history is kept.",
    )
    t.add_argument("resource_id", metavar="ID", help="resource id")
    add_reason_and_actor(
        t,
        f"who retires (default: the data bureau, {DATA_BUREAU}); a department may "
        "withdraw its own entry that was never approved",
    )

    ls = verbs.add_parser(
        "list",
        help="list catalog entries",
        description="One line per resource: the version in force, else the latest version. "
        "Retired and rejected resources are shown with --all.",
    )
    ls.add_argument("--all", action="store_true", help="include retired and rejected resources")

    add_show_verb(
        verbs,
        what="an entry",
        key="resource_id",
        metavar="ID",
        key_help="resource id",
        description="The entry (version in force, else latest), every version, and every "
        "change: who, when, what (field by field), read from the catalog's change log.",
    )

    e = verbs.add_parser(
        "export-dcat",
        help="export the approved catalog as DCAT-AP (JSON-LD)",
        description="The resources in force as one DCAT-AP dcat:Catalog in JSON-LD; "
        "publishers and creators are named by their names in the unit register.",
    )
    e.add_argument("--out", type=Path, metavar="FILE", help="write to FILE (default: stdout)")
    e.add_argument(
        "--base-uri", default=DEFAULT_BASE_URI, help=f"base of every IRI ({DEFAULT_BASE_URI})"
    )

    b = verbs.add_parser(
        "bootstrap",
        help="load the starter catalog into the catalog topic",
        description="Submit and approve the starter catalog (XIANGYUN_CATALOG_DIR) for the "
        "resources not yet in the catalog topic, after loading the starter unit register "
        "(XIANGYUN_UNITS_DIR) the same way. Idempotent: what is already there is left alone. "
        "`xiangyun stack up`, `demo` and `bench` do this themselves.",
    )
    b.add_argument(
        "--dir", type=Path, metavar="DIR", help="starter catalog (default: XIANGYUN_CATALOG_DIR)"
    )

    c.set_defaults(handler=run_catalog)


def run_catalog(args: argparse.Namespace, settings: Settings) -> int:
    """Run one ``catalog`` verb; a refusal or an unreachable Kafka exits 2 with the reason."""
    return run_verb("catalog", _VERBS, (CatalogError, CatalogUnavailable), args, settings)


def _store(settings: Settings, schema_dir: Path | None = None) -> CatalogStore:
    loader = schema_file_loader(schema_dir) if schema_dir is not None else None
    return CatalogStore(settings.streams, schema_loader=loader, timeout=CLI_TIMEOUT)


# -- verbs ---------------------------------------------------------------------------------


def _submit(args: argparse.Namespace, settings: Settings) -> int:
    path: Path = args.file
    entries = load_file(load_entries, path, CatalogError)
    if args.schema_dir is not None and not args.schema_dir.is_dir():
        raise CatalogError(f"--schema-dir {args.schema_dir}: not a directory")
    with _store(settings, args.schema_dir) as store:
        events = store.submit(entries, args.actor, draft=args.draft)
    for ev in events:
        report_change(ev.resource_id, ev.change)
    if not args.draft:
        print(
            "awaiting review by the data bureau: "
            "`xiangyun catalog review ID --approve|--reject --reason TEXT`"
        )
    return 0


def _review(args: argparse.Namespace, settings: Settings) -> int:
    with _store(settings) as store:
        ev = decide(store, args.resource_id, args)
    ch = ev.change
    report_change(ev.resource_id, ch)
    if ch.to_status is Status.APPROVED:
        if ch.superseded_version is not None:
            print(f"version {ch.superseded_version} is superseded")
        print("in force now: running workers apply it within seconds")
    return 0


def _retire(args: argparse.Namespace, settings: Settings) -> int:
    with _store(settings) as store:
        ev = store.retire(args.resource_id, args.reason, actor=args.actor)
    print(f"{ev.resource_id}: retired by {ev.change.actor}; records for it are now refused")
    return 0


def _list(args: argparse.Namespace, settings: Settings) -> int:
    with _store(settings) as store:
        store.start()
        states = store.states()
    rows = []
    for st in states:
        shown = st.in_force or st.latest
        r = shown.resource
        if not args.all and r.status in _HIDDEN:
            continue
        pending = st.pending
        extra = (
            f"v{pending.resource.version} {pending.resource.status.value}"
            if pending is not None and pending is not shown
            else ""
        )
        rows.append(
            (r.id, r.status.value, str(r.version), r.pool.value, r.provider, r.region, extra)
        )
    print_table(("id", "status", "version", "pool", "provider", "region", "pending"), rows)
    if not states:
        print("(the catalog is empty: `xiangyun catalog bootstrap` loads the starter catalog)")
    hidden = len(states) - len(rows)
    if hidden:
        print(f"({hidden} retired or rejected not shown; --all shows them)")
    return 0


def _show(args: argparse.Namespace, settings: Settings) -> int:
    with _store(settings) as store:
        store.start()
        state = store.state(args.resource_id)
        known = [s.id for s in store.states()]
        if state is None:
            near = [k for k in known if args.resource_id.split(".")[-1] in k]
            hint = f"; did you mean {', '.join(near[:3])}?" if near else "; `xiangyun catalog list`"
            raise CatalogError(f"no catalog entry {args.resource_id!r}{hint}")
        history = store.history(args.resource_id)
        changes = store.changes_topic
    if history is None or history.seq < state.seq:
        held = f"up to change #{history.seq}" if history is not None else "no change"
        raise CatalogError(
            f"{args.resource_id} is at change #{state.seq} but the change log {changes} "
            f"holds {held} of it; its history is incomplete"
        )
    if args.json:
        print(json.dumps(history.to_mapping(), ensure_ascii=False, indent=2))
    else:
        print(render_history(history))
    return 0


def _export(args: argparse.Namespace, settings: Settings) -> int:
    with _store(settings) as store:
        store.start()
        doc = to_dcat_ap(store.current(), args.base_uri, units=store.unit_register())
    text = json.dumps(doc, ensure_ascii=False, indent=2)
    if args.out is None:
        print(text)
    else:
        try:
            args.out.write_text(text + "\n", encoding="utf-8")
        except OSError as exc:
            raise CatalogError(f"--out {args.out}: cannot write it: {exc.strerror}") from exc
        print(f"{len(doc['dcat:dataset'])} datasets written to {args.out}", file=sys.stderr)
    return 0


def _bootstrap(args: argparse.Namespace, settings: Settings) -> int:
    print(bootstrap_catalog(settings, args.dir))
    return 0


def bootstrap_catalog(settings: Settings, directory: Path | None = None) -> str:
    """Load the starter catalog (idempotent); a line saying what was written."""
    with CatalogStore(settings.streams) as store:
        events = store.bootstrap(directory)
        in_force = sum(1 for r in store.current() if r.in_force)
    if not events:
        return f"catalog: {store.topic} already up to date ({in_force} resources in force)"
    added = sorted({ev.resource_id for ev in events})
    return (
        f"catalog: starter catalog loaded into {store.topic}: {len(added)} resources "
        f"({len(events)} events); {in_force} in force"
    )


_VERBS: dict[str, Verb] = {
    "submit": _submit,
    "review": _review,
    "retire": _retire,
    "list": _list,
    "show": _show,
    "export-dcat": _export,
    "bootstrap": _bootstrap,
}


# -- rendering -----------------------------------------------------------------------------


def _value(v: Any, limit: int = 90) -> str:
    text = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _change_lines(c: Change) -> list[str]:
    out = [change_line(c)]
    if c.reason:
        out.append(f"        reason: {c.reason}")
    if c.superseded_version is not None:
        out.append(f"        supersedes version {c.superseded_version}")
    for d in c.diff:
        if d.field == "status":
            continue  # shown on the line above
        if d.old is None:
            out.append(f"        + {d.field}: {_value(d.new)}")
        elif d.new is None:
            out.append(f"        - {d.field}: {_value(d.old)}")
        else:
            out.append(f"        ~ {d.field}: {_value(d.old)} → {_value(d.new)}")
    return out


def _entry_yaml(r: Resource) -> str:
    text: str = yaml.safe_dump(r.to_mapping(), allow_unicode=True, sort_keys=False, width=100)
    return text


def render_history(state: ResourceHistory) -> str:
    """An entry, its versions and its history with field diffs, for people."""
    shown = state.in_force or state.latest
    r = shown.resource
    lines = [f"{r.id}: {r.name}"]
    if state.in_force is not None:
        lines.append(f"in force: version {r.version}")
    else:
        lines.append(f"not in force: latest version {r.version} is {r.status.value}")
    pending = state.pending
    if pending is not None and pending is not shown:
        lines.append(f"pending: version {pending.resource.version} {pending.resource.status.value}")
    lines.append("")
    lines.append(f"entry (version {r.version}):")
    lines += ["  " + ln for ln in _entry_yaml(r).rstrip().splitlines()]
    lines.append("")
    lines.append("versions:")
    for v in state.versions:
        vr = v.resource
        fp = v.fingerprint or "-"
        lines.append(f"  v{vr.version:<3} {vr.status.value:<10} spec {vr.schema}  fingerprint {fp}")
    lines.append("")
    lines.append("history:")
    for c in state.history:
        lines += _change_lines(c)
    return "\n".join(lines)
