"""The command line as a user runs it: a process, its exit code and its standard streams."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_output_cut_short_by_a_closed_pipe_ends_quietly() -> None:
    """`xiangyun config | head -1`, made deterministic: the reader is gone before the
    command writes its first line, so every write meets a closed pipe."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "xiangyun", "config"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 1
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr


def test_a_command_whose_output_is_read_exits_0() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "xiangyun", "config"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stderr == ""
    assert "XIANGYUN_KAFKA_BOOTSTRAP=" in done.stdout
