"""`xiangyun catalog` without Kafka: argument parsing, help, errors caught before any
connection, and how an entry's history is shown. The round trip against the real broker is
in tests/integration/test_catalog_flow.py."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from streams.catalog.model import Catalog, schema_file_loader
from streams.catalog.review import DATA_BUREAU, CatalogBook, ResourceHistory
from xiangyun.catalog_cli import render_history, run_catalog
from xiangyun.cli import build_parser, main
from xiangyun.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
VERBS = ("submit", "review", "retire", "list", "show", "export-dcat", "bootstrap")


def parse(*argv: str) -> object:
    return build_parser().parse_args(["catalog", *argv])


def test_submit_defaults_and_options() -> None:
    args = parse("submit", "entries.yaml")
    assert (args.verb, args.file, args.actor, args.draft, args.schema_dir) == (
        "submit",
        Path("entries.yaml"),
        None,  # the entry's department
        False,
        None,
    )
    args = parse("submit", "e.json", "--as", "220000-GA", "--draft", "--schema-dir", "/s")
    assert (args.actor, args.draft, args.schema_dir) == ("220000-GA", True, Path("/s"))


def test_review_takes_one_decision_and_a_reason() -> None:
    args = parse("review", "population.resident", "--approve", "--reason", "complete")
    assert (args.resource_id, args.decision, args.reason, args.actor) == (
        "population.resident",
        "approve",
        "complete",
        DATA_BUREAU,
    )
    args = parse("review", "x.y", "--reject", "--reason", "no legal basis", "--as", "R")
    assert (args.decision, args.actor) == ("reject", "R")


@pytest.mark.parametrize(
    "argv",
    [
        ("review", "x.y", "--reason", "r"),  # neither --approve nor --reject
        ("review", "x.y", "--approve", "--reject", "--reason", "r"),  # both
        ("review", "x.y", "--approve"),  # no reason
        ("retire", "x.y"),  # no reason
        ("submit",),  # no file
        ("show",),  # no id
        ("frobnicate",),  # no such verb
        (),  # no verb
    ],
)
def test_incomplete_commands_are_usage_errors(
    argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        parse(*argv)
    assert info.value.code == 2
    assert "usage: xiangyun catalog" in capsys.readouterr().err


def test_list_show_export_bootstrap_options() -> None:
    assert parse("list").all is False and parse("list", "--all").all is True
    assert parse("show", "a.b", "--json").json is True
    assert parse("export-dcat", "--out", "c.jsonld").out == Path("c.jsonld")
    assert parse("export-dcat").out is None
    assert parse("bootstrap", "--dir", "cat").dir == Path("cat")
    assert parse("retire", "a.b", "--reason", "gone").actor == DATA_BUREAU


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_help(verb: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse(verb, "--help")
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: xiangyun catalog {verb}" in out
    assert len(out.splitlines()) > 3


def test_catalog_help_lists_every_verb(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse("--help")
    out = capsys.readouterr().out
    for verb in VERBS:
        assert verb in out


def test_missing_file_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in [k for k in os.environ if k.startswith("XIANGYUN_")]:
        monkeypatch.delenv(key)
    missing = tmp_path / "nowhere.yaml"
    assert main(["catalog", "submit", str(missing)]) == 2
    err = capsys.readouterr().err
    assert "xiangyun catalog submit:" in err and str(missing) in err


def test_entry_with_a_missing_field_exits_2_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    entry = tmp_path / "entry.json"
    entry.write_text('{"id": "population.pets", "name": "Pets"}', encoding="utf-8")
    args = parse("submit", str(entry))
    assert run_catalog(args, Settings.from_env({})) == 2  # type: ignore[arg-type]
    err = capsys.readouterr().err
    assert "population.pets" in err and "missing field 'department'" in err


def test_schema_dir_that_is_not_a_directory_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = parse(
        "submit", str(ROOT / "catalog" / "provincial.yaml"), "--schema-dir", str(tmp_path / "x")
    )
    assert run_catalog(args, Settings.from_env({})) == 2  # type: ignore[arg-type]
    assert "not a directory" in capsys.readouterr().err


def test_show_renders_the_entry_versions_and_history_with_diffs() -> None:
    book = CatalogBook(schema_file_loader(ROOT / "schemas" / "avro"))
    log = book.bootstrap(list(Catalog.from_dir(ROOT / "catalog")), DATA_BUREAU, 1_767_225_600_000)
    log += book.retire("population.resident", DATA_BUREAU, "replaced by the national registry", 1)
    state = ResourceHistory.replay("population.resident", log)  # what the change log holds
    assert state is not None
    text = render_history(state)
    assert text.startswith("population.resident: Resident household registration")
    assert "not in force: latest version 1 is retired" in text
    assert "provider: 220000-GA" in text  # the entry itself
    assert "v1   retired" in text  # the versions
    history = text.split("history:", 1)[1]
    assert "2026-01-01 00:00:00Z  220000-GA    submitted v1  submitted" in history
    assert "+ provider: 220000-GA" in history  # field diff of the submission
    assert "+ spec.fields.citizen_id: string" in history
    assert f"{DATA_BUREAU:<12} approved  v1  submitted → approved" in history
    assert "reason: starter catalog" in history
    assert "retired   v1  approved → retired" in history
    assert "reason: replaced by the national registry" in history


def test_show_lists_every_version_of_a_long_history() -> None:
    """A superseded version is not in the current state but is in the change log: show
    lists it with its diff."""
    book = CatalogBook(schema_file_loader(ROOT / "schemas" / "avro"))
    log = book.bootstrap(list(Catalog.from_dir(ROOT / "catalog")), DATA_BUREAU, 1_000)
    resident = Catalog.from_dir(ROOT / "catalog").get("population.resident")
    assert resident is not None
    log.append(book.submit(dataclasses.replace(resident, name="Residents"), "220000-GA", 2_000))
    log.append(book.approve("population.resident", DATA_BUREAU, "renamed", 3_000))
    current = book.state("population.resident")
    assert current is not None and [v.resource.version for v in current.versions] == [2]
    history = ResourceHistory.replay("population.resident", log)
    assert history is not None
    text = render_history(history)
    assert "in force: version 2" in text
    assert "v1   superseded" in text and "v2   approved" in text
    assert "~ name: Resident household registration (居民户籍信息) → Residents" in text
    assert "supersedes version 1" in text
