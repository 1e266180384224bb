"""A chat turn sent while a server request generates waits in the engine's queue, says so, then runs."""

from __future__ import annotations

import threading
import time

from app.engine.sampling import SamplingParams
from app.engine.session import ModelSettings
from app.store.chats import ChatStore
from app.store.db import open_database
from app.ui.bridge import EngineBridge
from app.ui.chat_view import ChatView


def test_a_chat_turn_waits_behind_a_server_request_and_says_so(qtbot, tmp_path, tiny_target):
    bridge = EngineBridge()
    store = ChatStore(open_database(tmp_path / "chats.sqlite3"))
    view = ChatView(store, bridge, lambda: (SamplingParams(temperature=0.0), 16))
    qtbot.addWidget(view)
    try:
        with qtbot.waitSignal(bridge.events.loaded, timeout=60000):
            bridge.load_target(ModelSettings(tiny_target, n_ctx=2048, n_threads=1))
        gate = threading.Event()

        def server_request(ctx) -> None:  # stands in for a request the local server is answering
            while not (gate.is_set() or ctx.cancel.is_set()):
                time.sleep(0.01)

        bridge.service.submit("server", server_request, label="POST /v1/chat/completions")
        assert view.send("hello there")
        qtbot.waitUntil(lambda: "local server" in view.notice.text() and not view.notice.isHidden(), timeout=20000)
        assert view.is_generating()  # Stop still works on a waiting turn
        with qtbot.waitSignal(view.generationFinished, timeout=60000):
            gate.set()
        assert view.notice.isHidden()
        reply = store.get_messages(view.current_conversation_id())[-1]
        assert reply.role == "assistant" and reply.status == "complete" and reply.content
    finally:
        assert bridge.shutdown()
