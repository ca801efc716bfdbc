"""What a running worker reports on its /metrics, for tests that act at a moment of its work."""

from __future__ import annotations

import urllib.request

from xiangyun.processes import WorkerProcess

__all__ = ["records_committed"]


def records_committed(worker: WorkerProcess) -> float:
    """Records the worker has committed (xiangyun_ingest_records_total); 0 while it starts
    or while a busy worker does not answer within 2 s."""
    url = f"http://127.0.0.1:{worker.settings.metrics_port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            lines = resp.read().decode().splitlines()
    except OSError:
        return 0.0
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith("xiangyun_ingest_records_total{")
    )
