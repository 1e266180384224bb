"""The window tests' data folder: the tiny models in a library folder, TANDEM_DATA_DIR in the test's folder."""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture()
def env(tmp_path, tiny_models, monkeypatch):
    monkeypatch.setenv("TANDEM_DATA_DIR", str(tmp_path / "data"))
    models = tmp_path / "models" / "tiny-org" / "tiny-repo"
    models.mkdir(parents=True)
    for p in tiny_models.values():
        shutil.copy(p, models / p.name)
    return {"db": tmp_path / "chats.sqlite3", "models": tmp_path / "models", "tmp": tmp_path}
