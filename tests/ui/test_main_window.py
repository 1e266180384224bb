"""The real main window driven end to end with the tiny models (offscreen Qt, real engine thread)."""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import QElapsedTimer, QTimer

from app.engine.defaults import spec_defaults
from app.library.local import LocalLibrary
from app.store.chats import ChatStore
from app.store.db import open_database
from app.store.settings import SettingsStore, model_key
from app.ui.main_window import MainWindow
from app.ui.settings_panel import PanelValues
from tests.ui.window_helpers import close_window, model_named


def open_window(qtbot, env) -> MainWindow:
    conn = open_database(env["db"])
    chats = ChatStore(conn)
    chats.recover_interrupted()
    settings = SettingsStore(conn)
    settings.set("model_folders", [str(env["models"])])
    w = MainWindow(chats, settings, LocalLibrary([env["models"]], cache_path=None))
    w.confirm = lambda title, text: True
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: len(w.browser.models()) == 3, timeout=20000)
    return w


def load_tiny(qtbot, w: MainWindow) -> None:
    target = model_named(w, "tiny-target")
    # remembered per-model settings are applied on load
    w.settings.set_model_settings(model_key(target.path), {"n_ctx": 4096, "threads": 1, "temperature": 0.0,
                                                           "max_tokens": 200})
    with qtbot.waitSignal(w.bridge.events.loaded, timeout=30000):
        w.load_model(target)
    qtbot.waitUntil(lambda: w.chat.model_ready(), timeout=10000)
    assert w.panel.values().temperature == 0.0


def test_load_pick_draft_chat_stop_and_reopen(qtbot, env):
    w = open_window(qtbot, env)
    load_tiny(qtbot, w)
    assert w.target_info is not None and w.target_info.block_count == 4

    # the draft picker: the compatible draft is enabled, the other vocabulary is disabled with the reason
    qtbot.waitUntil(lambda: w.panel.draft_item(str(model_named(w, "tiny-other-vocab").path)) is not None,
                    timeout=20000)
    bad = w.panel.draft_item(str(model_named(w, "tiny-other-vocab").path))
    good = w.panel.draft_item(str(model_named(w, "tiny-draft").path))
    assert good.isEnabled()
    assert not bad.isEnabled() and "token" in bad.toolTip()

    with qtbot.waitSignal(w.bridge.events.speculationChanged, timeout=30000,
                          check_params_cb=lambda mode: mode == "draft-model"):
        w.use_as_draft(model_named(w, "tiny-draft"))

    # send: tokens stream in, the stats line reports acceptance
    with qtbot.waitSignal(w.chat.generationFinished, timeout=60000) as done:
        assert w.chat.send("the value of data")
    stats = done.args[0]
    assert stats is not None and stats.drafted > 0
    cid = w.chat.current_conversation_id()
    msgs = w.chats.get_messages(cid)
    assert [m.role for m in msgs] == ["user", "assistant"]
    assert msgs[1].status == "complete" and msgs[1].content
    assert "accepted" in (msgs[1].stats_json or "")

    # stop mid-stream: the partial reply is kept and marked
    w.panel.max_tokens.setValue(100000)
    stopped = []

    def stop_once(*_):
        if not stopped:
            stopped.append(True)
            w.chat.stop()

    w.bridge.events.pieces.connect(stop_once)
    with qtbot.waitSignal(w.chat.generationFinished, timeout=60000):
        assert w.chat.send("json name id type")
    w.bridge.events.pieces.disconnect(stop_once)
    last = w.chats.get_messages(cid)[-1]
    assert last.status == "stopped" and last.content

    close_window(qtbot, w)

    # re-open: the conversation is still there, with both replies
    w2 = open_window(qtbot, env)
    convs = w2.chats.list_conversations()
    assert [c.id for c in convs] == [cid]
    assert [m.status for m in w2.chats.get_messages(cid)] == ["complete", "complete", "complete", "stopped"]
    close_window(qtbot, w2)


def test_gui_thread_never_freezes_while_streaming(qtbot, env):
    """A heartbeat timer in the GUI thread keeps beating while a reply streams at full speed.

    A freeze guard, not a speed measurement: a GUI thread doing per-token work or waiting on the engine stops
    the beat for seconds; a busy shared machine can delay one beat by a few hundred ms (measured up to 174 ms
    with two spinning processes), so only a gap of a second counts as frozen."""
    w = open_window(qtbot, env)
    load_tiny(qtbot, w)
    w.chat.set_highlight_drafts(True)
    with qtbot.waitSignal(w.bridge.events.speculationChanged, timeout=30000,
                          check_params_cb=lambda mode: mode == "history"):
        values = w.panel.values()
        values.draft_source = "history"
        w.panel.set_values(values)
        w.apply_speculation()
    w.panel.max_tokens.setValue(3000)

    gaps: list[float] = []
    clock = QElapsedTimer()
    clock.start()
    last = [clock.elapsed()]

    def beat() -> None:
        now = clock.elapsed()
        gaps.append(now - last[0])
        last[0] = now

    heartbeat = QTimer()
    heartbeat.setInterval(10)
    heartbeat.timeout.connect(beat)
    heartbeat.start()
    t0 = time.monotonic()
    with qtbot.waitSignal(w.chat.generationFinished, timeout=120000) as done:
        assert w.chat.send("print the list of items")
    heartbeat.stop()
    elapsed = time.monotonic() - t0
    stats = done.args[0]
    assert stats.generated_tokens > 1000, [(m.role, m.content[:80]) for m in w.chats.get_messages(w.chat.current_conversation_id())]
    longest = max(gaps)
    print(f"\nheartbeat: {len(gaps)} beats over {elapsed:.1f} s, longest gap {longest:.0f} ms, "
          f"{stats.decode_tokens_per_second:.0f} tok/s")
    assert longest < 1000, f"the GUI froze for {longest:.0f} ms"
    close_window(qtbot, w)


def test_deleted_model_file_gives_a_message(qtbot, env):
    w = open_window(qtbot, env)
    m = model_named(w, "tiny-draft")
    Path(m.path).unlink()
    w.load_model(m)
    assert "no longer exists" in w.last_message
    assert w.target is None
    close_window(qtbot, w)


def test_incompatible_draft_from_browser_is_refused_with_reason(qtbot, env):
    w = open_window(qtbot, env)
    load_tiny(qtbot, w)
    qtbot.waitUntil(lambda: w.panel.draft_item(str(model_named(w, "tiny-other-vocab").path)) is not None,
                    timeout=20000)
    w.use_as_draft(model_named(w, "tiny-other-vocab"))
    assert "cannot draft" in w.last_message and "token" in w.last_message
    close_window(qtbot, w)


def test_first_launch_without_models_shows_onboarding(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("TANDEM_DATA_DIR", str(tmp_path / "data"))
    empty = tmp_path / "empty"
    empty.mkdir()
    conn = open_database(tmp_path / "c.sqlite3")
    w = MainWindow(ChatStore(conn), SettingsStore(conn), LocalLibrary([empty], cache_path=None))
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: not w.browser.is_busy(), timeout=20000)
    w._update_centre()
    assert w.centre.currentWidget() is w.onboarding
    close_window(qtbot, w)


def test_chat_replaces_the_welcome_page_once_the_scan_finds_models(qtbot, env):
    w = open_window(qtbot, env)  # waits until the background scan has listed the models
    qtbot.waitUntil(lambda: w.centre.currentWidget() is w.chat, timeout=5000)
    close_window(qtbot, w)


def test_settings_are_remembered_per_model_and_reset(qtbot, env):
    w = open_window(qtbot, env)
    load_tiny(qtbot, w)
    w.panel.draft_max.setValue(11)
    w.panel.temperature.setValue(1.25)
    w._save_model_settings()
    close_window(qtbot, w)
    w2 = open_window(qtbot, env)
    target = model_named(w2, "tiny-target")
    stored = w2.settings.get_model_settings(model_key(target.path))
    assert stored["temperature"] == 1.25
    with qtbot.waitSignal(w2.bridge.events.loaded, timeout=30000):
        w2.load_model(target)
    assert w2.panel.values().temperature == 1.25
    w2.reset_settings()
    assert w2.panel.values().temperature == PanelValues().temperature
    assert w2.settings.get_model_settings(model_key(target.path)) == {}
    close_window(qtbot, w2)


def test_quit_while_generating_stops_cleanly(qtbot, env):
    w = open_window(qtbot, env)
    load_tiny(qtbot, w)
    w.panel.max_tokens.setValue(100000)
    with qtbot.waitSignal(w.bridge.events.pieces, timeout=30000):
        assert w.chat.send("print the list of items")
    t0 = time.monotonic()
    close_window(qtbot, w)
    assert time.monotonic() - t0 < 10
    msgs = w.chats.get_messages(w.chats.list_conversations()[0].id)
    assert msgs[-1].role == "assistant" and msgs[-1].content
    assert msgs[-1].status in ("stopped", "complete")


def test_each_draft_source_keeps_its_own_settings(qtbot, env):
    w = open_window(qtbot, env)
    load_tiny(qtbot, w)
    draft = model_named(w, "tiny-draft")
    w.panel.source.setCurrentIndex(w.panel.source.findData("draft-model"))
    v = w.panel.values()
    v.draft_path = str(draft.path)
    w.panel.set_values(v)
    w._panel_changed()
    # nothing remembered for this pair: the draft model's defaults
    assert w.panel.values().spec() == spec_defaults("draft-model")
    w.panel.draft_max.setValue(3)
    w.panel.adaptive.setChecked(False)
    w._save_model_settings()
    # drafting from history on this target has nothing remembered yet: its measured defaults, not the draft's values
    w.panel.source.setCurrentIndex(w.panel.source.findData("history"))
    assert w.panel.values().spec() == spec_defaults("history")
    w.panel.draft_max.setValue(12)
    w._save_model_settings()
    # back to the draft model: its own settings come back, the lookup ones are kept for later
    w.panel.source.setCurrentIndex(w.panel.source.findData("draft-model"))
    assert w.panel.values().draft_max == 3 and w.panel.values().adaptive is False
    w.panel.source.setCurrentIndex(w.panel.source.findData("history"))
    assert w.panel.values().draft_max == 12 and w.panel.values().adaptive is True
    close_window(qtbot, w)
