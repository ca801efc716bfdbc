"""Run a worker as a child process (demo, benchmark, integration tests), stopped by PID."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from xiangyun.settings import Settings

__all__ = ["WorkerProcess"]


class WorkerProcess:
    """``xiangyun worker`` in a child process with the given settings; ``module`` and
    ``args`` name another worker to run with ``python -m`` (the benchmark's baseline)."""

    def __init__(
        self,
        settings: Settings,
        name: str = "worker",
        module: str = "xiangyun",
        args: Sequence[str] = ("worker",),
    ) -> None:
        self.settings = settings
        self.name = name
        self.command = [sys.executable, "-m", module, *args]
        self.log_path = settings.state_dir / f"{name}.log"
        self.pid_path = settings.state_dir / f"{name}.pid"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready_timeout: float = 60.0) -> WorkerProcess:
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("XIANGYUN_")}
        env.update(self.settings.describe(reveal=True))
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_path.write_text(f"{self.proc.pid}\n")
        self._wait_ready(ready_timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        url = f"http://127.0.0.1:{self.settings.metrics_port}/metrics"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"worker exited with {self.proc.returncode}; see {self.log_path}:\n"
                    + self.log_tail()
                )
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if b"xiangyun_worker_up 1.0" in resp.read():
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready after {timeout}s; see {self.log_path}")

    def metric(self, prefix: str, timeout: float = 2.0) -> float:
        """The sum of the worker's /metrics samples whose line starts with ``prefix`` (a
        name, or a name and ``{`` for its labelled samples); 0 while the worker starts or
        when it does not answer within ``timeout`` (busy)."""
        url = f"http://127.0.0.1:{self.settings.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                lines = resp.read().decode().splitlines()
        except OSError:
            return 0.0
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(prefix))

    def log_tail(self, lines: int = 20) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def peak_rss_mib(self) -> float:
        """Peak resident memory (VmHWM) of the running worker, MiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def kill(self) -> None:
        """SIGKILL: the crash the nothing-lost invariant must survive."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.pid_path.unlink(missing_ok=True)
        return self.proc.returncode

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
