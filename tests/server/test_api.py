"""The OpenAI-compatible server, end to end: real uvicorn, real httpx, the tiny models on a real engine."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace

import httpx
import pytest

from app.library.local import LocalLibrary
from app.server.config import ServerConfig, ServerError
from app.server.guard import INTERNAL_ERROR
from app.server.models import ModelCatalog
from app.server.runner import LocalServer
from app.service.engine_service import OUTCOMES
from app.store.db import open_database
from app.store.settings import HISTORY_KEY, SettingsStore, model_key
from tests.server.conftest import DRAFT, OTHER, TARGET
from tests.tiny_models import TARGET as TARGET_SPEC
from tests.tiny_models import write_tiny_model

GREEDY = {"temperature": 0, "seed": 1}


def chat(client, content="the value of data", **extra):
    return client.post("/v1/chat/completions",
                       json={"model": TARGET, "messages": [{"role": "user", "content": content}], "max_tokens": 24,
                             **GREEDY, **extra})


def sse(response) -> list[dict | str]:
    out: list[dict | str] = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            payload = line[len("data: "):]
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def test_health_and_models(client, service):
    assert client.get("/health").json()["status"] == "ok"
    models = client.get("/v1/models").json()
    ids = [m["id"] for m in models["data"]]
    assert models["object"] == "list" and TARGET in ids and DRAFT in ids
    assert all(m["state"] == "not-loaded" for m in models["data"])
    assert client.get(f"/v1/models/{TARGET}").json()["id"] == TARGET
    assert client.get("/v1/models/nope").status_code == 404


def test_chat_completion_whole_with_usage_and_both_stats_shapes(client):
    r = chat(client)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == TARGET
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"]
    assert choice["finish_reason"] in ("stop", "length")
    usage = body["usage"]
    assert usage["completion_tokens"] > 0 and usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert body["stats"]["tokens_per_second"] > 0 and "time_to_first_token" in body["stats"]
    assert body["timings"]["predicted_n"] == usage["completion_tokens"] and body["timings"]["draft_n"] == 0
    # the model was loaded just in time and is listed as loaded now
    states = {m["id"]: m["state"] for m in client.get("/v1/models").json()["data"]}
    assert states[TARGET] == "loaded"


def test_chat_stream_matches_whole_reply_and_include_usage_adds_a_final_usage_chunk(client):
    whole = chat(client).json()
    with client.stream("POST", "/v1/chat/completions",
                       json={"model": TARGET, "messages": [{"role": "user", "content": "the value of data"}],
                             "max_tokens": 24, "stream": True, "stream_options": {"include_usage": True},
                             **GREEDY}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = sse(r)
    assert events[-1] == "[DONE]"
    chunks = [e for e in events if isinstance(e, dict)]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == whole["choices"][0]["message"]["content"]
    final = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(final) == 1 and "timings" in final[0] and "stats" in final[0]
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    assert all("usage" in c and c["usage"] is None for c in chunks[:-1])  # OpenAI: null until the usage chunk
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert usage_chunk["usage"][key] == whole["usage"][key]
    assert usage_chunk["usage"]["prompt_tokens_details"]["cached_tokens"] > 0  # the same prompt: reused


def test_completions_whole_and_streamed(client):
    body = {"model": TARGET, "prompt": "the value of", "max_tokens": 16, **GREEDY}
    whole = client.post("/v1/completions", json=body).json()
    assert whole["object"] == "text_completion" and whole["choices"][0]["text"]
    with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as r:
        events = sse(r)
    chunks = [e for e in events if isinstance(e, dict)]
    assert "".join(c["choices"][0]["text"] for c in chunks) == whole["choices"][0]["text"]
    assert "usage" not in chunks[-1]  # no include_usage: no usage chunk


def test_stop_strings_end_the_reply_before_them(client):
    text = chat(client, max_tokens=40).json()["choices"][0]["message"]["content"]
    stop = text[len(text) // 2:len(text) // 2 + 3]
    assert stop.strip()
    r = chat(client, max_tokens=40, stop=[stop]).json()
    assert r["choices"][0]["finish_reason"] == "stop"
    cut = r["choices"][0]["message"]["content"]
    assert stop not in cut and text.startswith(cut) and len(cut) < len(text)


def test_per_request_draft_model_and_settings(client):
    plain = chat(client, max_tokens=40).json()
    drafted = chat(client, max_tokens=40, draft_model=DRAFT, draft_max=4, adaptive=False).json()
    assert drafted["choices"][0]["message"]["content"] == plain["choices"][0]["message"]["content"]  # exact
    assert drafted["timings"]["draft_n"] > 0 and drafted["stats"]["total_draft_tokens_count"] > 0
    assert drafted["stats"]["accepted_draft_tokens_count"] == drafted["timings"]["draft_n_accepted"]
    assert drafted["stats"]["draft_model"] == DRAFT
    history = chat(client, max_tokens=40, draft_source="history").json()
    assert history["choices"][0]["message"]["content"] == plain["choices"][0]["message"]["content"]
    r = chat(client, draft_model=OTHER)
    assert r.status_code == 400 and r.json()["error"]["code"] == "incompatible_draft"
    assert chat(client, draft_model="tiny-org/none").status_code == 404
    assert chat(client, draft_max=0).status_code == 400
    assert chat(client, draft_source="history", draft_model=DRAFT).status_code == 400


def test_without_draft_fields_the_pairs_remembered_preset_is_used(client, library_dir, db_path):
    target = library_dir / "tiny-org/tiny-repo/tiny-target.gguf"
    draft = library_dir / "tiny-org/tiny-repo/tiny-draft.gguf"
    store = SettingsStore(open_database(db_path))
    store.set_model_settings(model_key(target), {"draft_source": "draft-model", "draft_path": str(draft)})
    store.set_pair_settings(model_key(target), model_key(draft), {"draft_max": 3, "adaptive": False})
    store.set_pair_settings(model_key(target), HISTORY_KEY, {"draft_max": 5})
    r = chat(client, max_tokens=40).json()
    assert r["stats"]["total_draft_tokens_count"] > 0
    assert r["stats"]["draft_model"] == DRAFT  # the preset's draft, named though the request named none
    off = chat(client, max_tokens=40, draft_source="off").json()
    assert off["timings"]["draft_n"] == 0
    assert off["choices"][0]["message"]["content"] == r["choices"][0]["message"]["content"]


def test_jit_load_and_idle_ttl_unload(start_server):
    server, _ = start_server(ttl_seconds=1)
    with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=60) as c:
        assert c.get("/health").json()["loaded"] == []
        assert chat(c).status_code == 200
        assert c.get("/health").json()["loaded"] == [TARGET]
        deadline = time.monotonic() + 30
        while c.get("/health").json()["loaded"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert c.get("/health").json()["loaded"] == []
        assert chat(c).status_code == 200  # loaded again on demand


def test_two_clients_are_served_in_order(client, server):
    chat(client)  # loaded
    order: list[str] = []
    lock = threading.Lock()

    def run(name: str, n: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=60) as c:
            with c.stream("POST", "/v1/chat/completions",
                          json={"model": TARGET, "messages": [{"role": "user", "content": "the value of data"}],
                                "max_tokens": n, "stream": True, **GREEDY}) as r:
                for line in r.iter_lines():
                    if '"content"' in line and '"content": ""' not in line:
                        with lock:
                            if not order or order[-1] != name:
                                order.append(name)

    first = threading.Thread(target=run, args=("first", 3000))
    first.start()
    deadline = time.monotonic() + 30
    while not order and time.monotonic() < deadline:
        time.sleep(0.01)
    second = threading.Thread(target=run, args=("second", 20))
    second.start()
    depth_seen = 0
    while second.is_alive() and first.is_alive():
        depth_seen = max(depth_seen, client.get("/health").json()["queue_depth"])
        time.sleep(0.01)
    first.join(60)
    second.join(60)
    assert order == ["first", "second"]  # never interleaved: the second waited for the first
    assert depth_seen >= 1


def test_client_disconnect_cancels_the_generation(client, server, service):
    chat(client)
    ends: list = []
    service.subscribe(lambda e: ends.append(e) if e.request_kind == "server" and e.kind in OUTCOMES else None)
    with client.stream("POST", "/v1/chat/completions",
                       json={"model": TARGET, "messages": [{"role": "user", "content": "the value of data"}],
                             "max_tokens": 4000, "stream": True, **GREEDY}) as r:
        for n, _line in enumerate(r.iter_lines()):
            if n > 6:
                break
    deadline = time.monotonic() + 30
    while not ends and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [e.kind for e in ends] == ["cancelled"]
    assert 0 < ends[0].data[0].stats.generated_tokens < 4000  # stopped, not run to the end
    assert chat(client).status_code == 200  # and still serving


def test_api_key_required_off_loopback_and_checked_when_set(start_server):
    with pytest.raises(ServerError, match="API key"):
        ServerConfig(host="0.0.0.0").validate()
    ServerConfig(host="0.0.0.0", api_key="k").validate()
    server, records = start_server(api_key="sekrit")
    base = f"http://127.0.0.1:{server.port}"
    r = httpx.get(f"{base}/v1/models")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(f"{base}/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(f"{base}/v1/models", headers={"Authorization": "Bearer sekrit"}).status_code == 200
    assert any(rec.status == 401 for rec in records)


def test_cors_is_off_by_default_and_follows_the_allow_list(client, start_server):
    preflight = {"Origin": "http://evil.test", "Access-Control-Request-Method": "POST"}
    r = client.options("/v1/chat/completions", headers=preflight)
    assert "access-control-allow-origin" not in r.headers
    assert "access-control-allow-origin" not in client.get("/v1/models", headers={"Origin": "http://evil.test"}).headers
    server, _ = start_server(cors_origins=("http://good.test",))
    base = f"http://127.0.0.1:{server.port}"
    ok = httpx.get(f"{base}/v1/models", headers={"Origin": "http://good.test"})
    assert ok.headers["access-control-allow-origin"] == "http://good.test"
    assert "access-control-allow-origin" not in httpx.get(f"{base}/v1/models", headers={"Origin": "http://evil.test"}).headers


@pytest.mark.parametrize("body, status, param", [
    (b"{not json", 400, None),
    (b"[1, 2]", 400, None),
    (b'{"messages": [{"role": "user", "content": "hi"}]}', 400, "model"),
    (b'{"model": "nope", "messages": [{"role": "user", "content": "hi"}]}', 404, "model"),
    (json.dumps({"model": TARGET}).encode(), 400, "messages"),
    (json.dumps({"model": TARGET, "messages": []}).encode(), 400, "messages"),
    (json.dumps({"model": TARGET, "messages": [{"role": "robot", "content": "x"}]}).encode(), 400, "messages"),
    (json.dumps({"model": TARGET, "messages": [{"role": "user", "content": 5}]}).encode(), 400, "messages"),
    (json.dumps({"model": TARGET, "messages": [{"role": "user", "content": "x"}], "temperature": 99}).encode(), 400, "temperature"),
    (json.dumps({"model": TARGET, "messages": [{"role": "user", "content": "x"}], "max_tokens": "ten"}).encode(), 400, "max_tokens"),
    (json.dumps({"model": TARGET, "messages": [{"role": "user", "content": "x"}], "max_tokens": 10**30}).encode(), 400, "max_tokens"),
    (json.dumps({"model": TARGET, "messages": [{"role": "user", "content": "x"}], "n": 2}).encode(), 400, "n"),
    (json.dumps({"model": TARGET, "messages": [{"role": "user", "content": "x"}], "bogus": 1}).encode(), 400, "bogus"),
    (json.dumps({"model": TARGET, "messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": True}}).encode(), 400, "stream_options"),
    (json.dumps({"model": TARGET, "messages": [{"role": "user", "content": "x"}], "stop": ["a"] * 9}).encode(), 400, "stop"),
    (json.dumps({"model": TARGET, "messages": [{"role": "user", "content": "x"}], "seed": True}).encode(), 400, "seed"),
    (json.dumps({"model": TARGET, "messages": [{"role": "user", "content": "x"}], "frequency_penalty": 1.5}).encode(), 400, "frequency_penalty"),
    (b'{"model": "x", "temperature": NaN}', 400, None),
])
def test_bad_requests_get_openai_error_objects(client, body, status, param):
    r = client.post("/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["message"] and err["type"]
    if param is not None:
        assert err["param"] == param


def test_limits_and_unknown_routes(client):
    big = b'{"model": "x", "prompt": "' + b"a" * (5 * 1024 * 1024) + b'"}'
    r = client.post("/v1/completions", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    long_prompt = {"model": TARGET, "prompt": "the value of data " * 3000, "max_tokens": 4}
    r = client.post("/v1/completions", json=long_prompt)
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    assert client.get("/v1/nothing").status_code == 404 and "error" in client.get("/v1/nothing").json()
    assert client.get("/v1/chat/completions").status_code == 405
    assert client.post("/v1/completions", json={"model": TARGET, "prompt": "ok", "max_tokens": 2}).status_code == 200


def test_a_post_that_is_not_json_gets_415(client, server):
    """A web page may send a "simple" POST (text/plain, a form) to the port without asking: refused unread."""
    body = json.dumps({"model": TARGET, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        r = client.post("/v1/chat/completions", content=body, headers={"Content-Type": content_type})
        assert r.status_code == 415, (content_type, r.text)
        assert r.json()["error"]["code"] == "unsupported_media_type" and "application/json" in r.json()["error"]["message"]
    assert client.post("/v1/completions", content=b'{"model": "x", "prompt": "y"}').status_code == 415  # none sent
    ok = client.post("/v1/chat/completions", content=body, headers={"Content-Type": "application/json; charset=utf-8"})
    assert ok.status_code == 200, ok.text


def test_on_loopback_only_this_computers_names_pass_as_the_host(client, server, start_server):
    """DNS rebinding: a site's own name resolving to 127.0.0.1 arrives as its Host, and is refused."""
    for host in ("evil.test", f"evil.test:{server.port}", "127.0.0.1.evil.test", "192.168.1.5"):
        for r in (client.get("/v1/models", headers={"Host": host}),
                  client.post("/v1/chat/completions", headers={"Host": host},
                              json={"model": TARGET, "messages": [{"role": "user", "content": "hi"}]})):
            assert r.status_code == 400, (host, r.text)
            assert r.json()["error"]["code"] == "invalid_host"
    for host in (f"127.0.0.1:{server.port}", "localhost", f"localhost:{server.port}", f"[::1]:{server.port}",
                 "LOCALHOST."):
        assert client.get("/v1/models", headers={"Host": host}).status_code == 200, host
    # off loopback any Host passes: the API key keeps others out
    wide, _ = start_server(host="0.0.0.0", api_key="k")
    base = f"http://127.0.0.1:{wide.port}"
    named = httpx.get(f"{base}/v1/models", headers={"Host": "my-machine.lan", "Authorization": "Bearer k"})
    assert named.status_code == 200
    assert httpx.get(f"{base}/v1/models", headers={"Host": "my-machine.lan"}).status_code == 401


def test_a_chat_template_that_refuses_the_messages_is_a_400(client, library_dir):
    template = ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
                "{% endif %}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
                "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
    write_tiny_model(library_dir / "tiny-org/tiny-repo/tiny-strict.gguf",
                     replace(TARGET_SPEC, name="tiny-strict", chat_template=template))
    body = {"model": "tiny-org/tiny-repo/tiny-strict", "max_tokens": 4,
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]}
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "messages" and "System role not supported" in err["message"]
    body["messages"] = body["messages"][1:]
    assert client.post("/v1/chat/completions", json=body).status_code == 200  # the same model, allowed messages


class _BrokenLibrary(LocalLibrary):
    """A library whose scan fails with an internal error (what no request can cause on purpose)."""

    def scan(self, *args, **kwargs):
        raise RuntimeError("secret detail from /home/someone/internals")


def test_an_internal_error_is_a_generic_500_and_one_log_line(service, library_dir, capfd, caplog):
    records: list = []
    server = LocalServer(service, ModelCatalog(_BrokenLibrary([library_dir], cache_path=None)),
                         ServerConfig(port=0), on_record=records.append)
    server.start()
    try:
        capfd.readouterr()
        with caplog.at_level("ERROR", logger="tandem.server"):
            r = httpx.get(f"http://127.0.0.1:{server.port}/v1/models", timeout=30)
            assert r.status_code == 500
            assert r.json()["error"]["message"] == INTERNAL_ERROR and "secret" not in r.text
            assert httpx.get(f"http://127.0.0.1:{server.port}/health", timeout=30).status_code == 200  # still serving
        lines = [rec.getMessage() for rec in caplog.records if rec.name == "tandem.server"]
        assert len(lines) == 1 and "internal error on GET /v1/models" in lines[0] and "\n" not in lines[0]
        assert "Traceback" not in capfd.readouterr().err  # uvicorn printed nothing of it
        assert [rec.status for rec in records if rec.path == "/v1/models"] == [500]
    finally:
        assert server.stop()


def test_the_idle_ttl_counts_from_when_the_request_ended(client, server):
    chat(client)  # loaded
    with client.stream("POST", "/v1/chat/completions",
                       json={"model": TARGET, "messages": [{"role": "user", "content": "the value of data"}],
                             "max_tokens": 600, "stream": True, **GREEDY}) as r:
        lines = r.iter_lines()
        for line in lines:
            if '"content"' in line and '"content": ""' not in line:
                break
        generating = time.monotonic()  # the request has been running since before this
        for _ in lines:
            pass
    ended = time.monotonic()
    assert ended > generating
    # idle for less than the TTL since it ended, though longer since it started
    margin = (ended - generating) / 2
    assert not server.served.expired(now=ended + server.served.ttl_seconds - margin)
    assert server.served.expired(now=ended + server.served.ttl_seconds + 1)
