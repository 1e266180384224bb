"""`tandem serve --worker …`: the server's targets put their layers on workers, drafts stay on this machine —
the same replies as all-local, and a lost worker is a clear error, never a crash."""

from __future__ import annotations

import httpx

from app.library.local import LocalLibrary
from app.server.config import ServerConfig
from app.server.models import ModelCatalog, PresetSource
from app.server.runner import LocalServer
from tests.server.conftest import DRAFT, TARGET

ASK = {"model": TARGET, "messages": [{"role": "user", "content": "the value of data"}], "max_tokens": 24,
       "temperature": 0, "seed": 1}


def _serve(service, library_dir, **placement) -> LocalServer:
    server = LocalServer(service, ModelCatalog(LocalLibrary([library_dir], cache_path=None)), ServerConfig(port=0),
                         presets=PresetSource(None), **placement)
    server.start()
    return server


def _ask(server: LocalServer, **extra) -> httpx.Response:
    with httpx.Client(base_url=server.base_url.removesuffix("/v1"), timeout=120) as client:
        return client.post("/v1/chat/completions", json={**ASK, **extra})


def test_targets_on_two_workers_answer_as_on_this_machine_with_a_local_draft(service, library_dir, two_workers):
    local = _serve(service, library_dir)
    try:
        plain = _ask(local).json()["choices"][0]["message"]["content"]
    finally:
        assert local.stop()
    server = _serve(service, library_dir, workers=tuple(w.endpoint for w in two_workers))
    try:
        assert server.served.workers == tuple(w.endpoint for w in two_workers)
        on_workers = _ask(server)
        assert on_workers.status_code == 200, on_workers.text
        assert on_workers.json()["choices"][0]["message"]["content"] == plain
        drafted = _ask(server, draft_model=DRAFT)  # the draft loads on this machine, beside a target on workers
        assert drafted.status_code == 200, drafted.text
        body = drafted.json()
        assert body["choices"][0]["message"]["content"] == plain
        assert body["timings"]["draft_n"] > 0
    finally:
        assert server.stop()


def test_a_lost_worker_is_a_clear_error_and_the_server_goes_on(service, library_dir, start_worker):
    doomed, survivor = start_worker(), start_worker()
    server = _serve(service, library_dir, workers=(survivor.endpoint, doomed.endpoint))
    try:
        assert _ask(server).status_code == 200
        doomed.kill()
        lost = _ask(server)  # the next forward pass reaches the dead worker (or the load finds it gone)
        assert 500 <= lost.status_code < 600, lost.text
        assert str(doomed.endpoint) in lost.json()["error"]["message"]
        with httpx.Client(base_url=server.base_url.removesuffix("/v1"), timeout=30) as client:
            assert client.get("/health").json()["status"] == "ok"
    finally:
        assert server.stop()
