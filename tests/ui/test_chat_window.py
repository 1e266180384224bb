"""The chat window as a user meets it: the rail and its pages, the model bar, the layout at 1024×640 and
1280×800 (HiDPI too), what is remembered, the first run, code / reasoning / tables in replies, conversations
(pin, export, import, branch, search), presets and the keyboard. Real window, real engine, tiny models."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from PySide6.QtCore import QRect, Qt, QTimer
from PySide6.QtGui import QColor, QGuiApplication, QTextFormat
from PySide6.QtWidgets import QAbstractButton, QApplication, QLabel, QWidget

from app.engine import sources
from app.library.local import LocalLibrary
from app.store.chats import ChatStore
from app.store.db import open_database
from app.store.presets import Preset
from app.store.settings import HISTORY_KEY, SettingsStore, model_key
from app.ui.main_window import TRANSCRIPT_MIN_WIDTH, MainWindow
from app.ui.message_view import CODE_HEADER_PROPERTY
from app.ui.model_bar import OFF_HINT
from app.ui.settings_panel import PanelValues
from app.ui.theme import apply_theme
from tests.ui.window_helpers import close_window, model_named

ROOT = Path(__file__).resolve().parents[2]


def open_window(qtbot, env, size=(1280, 800), extra=None, **settings_values) -> MainWindow:
    conn = open_database(env["db"])
    settings = SettingsStore(conn)
    settings.set("model_folders", [str(env["models"])])
    for k, v in settings_values.items():
        settings.set(k, v)
    w = MainWindow(ChatStore(conn), settings, LocalLibrary([env["models"]], cache_path=None), extra_folders=extra)
    w.confirm = lambda title, text: True
    w.chat.conversation_list.confirm = lambda title, text: True
    qtbot.addWidget(w)
    if size:
        w.resize(*size)
    w.show()
    qtbot.waitUntil(lambda: len(w.browser.models()) >= 3, timeout=20000)
    return w


def load_tiny(qtbot, w: MainWindow) -> None:
    target = model_named(w, "tiny-target")
    w.settings.set_model_settings(model_key(target.path), {"n_ctx": 2048, "threads": 1, "temperature": 0.0,
                                                           "max_tokens": 40})
    with qtbot.waitSignal(w.bridge.events.loaded, timeout=30000):
        w.load_model(target)
    qtbot.waitUntil(w.chat.model_ready, timeout=10000)


def rect_in(widget: QWidget, ancestor: QWidget) -> QRect:
    return QRect(widget.mapTo(ancestor, widget.rect().topLeft()), widget.size())


# ---------------------------------------------------------------------------------------------------------
# layout


def test_closing_the_window_stops_the_server_first(qtbot, env):
    w = open_window(qtbot, env, load_last_model=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    w.server_page.port.setValue(port)
    with qtbot.waitSignal(w.server_page.runningChanged, timeout=30000):
        assert w.server_page.start()
    assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code == 200
    close_window(qtbot, w)
    assert not w.server_page.running
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)


def test_the_rail_has_the_pages_and_add_page_adds_one(qtbot, env):
    w = open_window(qtbot, env, load_last_model=False)
    assert w.rail.keys() == ["chat", "models", "discover", "benchmark", "server"]
    assert w.page("server") is w.server_page and "Ctrl+5" in w.rail.button("server").toolTip()
    assert w.current_page() == "chat" and w.rail.current() == "chat"
    w.rail.button("models").click()
    assert w.current_page() == "models" and w.pages.currentWidget() is w.browser
    extra = QLabel("a page from elsewhere")
    action = w.add_page("notes", "Notes", extra, shortcut="Ctrl+6")
    assert w.rail.keys()[-1] == "notes" and "Ctrl+6" in w.rail.button("notes").toolTip()
    action.trigger()
    assert w.current_page() == "notes" and w.pages.currentWidget() is extra
    with pytest.raises(ValueError):
        w.add_page("notes", "Again", QLabel())
    w.page_actions["chat"].trigger()
    assert w.current_page() == "chat"
    close_window(qtbot, w)


def _no_overlap(w: MainWindow) -> None:
    """The chat, the transcript, the composer and the sidebar lie side by side inside the window."""
    qtbot_rect = w.rect()
    transcript = rect_in(w.chat, w)
    panel = rect_in(w.panel, w)
    assert qtbot_rect.contains(transcript) and qtbot_rect.contains(panel)
    assert transcript.right() < panel.left()
    for widget in (w.chat.input, w.chat.send_button, w.model_bar.load_button, w.model_bar.settings_button):
        assert qtbot_rect.contains(rect_in(widget, w)), widget
    # the sidebar's form is as wide as its viewport at most: no field cut at the edge
    assert w.panel.widget().width() <= w.panel.viewport().width()
    # the conversation list does not run under the transcript
    assert rect_in(w.chat.conversation_list, w).right() < rect_in(w.chat.message_view, w).left()


def test_layout_at_1280x800_and_1024x640(qtbot, env):
    w = open_window(qtbot, env, load_last_model=False)
    qtbot.waitUntil(lambda: w.width() == 1280)
    assert w.chat.width() >= w.width() / 2  # the conversation takes the width
    _no_overlap(w)
    # 1024 wide is too narrow for the chat list, the sidebar and a readable transcript: the sidebar folds away
    w.resize(1024, 640)
    qtbot.waitUntil(lambda: w.width() == 1024 and w.height() == 640)
    assert w.minimumSizeHint().width() <= 1024 and w.minimumSizeHint().height() <= 640
    qtbot.waitUntil(lambda: not w.panel.isVisible())
    assert not w.panel_action.isChecked() and not w.model_bar.settings_button.isChecked()
    qtbot.waitUntil(lambda: w.chat.message_view.width() >= max(TRANSCRIPT_MIN_WIDTH, w.width() / 2))
    # the model bar's status stays one line, shortened in the middle (its whole text in the tooltip)
    status = w.model_bar.status
    assert status.text() == OFF_HINT and status.toolTip() == OFF_HINT
    assert status.height() < 2 * status.fontMetrics().lineSpacing()
    assert "…" in status.elided_text() or status.fontMetrics().horizontalAdvance(OFF_HINT) <= status.width()
    # wide again: it comes back (the user never hid it)
    w.resize(1280, 800)
    qtbot.waitUntil(lambda: w.panel.isVisible() and w.panel_action.isChecked())
    _no_overlap(w)
    # the user's choice wins: shown while narrow, it stays; hidden, it stays hidden
    w.resize(1024, 640)
    qtbot.waitUntil(lambda: not w.panel.isVisible())
    w.model_bar.settings_button.click()
    assert w.panel.isVisible()
    qtbot.waitUntil(lambda: rect_in(w.panel, w).right() < w.width(), timeout=3000)
    _no_overlap(w)
    w.resize(1280, 800)
    w.resize(1024, 640)
    qtbot.waitUntil(lambda: w.width() == 1024)
    assert w.panel.isVisible()
    w.panel_action.setChecked(False)
    w.resize(1280, 800)
    qtbot.waitUntil(lambda: w.width() == 1280)
    assert not w.panel.isVisible()
    close_window(qtbot, w)


def test_hidpi_layout_scale_factor_2(env):
    """QT_SCALE_FACTOR=2 in a fresh process: 1024×640 logical pixels still hold everything."""
    script = (
        "import sys, shutil\n"
        "from pathlib import Path\n"
        "from PySide6.QtWidgets import QApplication\n"
        "app = QApplication(sys.argv[:1])\n"
        "from app.store.chats import ChatStore\nfrom app.store.db import open_database\n"
        "from app.store.settings import SettingsStore\nfrom app.library.local import LocalLibrary\n"
        "from app.ui.main_window import MainWindow\n"
        "conn = open_database(Path(sys.argv[1]))\ns = SettingsStore(conn)\ns.set('load_last_model', False)\n"
        "s.set('model_folders', [sys.argv[2]])\n"
        "w = MainWindow(ChatStore(conn), s, LocalLibrary([Path(sys.argv[2])], cache_path=None))\n"
        "w.resize(1024, 640); w.show()\n"
        "import time\nend = time.monotonic() + 30\n"
        "while (w.centre.currentWidget() is not w.chat or not w.browser.models()) and time.monotonic() < end:\n"
        "    app.processEvents()\n"
        "w.panel_action.setChecked(True)  # the sidebar too (a first run at 1024 starts without it)\n"
        "for _ in range(20): app.processEvents()\n"
        "import json\n"
        "def r(x): return [x.mapTo(w, x.rect().topLeft()).x(), x.width()]\n"
        "print(json.dumps({'ratio': app.devicePixelRatio(), 'size': [w.width(), w.height()], 'chat': r(w.chat),"
        " 'panel': r(w.panel), 'body': w.panel.widget().width(), 'viewport': w.panel.viewport().width(),"
        " 'min': [w.minimumSizeHint().width(), w.minimumSizeHint().height()]}))\n"
        "w.bridge.shutdown()\n"
    )
    env_vars = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "QT_SCALE_FACTOR": "2", "PYTHONPATH": str(ROOT),
                "TANDEM_DATA_DIR": str(env["tmp"] / "hidpi")}
    r = subprocess.run([sys.executable, "-c", script, str(env["tmp"] / "hidpi.sqlite3"), str(env["models"])], env=env_vars, cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["ratio"] == 2.0 and got["size"] == [1024, 640]
    chat_x, chat_w = got["chat"]
    panel_x, panel_w = got["panel"]
    assert chat_x + chat_w <= panel_x and panel_x + panel_w <= 1024  # side by side, inside the window
    assert got["body"] <= got["viewport"] and got["min"][0] <= 1024 and got["min"][1] <= 640


def test_geometry_splitters_and_sidebars_are_remembered(qtbot, env):
    w = open_window(qtbot, env, load_last_model=False)
    w.resize(1100, 700)
    w.splitter.setSizes([700, 320])
    w.chat.splitter.setSizes([300, 400])
    w.chats_action.setChecked(False)
    assert not w.chat.conversation_list.isVisible() and not w.model_bar.chats_button.isChecked()
    sizes, chat_sizes = w.splitter.sizes(), w.chat.splitter.sizes()
    w.show_page("discover")
    close_window(qtbot, w)
    stored = SettingsStore(open_database(env["db"])).get("window_layout")
    assert stored["geometry"] and stored["splitter"] and stored["chat_splitter"]
    w2 = open_window(qtbot, env, size=None, load_last_model=False)
    # (the offscreen screen is smaller than the window: the geometry itself is checked by the Xvfb smoke test)
    del sizes, chat_sizes
    assert not w2.chats_action.isChecked() and w2.current_page() == "discover"
    w2.panel_action.setChecked(False)
    assert not w2.panel.isVisible() and not w2.model_bar.settings_button.isChecked()
    close_window(qtbot, w2)


# ---------------------------------------------------------------------------------------------------------
# model bar, first run


def test_model_bar_load_speculation_acceptance_and_eject(qtbot, env):
    w = open_window(qtbot, env, load_last_model=False)
    assert w.model_bar.status.text() == OFF_HINT and "Draft model" in OFF_HINT  # says how to turn it on
    names = [w.model_bar.target.itemText(i) for i in range(w.model_bar.target.count())]
    assert "tiny-target" in names
    w.model_bar.target.setCurrentIndex(names.index("tiny-target"))
    target = model_named(w, "tiny-target")
    w.settings.set_model_settings(model_key(target.path), {"n_ctx": 2048, "threads": 1, "temperature": 0.0,
                                                           "max_tokens": 40})
    assert w.model_bar.load_button.text() == "Load"
    # the bar names each source as app.engine.sources does (its short names; the full ones in the tooltips)
    bar = w.model_bar.source
    assert {bar.itemData(i): bar.itemText(i) for i in range(bar.count())} == sources.SHORT_LABELS
    assert {bar.itemData(i): bar.itemData(i, Qt.ItemDataRole.ToolTipRole) for i in range(bar.count())} == sources.LABELS
    with qtbot.waitSignal(w.bridge.events.loaded, timeout=30000):
        w.model_bar.load_button.click()
    qtbot.waitUntil(w.chat.model_ready, timeout=10000)
    assert w.model_bar.load_button.text() == "Eject"

    # speculation from the bar: the panel follows, the engine switches, the bar reports the last acceptance
    with qtbot.waitSignal(w.bridge.events.speculationChanged, timeout=30000,
                          check_params_cb=lambda mode: mode == sources.HISTORY):
        w.model_bar.source.setCurrentIndex(w.model_bar.source.findData(sources.HISTORY))
        w.model_bar.source.activated.emit(w.model_bar.source.currentIndex())
    assert w.panel.values().draft_source == sources.HISTORY
    # (the bar hears the engine through a queued signal: after the test's own, direct, connection)
    qtbot.waitUntil(lambda: "Speculating with This chat + past chats" in w.model_bar.status.text())
    assert "no reply yet" in w.model_bar.status.text()
    with qtbot.waitSignal(w.chat.generationFinished, timeout=60000) as done:
        assert w.chat.send("the value of data the value of data the value of data")
    stats = done.args[0]
    if stats.drafted:
        assert f"accepted {stats.accepted}/{stats.drafted}" in w.model_bar.status.text()
    else:
        assert "nothing drafted" in w.model_bar.status.text()
    # the panel's source shows in the bar too
    w.panel.choose_source(sources.OFF)
    assert w.model_bar.source.currentData() == sources.OFF and not w.model_bar.draft.isVisible()
    w.panel.choose_source(sources.DRAFT_MODEL)
    assert w.model_bar.draft.isVisibleTo(w.model_bar)

    with qtbot.waitSignal(w.bridge.events.unloaded, timeout=30000):
        w.model_bar.load_button.click()  # Eject
    qtbot.waitUntil(lambda: not w.chat.model_ready())
    assert w.target is None and w.model_bar.load_button.text() == "Load"
    close_window(qtbot, w)


def test_the_last_model_loads_by_itself(qtbot, env):
    w = open_window(qtbot, env, load_last_model=False)
    load_tiny(qtbot, w)
    close_window(qtbot, w)
    conn = open_database(env["db"])
    assert SettingsStore(conn).get("last_model_path").endswith("tiny-target.gguf")
    conn.close()
    w2 = open_window(qtbot, env, load_last_model=True)
    qtbot.waitUntil(w2.chat.model_ready, timeout=30000)
    assert Path(w2.target.path).stem == "tiny-target"
    assert w2.model_bar.load_button.text() == "Eject"
    close_window(qtbot, w2)


@pytest.mark.real_model
def test_first_run_loads_the_demo_model_and_a_chat_is_ready(qtbot, env, smollm2_q4_path):
    w = open_window(qtbot, env, extra=[smollm2_q4_path.parent])
    qtbot.waitUntil(w.chat.model_ready, timeout=60000)
    assert Path(w.target.path) == smollm2_q4_path
    assert w.current_page() == "chat" and w.centre.currentWidget() is w.chat
    assert w.speculation == sources.OFF and w.model_bar.status.text() == OFF_HINT
    assert w.chat.send_button.isEnabled() and "Enter sends" in w.chat.input.placeholderText()
    close_window(qtbot, w)


# ---------------------------------------------------------------------------------------------------------
# replies: code, reasoning, tables, stats, legend


REPLY = ("<think>\nThey want Python.\n</think>\nHere:\n\n```python\ndef add(a, b):\n    return a + b\n```\n\n"
         "| a | b |\n|---|---|\n| 1 | 2 |\n\n- one\n- two\n")


def _seed(w: MainWindow, reply: str = REPLY) -> int:
    c = w.chats.create_conversation("Code")
    w.chats.append_message(c.id, "user", "add two numbers")
    stats = {"decode_tokens_per_second": 40.0, "generated_tokens": 30, "time_to_first_token": 0.1,
             "drafted": 20, "accepted": 15, "acceptance_rate": 0.75}
    w.chats.append_message(c.id, "assistant", reply, stats_json=json.dumps(stats),
                           draft_mask=f"{len(reply) - 20},20")
    w.chat.conversation_list.refresh()
    w.chat.open_conversation(c.id)
    QApplication.processEvents()  # new blocks are shown by a posted event
    return c.id


def _fg_colours(block) -> set[str]:
    doc = block.document
    out = set()
    b = doc.begin()
    while b.isValid():
        if b.blockFormat().hasProperty(QTextFormat.Property.BlockCodeFence) or b.blockFormat().hasProperty(
                QTextFormat.Property.BlockCodeLanguage):
            it = b.begin()
            while not it.atEnd():
                f = it.fragment()
                if f.charFormat().hasProperty(QTextFormat.Property.ForegroundBrush):
                    out.add(f.charFormat().foreground().color().name())
                it += 1
        b = b.next()
    return out


def test_code_blocks_are_highlighted_labelled_and_copied(qtbot, env):
    w = open_window(qtbot, env, load_last_model=False)
    _seed(w)
    block = w.chat.message_view.blocks()[-1]
    assert block.code_blocks() == [("Python", "def add(a, b):\n    return a + b")]
    light = _fg_colours(block)
    assert len(light) >= 2  # keywords, names, operators: Pygments colours
    headers = []
    b = block.document.begin()
    while b.isValid():
        if b.blockFormat().boolProperty(CODE_HEADER_PROPERTY):
            headers.append(b.text().strip())
        b = b.next()
    assert headers == ["Python"]
    [copy] = block.copy_buttons()
    qtbot.waitUntil(copy.isVisible)
    assert rect_in(block.body, w).contains(rect_in(copy, w))
    QGuiApplication.clipboard().clear()
    with qtbot.waitSignal(w.chat.message_view.codeCopied):
        qtbot.mouseClick(copy, Qt.MouseButton.LeftButton)
    assert QGuiApplication.clipboard().text() == "def add(a, b):\n    return a + b"
    # a table and a list are rendered as such
    from PySide6.QtGui import QTextTable

    assert any(isinstance(f, QTextTable) for f in block.document.rootFrame().childFrames())
    assert block.document.begin().textList() is None and "one" in block.document.toPlainText()
    # the stats line says what was accepted
    assert "accepted 15/20 draft tokens (75%)" in block.stats_label.text()
    # dark theme: other colours
    apply_theme(QApplication.instance(), "dark")
    try:
        qtbot.waitUntil(lambda: _fg_colours(w.chat.message_view.blocks()[-1]) != light, timeout=5000)
    finally:
        apply_theme(QApplication.instance(), "light")
    close_window(qtbot, w)


def test_reasoning_is_folded_with_its_length(qtbot, env):
    w = open_window(qtbot, env, load_last_model=False)
    _seed(w)
    block = w.chat.message_view.blocks()[-1]
    assert block.think_button.isVisibleTo(block)
    assert block.think_button.text() == f"Thought · {len('They want Python.')} characters"
    assert "They want Python" not in block.document.toPlainText() and "<think>" not in block.document.toPlainText()
    assert not block.think_body.isVisibleTo(block)
    block.think_button.click()
    assert block.think_body.isVisibleTo(block) and block.think_body.toPlainText() == "They want Python."
    block.think_button.click()
    assert not block.think_body.isVisibleTo(block)
    # while it streams, the reasoning stays folded and counts up
    block.set_content("<think>")
    block.status = "streaming"
    block.append("still thinking about it")
    block.flush_pending()
    assert block.think_button.text().startswith("Thinking…") and "still" not in block.document.toPlainText()
    close_window(qtbot, w)


def test_draft_highlight_has_a_legend(qtbot, env):
    w = open_window(qtbot, env, load_last_model=False)
    _seed(w)
    assert not w.chat.legend.isVisible()
    w.highlight_action.setChecked(True)
    assert w.chat.legend.isVisible() and "accepted draft tokens" in w.chat.legend.text()
    w.highlight_action.setChecked(False)
    assert not w.chat.legend.isVisible()
    close_window(qtbot, w)


# ---------------------------------------------------------------------------------------------------------
# conversations


def test_pin_export_import_branch_and_search(qtbot, env):
    w = open_window(qtbot, env, load_last_model=False)
    first = _seed(w)
    other = w.chats.create_conversation("Other chat")
    w.chats.append_message(other.id, "user", "unrelated words")
    clist = w.chat.conversation_list
    clist.refresh()
    assert clist.ids()[0] == other.id
    assert clist.toggle_pin(first) and clist.ids()[0] == first  # pinned: listed first
    assert clist.toggle_pin(first) and clist.ids()[0] == other.id

    clist.select(first)
    md, js = env["tmp"] / "c.md", env["tmp"] / "c.json"
    assert clist.export_to(md, "md") and clist.export_to(js, "json")
    assert md.read_text().startswith("# Code") and "```python" in md.read_text()
    new_id = clist.import_from(js)
    assert new_id not in (None, first) and w.chat.current_conversation_id() == new_id
    assert [m.content for m in w.chats.get_messages(new_id)] == [m.content for m in w.chats.get_messages(first)]
    bad = env["tmp"] / "bad.json"
    bad.write_text("{}")
    assert clist.import_from(bad) is None and "cannot be imported" in w.chat.notice.text()

    # branch from the first message: a new chat with that message only; the original keeps both
    w.chat.open_conversation(first)
    user_block = w.chat.message_view.blocks()[0]
    qtbot.mouseClick(user_block.branch_button, Qt.MouseButton.LeftButton)
    branched = w.chat.current_conversation_id()
    assert branched not in (first, new_id)
    assert [m.content for m in w.chats.get_messages(branched)] == ["add two numbers"]
    assert len(w.chats.get_messages(first)) == 2

    # search: the list filters by message text, the open conversation marks the matches
    clist.search_box.setText("return a")
    qtbot.waitUntil(lambda: clist.ids() and set(clist.ids()) <= {first, new_id}, timeout=3000)
    w.chat.open_conversation(first)
    qtbot.waitUntil(lambda: bool(w.chat.message_view.blocks()[-1].body.extraSelections()), timeout=3000)
    clist.search_box.setText("")
    qtbot.waitUntil(lambda: not w.chat.message_view.blocks()[-1].body.extraSelections(), timeout=3000)
    close_window(qtbot, w)


def test_an_import_that_cannot_be_parsed_or_saved_is_one_line_and_writes_nothing(qtbot, env):
    w = open_window(qtbot, env, load_last_model=False)
    first = _seed(w)
    clist = w.chat.conversation_list
    clist.select(first)
    js = env["tmp"] / "c.json"
    assert clist.export_to(js, "json")
    before = len(w.chats.list_conversations())
    deep = env["tmp"] / "deep.json"
    deep.write_text("[" * 200_000 + "]" * 200_000)
    assert clist.import_from(deep) is None
    assert "nested too deeply" in w.chat.notice.text() and "\n" not in w.chat.notice.text()
    w.chats.conn.execute("PRAGMA query_only = ON")  # the database refuses writes (a read-only file does too)
    try:
        assert clist.import_from(js) is None
        assert w.chat.notice.text().startswith("Could not save c.json as a chat:")
        assert "\n" not in w.chat.notice.text()
    finally:
        w.chats.conn.execute("PRAGMA query_only = OFF")
    assert len(w.chats.list_conversations()) == before
    close_window(qtbot, w)


# ---------------------------------------------------------------------------------------------------------
# presets


def test_presets_save_apply_import_export(qtbot, env):
    w = open_window(qtbot, env, load_last_model=False)
    w.chat.set_system_prompt("You answer in haiku.")
    v = w.panel.values()
    v.temperature = 0.3
    w.panel.set_values(v)
    dialog = w.open_presets()
    assert dialog.save_current("Poet")
    assert dialog.names() == ["Poet"]
    assert [w.model_bar.preset.itemText(i) for i in range(w.model_bar.preset.count())][1:] == ["Poet"]
    saved = w.presets.get("Poet")
    assert saved.system_prompt == "You answer in haiku." and saved.values["temperature"] == 0.3
    assert "n_ctx" not in saved.values  # a preset holds sampling + speculation, not load settings

    w.chat.set_system_prompt("You write Python.")
    w.panel.set_values(PanelValues.from_dict({**w.panel.values().to_dict(), "temperature": 0.0,
                                              "draft_source": sources.HISTORY}))
    assert dialog.save_current("Coder")
    w.chat.new_conversation()
    w.panel.set_values(PanelValues())
    w.model_bar.preset.setCurrentIndex(w.model_bar.preset.findData("Coder"))
    w.model_bar.preset.activated.emit(w.model_bar.preset.currentIndex())
    assert w.chat.system_prompt() == "You write Python."
    assert w.panel.values().temperature == 0.0 and w.panel.values().draft_source == sources.HISTORY
    assert w.settings.get("preset") == "Coder"

    out = env["tmp"] / "presets.json"
    assert dialog.export_file(out)
    w.presets.delete("Coder")
    w.presets.delete("Poet")
    dialog.refresh()
    assert dialog.import_file(out) and dialog.names() == ["Poet", "Coder"]
    bad = env["tmp"] / "bad-presets.json"
    bad.write_text("[1, 2]")
    assert not dialog.import_file(bad) and "not a Tandem presets file" in dialog.status.text()
    dialog.close()
    close_window(qtbot, w)


def test_a_preset_that_switches_the_source_keeps_its_speculation_values(qtbot, env):
    # the history pair remembers draft_max 5; a preset that switches to history with draft_max 9 wins over it
    w = open_window(qtbot, env, load_last_model=False)
    load_tiny(qtbot, w)
    target = model_named(w, "tiny-target")
    w.settings.update_pair_settings(model_key(target.path), HISTORY_KEY, {"draft_max": 5, "draft_min": 0,
                                                                           "adaptive": True})
    w.presets.save(Preset("Wide", "", {"draft_source": sources.HISTORY, "draft_max": 9, "draft_min": 1,
                                       "adaptive": False}))
    assert w.panel.values().draft_source == sources.OFF
    assert w.apply_preset_named("Wide")
    v = w.panel.values()
    assert (v.draft_source, v.draft_max, v.draft_min, v.adaptive) == (sources.HISTORY, 9, 1, False)
    stored = w.settings.get_pair_settings(model_key(target.path), HISTORY_KEY)
    assert (stored["draft_max"], stored["draft_min"], stored["adaptive"]) == (9, 1, False)
    close_window(qtbot, w)


# ---------------------------------------------------------------------------------------------------------
# keyboard


def test_keyboard_shortcuts_and_their_dialog(qtbot, env):
    w = open_window(qtbot, env, load_last_model=False)
    keys = {a.text().replace("&", ""): a.shortcut().toString() for a in w.shortcut_actions()}
    assert keys["New chat"] == "Ctrl+N" and keys["Focus the message box"] == "Ctrl+L"
    assert keys["Stop the reply"] == "Esc" and keys["Copy the last reply"] == "Ctrl+Shift+C"
    assert keys["Settings…"] == "Ctrl+," and keys["Search chats and messages"] == "Ctrl+F"
    dialog = w.open_shortcuts()
    rows = dict(dialog.rows())
    assert rows["New chat"] == "Ctrl+N" and rows["Stop the reply"] == "Esc" and rows["Settings"] == "Ctrl+,"
    dialog.close()
    # shortcuts are in the tooltips
    assert "Ctrl+N" in w.chat.conversation_list.new_button.toolTip()
    assert "Ctrl+1" in w.rail.button("chat").toolTip()

    w.activateWindow()
    qtbot.waitActive(w)
    before = w.chat.current_conversation_id()
    qtbot.keyClick(w.chat.input, Qt.Key.Key_N, Qt.KeyboardModifier.ControlModifier)
    assert w.chat.current_conversation_id() not in (None, before)
    w.show_page("models")
    qtbot.keyClick(w, Qt.Key.Key_L, Qt.KeyboardModifier.ControlModifier)
    assert w.current_page() == "chat"
    qtbot.waitUntil(w.chat.input.hasFocus)
    qtbot.keyClick(w.chat.input, Qt.Key.Key_F, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(w.chat.conversation_list.search_box.hasFocus)
    # the chat view's own focus methods (the window calls them): the search text is selected, to type over
    w.chat.focus_input()
    qtbot.waitUntil(w.chat.input.hasFocus)
    w.chat.conversation_list.set_filter("zzz")
    w.chat.focus_search()
    qtbot.waitUntil(w.chat.conversation_list.search_box.hasFocus)
    assert w.chat.conversation_list.search_box.selectedText() == "zzz"
    w.chat.conversation_list.set_filter("")

    _seed(w)
    QGuiApplication.clipboard().clear()
    w.copy_reply_action.trigger()
    assert QGuiApplication.clipboard().text() == REPLY

    # Esc stops a running reply (and is free otherwise)
    assert not w.stop_action.isEnabled()
    load_tiny(qtbot, w)
    w.panel.max_tokens.setValue(100000)
    pressed = []

    def press_escape():
        if not pressed:
            pressed.append(w.stop_action.isEnabled())
            qtbot.keyClick(w.chat.input, Qt.Key.Key_Escape)  # the window's Esc, or the input box's

    # in the GUI thread, once the reply runs (a worker signal's plain callable would run in the worker)
    w.chat.generationStarted.connect(lambda: QTimer.singleShot(0, press_escape))
    with qtbot.waitSignal(w.chat.generationFinished, timeout=60000):
        assert w.chat.send("json name id type")
    assert pressed == [True]
    last = w.chats.get_messages(w.chat.current_conversation_id())[-1]
    assert last.status == "stopped"
    assert not w.stop_action.isEnabled()
    close_window(qtbot, w)


def test_each_action_has_one_place(qtbot, env):
    """Stop, Regenerate and Edit appear once each (the issue saw Regenerate twice)."""
    w = open_window(qtbot, env, load_last_model=False)
    _seed(w)
    labels = [b.text() for b in w.chat.findChildren(QAbstractButton) if b.isVisibleTo(w.chat)]
    assert labels.count("Regenerate") == 1 and labels.count("Edit") == 1 and "Stop" not in labels
    assert QColor(w.chat.legend.palette().window().color()).isValid()
    close_window(qtbot, w)


def test_first_run_on_a_small_screen_starts_with_the_sidebar_hidden(qtbot, env):
    w = open_window(qtbot, env, size=(1024, 640), load_last_model=False)
    assert not w.panel.isVisible() and not w.panel_action.isChecked()
    assert w.chat.width() >= 0.75 * (w.width() - w.rail.width())  # the conversation gets the width
    w.model_bar.settings_button.click()
    assert w.panel.isVisible() and w.panel_action.isChecked()
    qtbot.waitUntil(lambda: rect_in(w.panel, w).right() < w.width(), timeout=3000)
    _no_overlap(w)
    close_window(qtbot, w)
    w2 = open_window(qtbot, env, size=(1024, 640), load_last_model=False)
    assert w2.panel.isVisible()  # remembered from then on
    close_window(qtbot, w2)
