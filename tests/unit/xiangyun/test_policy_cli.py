"""`xiangyun policy | approvals | exchange` without Kafka: parsing, help on every verb, and
errors that say what to do. The round trip against the real broker is in
tests/integration/test_policy.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from xiangyun.cli import build_parser, main

COMMANDS = {
    "policy": ("list", "show", "submit", "review", "bootstrap"),
    "approvals": ("grant", "revoke", "list"),
    "exchange": ("allowed",),
}


@pytest.mark.parametrize(
    "argv", [[c, v] for c, verbs in COMMANDS.items() for v in verbs] + [[c] for c in COMMANDS]
)
def test_every_command_and_verb_has_help(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    assert "usage: xiangyun" in capsys.readouterr().out


def test_parsing() -> None:
    p = build_parser()
    a = p.parse_args(["policy", "review", "220100", "demand", "--reject", "--reason", "too wide"])
    assert (a.region, a.kind, a.decision, a.actor) == ("220100", "demand", "reject", "220000-ZSJ")
    a = p.parse_args(["policy", "submit", "l.yaml", "--as", "220100-MZ"])
    assert (a.file, a.actor) == (Path("l.yaml"), "220100-MZ")
    a = p.parse_args(
        [
            "approvals",
            "grant",
            "--requester",
            "220000-TJ",
            "--resource",
            "r",
            "--purpose",
            "statistics",
            "--quota",
            "3",
            "--days",
            "7",
            "--max-subjects",
            "500",
        ]
    )
    assert (a.quota, a.days, a.max_subjects, a.actor) == (3, 7.0, 500, "220000-ZSJ")
    a = p.parse_args(["exchange", "allowed", "--as", "220000-MZ", "--purpose", "social_assistance"])
    assert (a.department, a.purpose, a.all) == ("220000-MZ", "social_assistance", False)
    with pytest.raises(SystemExit):
        p.parse_args(["policy", "show", "220000", "wishlist"])


def test_errors_say_what_to_do(capsys: pytest.CaptureFixture[str]) -> None:
    # refused before any connection: a department code that is not REGION-CODE
    assert main(["exchange", "allowed", "--as", "GA"]) == 2
    assert "e.g. 220000-GA" in capsys.readouterr().err
    assert (
        main(
            [
                "approvals",
                "grant",
                "--requester",
                "220000-TJ",
                "--resource",
                "r",
                "--purpose",
                "p",
                "--quota",
                "1",
                "--days",
                "0",
            ]
        )
        == 2
    )
    assert "positive number of days" in capsys.readouterr().err
