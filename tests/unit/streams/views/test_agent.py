"""register_materializer wires a service and a lag timer into a Faust app (nothing runs)."""

from __future__ import annotations

from pathlib import Path

from streams.app import create_app
from streams.kafka.config import StreamsConfig
from streams.views import Materializer, MaterializerService, register_materializer
from streams.wire.codec import SchemaRegistry

ROOT = Path(__file__).resolve().parents[4]


def test_register_materializer_adds_a_service_and_a_timer() -> None:
    config = StreamsConfig(app_id="unit-views", schema_dir=ROOT / "schemas" / "avro")
    app = create_app(config)
    m = Materializer(config, SchemaRegistry.from_dir(config.schema_dir))
    service = register_materializer(app, config, m)
    assert isinstance(service, MaterializerService)
    assert service.materializer is m
    # Faust keeps an app's timers and tasks in _app_tasks (no public accessor)
    assert any(t.__name__ == "report_view_lag" for t in app._app_tasks)
