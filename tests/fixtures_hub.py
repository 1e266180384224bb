"""Pytest plugin: `hub`, a local Hugging Face Hub (tests/hub_server.py) that huggingface_hub
is pointed at for the duration of one test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.hub_server import HubServer, point_huggingface_hub_at


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    """A running HubServer; huggingface_hub's endpoint, HF_HOME, cache and token settings point at it / a temp dir.

    No real token from this machine is sent (HF_TOKEN unset, implicit token disabled), offline mode is off,
    telemetry is off and the ETag (HEAD) timeout is 2 s. Pass `endpoint=hub.url` to HfApi / hf_hub_download as well.
    """
    from huggingface_hub.utils import _http

    server = HubServer().start()
    point_huggingface_hub_at(monkeypatch, server.url, tmp_path_factory.mktemp("hf_home"))
    _http.close_session()  # no pooled connection from an earlier test
    try:
        yield server
    finally:
        server.stop()
        _http.close_session()
