"""Workers (llama.cpp's RPC backend): the target split over two `tandem worker` processes on loopback, with
the tiny models — identical output, a worker killed mid-generation, unreachable and foreign workers, bad
addresses."""

from __future__ import annotations

import socket
import struct
import threading

import pytest

from app.engine.sampling import SamplingParams
from app.engine.session import Engine, ModelSettings
from app.engine.speculative import SpecSettings
from app.engine.workers import (
    BadEndpoint,
    Endpoint,
    WorkerError,
    WorkerLost,
    layer_split,
    parse_endpoint,
    probe,
)
from tests.fixtures_workers import free_port

GREEDY = SamplingParams(temperature=0.0)
PROMPT = "def return if else while for"


def _generate(engine: Engine, n: int = 40, on_piece=None):
    return engine.generate(engine.tokenize_prompt(PROMPT), GREEDY, max_tokens=n, on_piece=on_piece)


def _local_tokens(path, n: int = 40) -> list[int]:
    engine = Engine(history_enabled=False)
    try:
        engine.load_target(ModelSettings(path, n_ctx=512))
        return _generate(engine, n).tokens
    finally:
        engine.close()


def _worker_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "tandem-workers" and t.is_alive()]


# -- addresses and splits (no worker needed) ------------------------------------------------------------
@pytest.mark.parametrize("text", ["", "   ", "host", ":50052", "host:", "host:0", "host:65536", "host:abc",
                                  "host:-1", "[::1]:50052", "::1", "a b:50052", "ho_st:50052", "-host:1"])
def test_bad_addresses_are_refused_with_a_message(text):
    with pytest.raises(BadEndpoint) as e:
        parse_endpoint(text)
    assert "\n" not in str(e.value) and len(str(e.value)) > 10


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:50052", Endpoint("127.0.0.1", 50052)),
    (" Box.local:1 ", Endpoint("box.local", 1)),
    ("gpu-2:65535", Endpoint("gpu-2", 65535)),
])
def test_good_addresses_parse(text, expected):
    assert parse_endpoint(text) == expected
    assert str(parse_endpoint(text)) == f"{expected.host}:{expected.port}"


def test_layer_split_follows_the_shares():
    assert layer_split(30, (0, 1, 1)) == [0, 15, 15]
    assert layer_split(30, (1, 1, 1)) == [10, 10, 10]
    assert layer_split(4, (1, 0, 1)) == [2, 0, 2]
    assert layer_split(30, (0, 3, 1)) == [0, 23, 7] or layer_split(30, (0, 3, 1)) == [0, 22, 8]
    assert sum(layer_split(7, (0.3, 0.5, 0.2))) == 7
    with pytest.raises(ValueError):
        layer_split(4, (0, 0))


# -- unreachable or foreign workers: refused before anything is loaded ------------------------------------
def test_an_unreachable_worker_is_refused_before_anything_is_allocated(rpc, tiny_target):
    dead = Endpoint("127.0.0.1", free_port())
    threads_before = _worker_threads()
    engine = Engine(history_enabled=False)
    with pytest.raises(WorkerError, match=f"{dead}.*unreachable"):
        engine.load_target(ModelSettings(tiny_target, n_ctx=256, workers=(dead,)))
    assert not engine.loaded
    assert _worker_threads() == threads_before  # llama.cpp was never asked to connect


def _one_shot_server(answer) -> tuple[Endpoint, threading.Thread]:
    """A TCP server on a free loopback port that takes one connection and hands it to `answer(conn)`."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def serve() -> None:
        conn, _ = srv.accept()
        with conn, srv:
            answer(conn)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return Endpoint("127.0.0.1", srv.getsockname()[1]), t


def _fake_server(version: tuple[int, int, int]) -> tuple[Endpoint, threading.Thread]:
    """Answers HELLO with another protocol version (what an older Tandem's worker does)."""

    def hello(conn: socket.socket) -> None:
        cmd, size = struct.unpack("<BQ", conn.recv(9))
        conn.recv(size)
        conn.sendall(struct.pack("<Q", 28) + bytes([*version, 0]) + bytes(24))
        conn.recv(1)

    return _one_shot_server(hello)


def test_a_worker_of_another_version_is_refused_with_both_versions(rpc, tiny_target):
    endpoint, server = _fake_server((6, 2, 0))
    engine = Engine(history_enabled=False)
    with pytest.raises(WorkerError, match=r"6\.2\.0.*7\.0\.0"):
        engine.load_target(ModelSettings(tiny_target, n_ctx=256, workers=(endpoint,)))
    assert not engine.loaded
    server.join(5)


def test_something_else_on_the_port_is_not_taken_for_a_worker():
    endpoint, _ = _one_shot_server(lambda conn: conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n"))
    with pytest.raises(WorkerError, match="does not speak"):
        probe(endpoint, timeout=5)


# -- two real workers ----------------------------------------------------------------------------------
def test_probe_shows_the_devices_and_their_free_memory(two_workers):
    for w in two_workers:
        info = probe(w.endpoint)
        assert info.version == (7, 0, 0)
        assert info.devices and all(0 < d.free <= d.total for d in info.devices)
        assert str(w.endpoint) in info.describe() and "free of" in info.describe()


def test_the_target_split_over_two_workers_generates_what_it_does_locally(two_workers, tiny_target, tiny_draft):
    local = _local_tokens(tiny_target)
    engine = Engine(history_enabled=False)
    try:
        engine.load_target(ModelSettings(tiny_target, n_ctx=512, workers=tuple(w.endpoint for w in two_workers)))
        placement = engine.target_placement
        assert placement is not None and placement.layers == (0, 2, 2)  # 4 layers, all on the workers
        assert all(b > 0 for b in placement.bytes[1:])
        assert _generate(engine).tokens == local
        # the draft stays on this machine; speculation gives the same greedy text
        engine.set_spec(SpecSettings(draft_max=4))
        engine.load_draft(ModelSettings(tiny_draft, n_ctx=512))
        engine.reset_cache()
        result = _generate(engine)
        assert result.tokens == local
        assert result.stats.drafted > 0
    finally:
        engine.close()


def test_the_split_can_keep_layers_on_this_machine(two_workers, tiny_target):
    local = _local_tokens(tiny_target)
    engine = Engine(history_enabled=False)
    try:
        engine.load_target(ModelSettings(tiny_target, n_ctx=512, workers=tuple(w.endpoint for w in two_workers),
                                         split=(1, 1, 0)))
        assert engine.target_placement.layers == (2, 2, 0)
        assert _generate(engine).tokens == local
    finally:
        engine.close()


def test_bad_splits_are_refused(two_workers, tiny_target):
    engine = Engine(history_enabled=False)
    workers = tuple(w.endpoint for w in two_workers)
    for kwargs, needle in (({"split": (1, 1)}, "needs 3 shares"), ({"split": (0, 0, 0)}, "positive"),
                           ({"workers": workers[:1] * 2}, "twice"), ({"n_gpu_layers": 3}, "GPU layers to 0")):
        with pytest.raises(ValueError, match=needle):
            engine.load_target(ModelSettings(tiny_target, n_ctx=256, **{"workers": workers, **kwargs}))
    assert not engine.loaded


def test_a_worker_killed_mid_generation_is_a_clear_error_and_the_text_so_far_is_kept(start_worker, tiny_target):
    doomed, survivor = start_worker(), start_worker()
    local = _local_tokens(tiny_target, 60)
    engine = Engine(history_enabled=False)
    engine.load_target(ModelSettings(tiny_target, n_ctx=512, workers=(survivor.endpoint, doomed.endpoint)))
    pieces: list[str] = []

    def on_piece(piece) -> None:
        pieces.append(piece.text)
        if len(pieces) == 5:
            doomed.kill()

    with pytest.raises(WorkerLost) as lost:
        _generate(engine, 60, on_piece=on_piece)
    message = str(lost.value)
    assert str(doomed.endpoint) in message and str(survivor.endpoint) not in message
    assert "kept" in message and "\n" not in message
    assert len(pieces) >= 5  # what came before the loss reached the caller
    assert not engine.loaded  # unloaded: nothing can use the lost model again

    # reload on this machine only: the same text as ever
    engine.load_target(ModelSettings(tiny_target, n_ctx=512))
    assert _generate(engine, 60).tokens == local
    # the surviving worker was let go: it serves a new load
    engine.load_target(ModelSettings(tiny_target, n_ctx=512, workers=(survivor.endpoint,)))
    assert _generate(engine, 60).tokens == local
    engine.close()
