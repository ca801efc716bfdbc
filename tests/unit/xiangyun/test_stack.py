"""The stack's readiness wait: a service loading its data is waited for, a dead or silent
one is reported with its log."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from xiangyun.settings import Settings
from xiangyun.stack import Stack, StackError


def _stack(tmp_path: Path) -> Stack:
    return Stack(dataclasses.replace(Settings(), state_dir=tmp_path))


def test_a_service_that_stays_busy_loading_is_waited_for_past_the_timeout(
    tmp_path: Path,
) -> None:
    polls = iter(range(1_000))
    ready_at = 6  # 6 polls of 0.25 s: past the 0.5 s timeout

    def check() -> bool:
        return next(polls) >= ready_at

    _stack(tmp_path)._wait("redis", check, 0.5, os.getpid(), busy=lambda: True)


def test_a_service_that_neither_answers_nor_loads_times_out_with_its_log(
    tmp_path: Path,
) -> None:
    (tmp_path / "redis.log").write_text("first line\nlast words\n")
    with pytest.raises(StackError, match=r"(?s)redis did not become ready.*last words"):
        _stack(tmp_path)._wait("redis", lambda: False, 0.5, os.getpid(), busy=lambda: False)


def test_a_dead_process_ends_the_wait_at_once_even_while_said_busy(tmp_path: Path) -> None:
    gone = 2**22 + 12345  # above the kernel's default pid_max: no such process
    assert not Path(f"/proc/{gone}").exists()
    with pytest.raises(StackError, match="did not become ready"):
        _stack(tmp_path)._wait("redis", lambda: False, 60, gone, busy=lambda: True)
