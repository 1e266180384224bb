"""The worker bridge with a real engine on the tiny models: commands in, coalesced events out."""

from __future__ import annotations

import threading
import time

import pytest
from PySide6.QtCore import Qt

from app.engine.chat_template import Message
from app.engine.sampling import SamplingParams
from app.engine.session import ModelSettings
from app.engine.speculative import SpecSettings
from app.service.engine_service import SERVER
from app.ui.bridge import FRAME_SECONDS, EngineBridge, GenerateRequest


@pytest.fixture()
def bridge(qtbot, tiny_target):
    b = EngineBridge()
    with qtbot.waitSignal(b.events.loaded, timeout=30000):
        b.load_target(ModelSettings(tiny_target, n_ctx=4096, n_threads=1))
    yield b
    assert b.shutdown()


def _request(n: int = 200) -> GenerateRequest:
    return GenerateRequest(messages=[Message("user", "the value of data")], sampling=SamplingParams(temperature=0.0),
                           max_tokens=n)


def test_generate_streams_coalesced_pieces_then_finishes(qtbot, bridge):
    batches: list[tuple[float, list]] = []
    bridge.events.pieces.connect(lambda rid, pieces: batches.append((time.monotonic(), pieces)))
    with qtbot.waitSignal(bridge.events.finished, timeout=60000) as done:
        rid = bridge.generate(_request(600))
    result_id, result = done.args
    assert result_id == rid
    text = "".join(p.text for _, batch in batches for p in batch)
    assert text == result.text
    # never more than ~60 batches per second, whatever the token rate
    assert len(batches) >= 1
    span = batches[-1][0] - batches[0][0]
    assert len(batches) <= span / FRAME_SECONDS + 3
    assert result.stats.generated_tokens > len(batches)  # several tokens per batch: coalescing happened
    assert not bridge.busy


def test_draft_model_pieces_are_marked_and_stats_report_acceptance(qtbot, bridge, tiny_draft):
    with qtbot.waitSignal(bridge.events.speculationChanged, timeout=30000,
                          check_params_cb=lambda mode: mode == "draft-model"):
        bridge.load_draft(ModelSettings(tiny_draft, n_ctx=4096, n_threads=1))
    bridge.set_spec(SpecSettings(draft_max=4))
    seen = []
    bridge.events.pieces.connect(lambda rid, pieces: seen.extend(pieces))
    with qtbot.waitSignal(bridge.events.finished, timeout=60000) as done:
        bridge.generate(_request(120))
    stats = done.args[1].stats
    assert stats.drafted > 0 and stats.accepted > 0
    assert any(p.from_draft for p in seen)


def test_incompatible_draft_is_refused_with_reason(qtbot, bridge, tiny_other_vocab):
    with qtbot.waitSignal(bridge.events.loadFailed, timeout=30000) as failed:
        bridge.load_draft(ModelSettings(tiny_other_vocab, n_ctx=512, n_threads=1))
    which, message = failed.args
    assert which == "draft"
    assert "refused" in message and "token" in message


def test_stop_mid_stream_keeps_text(qtbot, bridge):
    got = []

    def on_pieces(rid, pieces):
        got.extend(pieces)
        bridge.stop()

    bridge.events.pieces.connect(on_pieces)
    with qtbot.waitSignal(bridge.events.finished, timeout=60000) as done:
        bridge.generate(_request(4000))
    result = done.args[1]
    assert result.stats.stop_reason == "cancelled"
    assert 0 < result.stats.generated_tokens < 4000
    assert result.text.startswith("".join(p.text for p in got)[:1])


def test_errors_become_events_not_exceptions(qtbot, bridge, tiny_target):
    bad = GenerateRequest(messages=[Message("user", "the value of data " * 2000)], max_tokens=8)
    with qtbot.waitSignal(bridge.events.failed, timeout=60000) as failed:
        bridge.generate(bad)
    assert "context" in failed.args[1]
    with qtbot.waitSignal(bridge.events.loadFailed, timeout=30000) as lf:
        bridge.load_target(ModelSettings(tiny_target.with_name("missing.gguf")))
    assert "no such file" in lf.args[1] or "not found" in lf.args[1]


def test_shutdown_while_generating_is_prompt(qtbot, tiny_target):
    b = EngineBridge()
    with qtbot.waitSignal(b.events.loaded, timeout=30000):
        b.load_target(ModelSettings(tiny_target, n_ctx=4096, n_threads=1))
    with qtbot.waitSignal(b.events.pieces, timeout=30000):
        b.generate(_request(4000))
    t0 = time.monotonic()
    assert b.shutdown()
    assert time.monotonic() - t0 < 5


def test_stop_pressed_before_the_worker_starts_the_reply_ends_it_as_stopped(qtbot, bridge, tiny_draft):
    """Stop right after Send, while the worker is still busy with the previous command (loading a draft)."""
    bridge.load_draft(ModelSettings(tiny_draft, n_ctx=4096, n_threads=1))  # queued: the worker is busy with it
    with qtbot.waitSignal(bridge.events.finished, timeout=60000) as done:
        rid = bridge.generate(_request(4000))
        bridge.stop()
    result_id, result = done.args
    assert result_id == rid
    assert result.stats.stop_reason == "cancelled"
    assert result.stats.generated_tokens == 0 and result.text == ""
    assert not bridge.busy
    # the next reply is not stopped by the old Stop
    with qtbot.waitSignal(bridge.events.finished, timeout=60000) as done:
        bridge.generate(_request(20))
    assert done.args[1].stats.stop_reason == "max_tokens"


def test_events_reach_receiverless_callables_in_the_gui_thread(qtbot, bridge):
    """pytest-qt's waitSignal connects a plain bound method (no QObject receiver): it must run in the GUI
    thread, or its timeout timer is stopped from the wrong thread and a wait can hang forever."""
    import threading

    seen: list[str] = []

    class Plain:
        def on_finished(self, *_args: object) -> None:
            seen.append(threading.current_thread().name)

    plain = Plain()
    bridge.events.finished.connect(plain.on_finished)
    bridge.events.pieces.connect(lambda *_a: seen.append(threading.current_thread().name))
    with qtbot.waitSignal(bridge.events.finished, timeout=60000):
        bridge.generate(_request(20))
    qtbot.waitUntil(lambda: len(seen) >= 2, timeout=10000)
    assert set(seen) == {threading.main_thread().name}


def test_a_reply_waits_behind_another_request_and_says_so(qtbot, bridge):
    """A request of another client (the server's) runs first: the reply is queued behind it, then runs."""
    gate = threading.Event()

    def other_client(ctx) -> None:
        while not (gate.is_set() or ctx.cancel.is_set()):
            time.sleep(0.01)

    other = bridge.service.submit("server", other_client, label="another client")
    with qtbot.waitSignal(bridge.events.queued, timeout=30000) as queued:
        rid = bridge.generate(_request(10))
    assert queued.args[0] == rid and queued.args[1] >= 1 and queued.args[2] == "server"
    with qtbot.waitSignal(bridge.events.finished, timeout=60000) as done:
        gate.set()
    assert done.args[0] == rid and other.outcome == "done"


def test_another_clients_events_never_reach_the_gui_queue(qtbot, bridge, tiny_target):
    """The server's streamed pieces are no business of the window: only the queue depth is handed over."""
    handed: list = []
    bridge._event.connect(handed.append, Qt.ConnectionType.DirectConnection)  # what goes into the GUI queue

    def job(ctx):
        for _ in range(500):
            ctx.emit("piece", "x")

    ticket = bridge.service.submit(SERVER, job)
    assert ticket.wait(60) and ticket.outcome == "done"
    server_events = [e for e in handed if e.request_id == ticket.id]
    assert server_events and {e.kind for e in server_events} == {"queue"}
    with qtbot.waitSignal(bridge.events.loaded, timeout=30000):  # the window's own events still arrive
        bridge.load_target(ModelSettings(tiny_target, n_ctx=4096, n_threads=1))
