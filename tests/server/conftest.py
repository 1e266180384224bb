"""A real uvicorn server on a free loopback port, on a real engine service, with the tiny models."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from app.library.local import LocalLibrary
from app.server.config import ServerConfig
from app.server.models import ModelCatalog, PresetSource
from app.server.runner import LocalServer
from app.service.engine_service import EngineService
from app.store.db import open_database
from app.store.settings import SettingsStore


@pytest.fixture()
def library_dir(tmp_path: Path, tiny_models: dict[str, Path]) -> Path:
    folder = tmp_path / "models"
    repo = folder / "tiny-org" / "tiny-repo"
    repo.mkdir(parents=True)
    for p in tiny_models.values():
        shutil.copy(p, repo / p.name)
    return folder


@pytest.fixture()
def service():
    s = EngineService()
    yield s
    assert s.shutdown(20)


@pytest.fixture()
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "tandem.sqlite3"


@pytest.fixture()
def start_server(service, library_dir, db_path):
    """start_server(**ServerConfig fields) -> (LocalServer, records); stopped after the test."""
    started: list[LocalServer] = []

    def start(**config) -> tuple[LocalServer, list]:
        records: list = []
        catalog = ModelCatalog(LocalLibrary([library_dir], cache_path=None))
        presets = PresetSource(lambda: SettingsStore(open_database(db_path)))
        server = LocalServer(service, catalog, ServerConfig(**{"port": 0, **config}), presets=presets,
                             on_record=records.append)
        server.start()
        started.append(server)
        return server, records

    yield start
    for server in started:
        assert server.stop()


@pytest.fixture()
def server(start_server):
    return start_server()[0]


@pytest.fixture()
def client(server):
    with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=60) as c:
        yield c


TARGET = "tiny-org/tiny-repo/tiny-target"
DRAFT = "tiny-org/tiny-repo/tiny-draft"
OTHER = "tiny-org/tiny-repo/tiny-other-vocab"
