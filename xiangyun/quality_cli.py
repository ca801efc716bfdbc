"""``xiangyun quality``: data quality per resource and providing unit (article 22), read from
the quality snapshot topic a worker's quality agent writes (no Prometheus needed)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from typing import Any

from streams.kafka.follower import CompactedView, ViewError
from streams.kafka.topics import Topics
from streams.quality.figures import Figures, QualityRow
from xiangyun.settings import Settings

__all__ = ["add_quality_parser", "read_rows", "render"]

LEGEND = """\
records       records that reached an outcome (accepted, superseded, evidence, rejected)
complete      share of the collection spec's fields filled in accepted records
valid         share of records not rejected (rejections by reason: --json)
timely        share of accepted records within the update frequency's delay
              (realtime 1 min, hourly 1 h, daily 1 d, weekly 7 d, monthly 31 d, ...)
consistent    share of verification results agreeing with the pool
open          verification conflicts still open
n/a           nothing to measure yet (no accepted record, an irregular resource,
              or multi-source verification not running)"""


def read_rows(settings: Settings, timeout: float = 15.0) -> list[QualityRow]:
    """Every (resource, unit) row on the quality topic, as last written."""
    rows: dict[bytes, QualityRow] = {}

    def apply(key: bytes, value: bytes | None) -> None:
        if value is None:
            rows.pop(key, None)
            return
        with contextlib.suppress(ValueError, KeyError, TypeError):  # not ours: skip it
            rows[key] = QualityRow.from_json(value)

    view = CompactedView(settings.kafka, Topics.of(settings.streams).quality, apply)
    try:
        view.start(timeout)
    finally:
        view.stop()
    return sorted(rows.values(), key=lambda r: (r.resource, r.unit))


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _figures(row: QualityRow, since_start: bool) -> Figures:
    return row.total if since_start else row.window


def render(rows: list[QualityRow], *, since_start: bool = False, now_ms: int | None = None) -> str:
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    header = ("resource", "unit", "records", "complete", "valid", "timely", "consistent", "open")
    table = [header]
    for row in rows:
        fig = _figures(row, since_start)
        table.append(
            (
                row.resource,
                row.unit,
                f"{fig.records:,}",
                _pct(fig.completeness),
                _pct(fig.validity),
                _pct(fig.timeliness),
                _pct(fig.consistency),
                "n/a" if row.open_conflicts is None else str(row.open_conflicts),
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = []
    for n, r in enumerate(table):
        cells = [r[0].ljust(widths[0]), r[1].ljust(widths[1])]
        cells += [c.rjust(w) for c, w in zip(r[2:], widths[2:], strict=True)]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    latest = max(r.at_ms for r in rows)
    span = (
        "since the agent started ("
        + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(rows[0].since_ms / 1000))
        + ")"
        if since_start
        else f"over the last {rows[0].window_ms // 60_000} minutes"
    )
    lines += [
        "",
        f"Figures {span}; snapshot {max(0, now_ms - latest) / 1000:.0f} s old.",
        "",
        LEGEND,
    ]
    return "\n".join(lines)


def _quality(args: argparse.Namespace, settings: Settings) -> int:
    try:
        rows = read_rows(settings)
    except ViewError as exc:
        print(f"xiangyun quality: {exc}", file=sys.stderr)
        return 2
    if args.json:
        out: list[dict[str, Any]] = [r.to_dict() for r in rows]
        print(json.dumps(out, ensure_ascii=False, indent=2))
        return 0
    if not rows:
        print(
            f"no quality snapshot on {Topics.of(settings.streams).quality} yet: is a worker "
            "running (`xiangyun worker`) and have records arrived?"
        )
        return 1
    print(render(rows, since_start=args.since_start))
    return 0


def add_quality_parser(sub: Any) -> None:
    q = sub.add_parser(
        "quality",
        help="data quality per resource and unit (completeness, validity, timeliness, ...)",
        description="Completeness, validity, timeliness and consistency per resource and "
        "providing unit, over the last 15 minutes (or since the quality agent started), as "
        "the worker's quality agent last wrote them to the quality snapshot topic.",
    )
    q.add_argument("--since-start", action="store_true", help="figures since the agent started")
    q.add_argument("--json", action="store_true", help="every figure, both spans, as JSON")
    q.set_defaults(handler=_quality)
