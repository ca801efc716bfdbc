"""What a test or the benchmark reads of a running worker: its /metrics (served here by a
plain HTTP server standing in for the worker's endpoint)."""

from __future__ import annotations

import dataclasses
import http.server
import socket
import threading
from collections.abc import Iterator

import pytest

from xiangyun.processes import WorkerProcess
from xiangyun.settings import Settings

METRICS = b"""# HELP xiangyun_ingest_records_total records
# TYPE xiangyun_ingest_records_total counter
xiangyun_ingest_records_total{kind="accepted",pool="population",reason="",unit="220100-GA"} 40.0
xiangyun_ingest_records_total{kind="rejected",pool="",reason="MALFORMED",unit=""} 2.0
xiangyun_ingest_records_created{kind="accepted",pool="population",reason="",unit="220100-GA"} 1.7e9
xiangyun_ingest_state_keys 38.0
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def endpoint() -> Iterator[int]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(METRICS)

        def log_message(self, *_a: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", _free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_a_metric_is_the_sum_of_its_samples(endpoint: int) -> None:
    w = WorkerProcess(dataclasses.replace(Settings.from_env({}), metrics_port=endpoint))
    assert w.metric("xiangyun_ingest_records_total{") == 42.0  # not the _created samples
    assert w.metric("xiangyun_ingest_state_keys") == 38.0
    assert w.metric("xiangyun_not_there") == 0.0


def test_a_worker_not_answering_reads_as_zero() -> None:
    w = WorkerProcess(dataclasses.replace(Settings.from_env({}), metrics_port=_free_port()))
    assert w.metric("xiangyun_ingest_records_total{", timeout=0.5) == 0.0
