"""Installed, not only cloned: the wheel carries the schemas, the starter catalog and the stack
files, and a fresh virtual environment outside the repository runs ``xiangyun`` from it.

Builds the wheel from a copy of the sources (the checkout gets no ``build/`` folder), installs
it into a venv in a temporary folder (``--system-site-packages``: the dependencies are the
ones already installed, nothing is downloaded but the build backend), and runs the command
there. About half a minute.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DATA = {
    "schemas": "xiangyun_data/schemas",
    "catalog": "xiangyun_data/catalog",
    "policy": "xiangyun_data/policy",
}
DATA_FILES = {".avsc", ".yaml", ".yml", ".json"}
SKIP = shutil.ignore_patterns(
    ".git", ".stack", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".venv", "tests"
)

pytestmark = pytest.mark.slow

CHECK = """
import json, sys
from pathlib import Path
import xiangyun_data, xiangyun.stack
from streams.catalog.model import Catalog
from xiangyun_data import schema_dir
from streams.wire.envelope import ENVELOPE_SCHEMA_FILE
from xiangyun.settings import Settings
from streams.ingest import _pool_table, pool_state

site = Path(sys.argv[1])
assert pool_state.NATIVE and Path(_pool_table.__file__).is_relative_to(site), _pool_table
s = Settings.from_env()
for path in (s.schema_dir, s.catalog_dir, schema_dir(), xiangyun.stack.POM):
    assert path.is_relative_to(site), path
assert xiangyun_data.CHECKOUT is None
assert s.state_dir == Path.cwd() / ".stack", s.state_dir
envelope = json.loads((s.schema_dir / ENVELOPE_SCHEMA_FILE).read_text(encoding="utf-8"))
catalog = Catalog.from_dir(s.catalog_dir)
assert xiangyun.stack.POM.is_file() and xiangyun.stack.PROMETHEUS_CONFIG.is_file()
print(envelope["name"], len(catalog))
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XIANGYUN_", "PYTHON"))}
    return {**env, **extra}


def _run(argv: list[str | Path], cwd: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        env=_env(**extra),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"{argv}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src") / "xiangyun"
    shutil.copytree(ROOT, src, ignore=SKIP)
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--wheel", "--outdir", out, src], cwd=src)
    (found,) = out.glob("xiangyun-*.whl")
    return found


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", "--system-site-packages", home / "venv"], cwd=home)
    python = home / "venv" / "bin" / "python"
    pip = [python, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", wheel]
    _run(pip, cwd=home, PIP_DISABLE_PIP_VERSION_CHECK="1")
    return home / "venv"


def test_the_wheel_holds_every_schema_and_catalog_file(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder, packaged in DATA.items():
        files = [p for p in (ROOT / folder).rglob("*") if p.suffix in DATA_FILES]
        assert files, folder
        for path in files:
            inside = f"{packaged}/{path.relative_to(ROOT / folder).as_posix()}"
            assert inside in names, f"{path.relative_to(ROOT)} is not in the wheel"
    assert "xiangyun_data/stack/pom.xml" in names
    # the pool state's C table, compiled for this Python
    assert any(n.startswith("streams/ingest/_pool_table.") and n.endswith(".so") for n in names)
    assert "monitoring/prometheus.yml" in names and "monitoring/alerts.yml" in names


def test_the_installed_command_runs_outside_the_repository(venv: Path) -> None:
    cwd = venv.parent
    xiangyun = venv / "bin" / "xiangyun"
    assert "catalog" in _run([xiangyun, "--help"], cwd=cwd).stdout
    assert "--all" in _run([xiangyun, "catalog", "list", "--help"], cwd=cwd).stdout
    config = _run([xiangyun, "config"], cwd=cwd).stdout
    site = next((venv / "lib").glob("python3*/site-packages"))
    assert f"XIANGYUN_SCHEMA_DIR={site / 'xiangyun_data' / 'schemas' / 'avro'}" in config
    assert f"XIANGYUN_STATE_DIR={cwd / '.stack'}" in config


def test_the_installed_package_finds_its_schemas_and_catalog(venv: Path) -> None:
    site = next((venv / "lib").glob("python3*/site-packages"))
    done = _run([venv / "bin" / "python", "-c", CHECK, site], cwd=venv.parent)
    name, entries = done.stdout.split()
    assert name.endswith("Envelope") and int(entries) > 0, done.stdout
