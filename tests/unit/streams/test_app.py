"""The Faust app: its files go under the state directory, whatever the app id."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from streams.app import create_app
from streams.kafka.config import StreamsConfig


def test_the_apps_data_lives_under_the_state_directory(tmp_path: Path) -> None:
    config = dataclasses.replace(StreamsConfig(), state_dir=tmp_path, app_id="odd{conf}-id")
    app = create_app(config)
    # not "<cwd>/odd{conf}-id-data": Faust formats the path, the braces stay literal
    assert app.conf.datadir == tmp_path / "faust" / "odd{conf}-id"
