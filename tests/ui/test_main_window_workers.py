"""The window with Settings → Workers: the target loads onto the workers, a worker lost mid-reply keeps the
reply so far, the window shows the model as unloaded and loads it on this machine in one click."""

from __future__ import annotations

from PySide6.QtWidgets import QMessageBox

from app.store.settings import model_key
from tests.ui.test_main_window import open_window
from tests.ui.window_helpers import close_window, model_named


def test_a_worker_lost_mid_reply_keeps_the_text_and_offers_this_machine(qtbot, env, start_worker):
    doomed, survivor = start_worker(), start_worker()
    w = open_window(qtbot, env)
    w.settings.set("workers", [str(survivor.endpoint), str(doomed.endpoint)])
    w.settings.set("workers_enabled", True)
    target = model_named(w, "tiny-target")
    w.settings.set_model_settings(model_key(target.path), {"n_ctx": 1024, "threads": 1, "temperature": 0.0,
                                                           "max_tokens": 400})
    with qtbot.waitSignal(w.bridge.events.loaded, timeout=60000):
        w.load_model(target)
    qtbot.waitUntil(lambda: w.chat.model_ready(), timeout=10000)
    assert w._target_on_workers

    w.bridge.events.pieces.connect(lambda *_: doomed.kill() if doomed.proc.poll() is None else None)
    with qtbot.waitSignal(w.bridge.events.targetLost, timeout=60000) as lost:
        assert w.chat.send("def return if else while for")
    assert str(doomed.endpoint) in lost.args[0]
    qtbot.waitUntil(lambda: not w.chat.is_generating(), timeout=20000)
    reply = w.chats.get_messages(w.chat.current_conversation_id())[-1]
    assert reply.role == "assistant" and reply.content  # what came before the loss is kept
    assert w.target is None and not w.chat.model_ready()

    box = w.local_load_box
    assert box is not None and box.isVisible()
    here = next(b for b in box.buttons() if box.buttonRole(b) == QMessageBox.ButtonRole.AcceptRole)
    with qtbot.waitSignal(w.bridge.events.loaded, timeout=60000):
        here.click()
    qtbot.waitUntil(lambda: w.chat.model_ready(), timeout=10000)
    assert not w._target_on_workers and w.settings.get("workers") == [str(survivor.endpoint), str(doomed.endpoint)]
    close_window(qtbot, w)


def test_an_unreachable_worker_at_load_offers_this_machine(qtbot, env, rpc):
    from tests.fixtures_workers import free_port

    w = open_window(qtbot, env)
    w.settings.set("workers", [f"127.0.0.1:{free_port()}"])  # nothing listens there
    with qtbot.waitSignal(w.bridge.events.loadFailed, timeout=60000) as failed:
        w.load_model(model_named(w, "tiny-target"))
    assert "127.0.0.1" in failed.args[1]
    assert w.local_load_box is not None and w.local_load_box.isVisible()
    here = next(b for b in w.local_load_box.buttons()
                if w.local_load_box.buttonRole(b) == QMessageBox.ButtonRole.AcceptRole)
    with qtbot.waitSignal(w.bridge.events.loaded, timeout=60000):
        here.click()
    close_window(qtbot, w)
