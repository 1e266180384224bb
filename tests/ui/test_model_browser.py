"""The model browser: listing, filtering, background scans, Load / Use as draft, broken and vanished files."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QApplication

import app.library.local as local
from app.engine.compat import Verdict, check_draft_compatibility
from app.engine.gguf_info import inspect_gguf
from app.library.local import LocalLibrary, LocalModel
from app.ui.model_browser import ARCH, CONTEXT, DRAFT, NAME, PARAMS, QUANT, SIZE, ModelBrowser

TIMEOUT_MS = 10_000


def put(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


@pytest.fixture
def models_dir(tmp_path: Path, tiny_target: Path, tiny_draft: Path, tiny_other_vocab: Path) -> Path:
    root = tmp_path / "models"
    put(tiny_target, root / "tandem-tests" / "Tiny-GGUF" / "tiny-target.gguf")
    put(tiny_draft, root / "tandem-tests" / "Tiny-GGUF" / "tiny-draft.gguf")
    put(tiny_other_vocab, root / "other" / "tiny-other-vocab.gguf")
    (root / "broken.gguf").write_bytes(b"GGUF" + bytes(10))
    return root


class Dialogs:
    """Stand-ins for the modal dialogs: what they answer, and how often they were asked."""

    def __init__(self) -> None:
        self.folder: Path | None = None
        self.confirm = True
        self.asked: list[str] = []

    def folder_dialog(self, parent: object) -> Path | None:
        self.asked.append("folder")
        return self.folder

    def confirm_delete(self, parent: object, model: LocalModel) -> bool:
        self.asked.append(f"delete {model.name}")
        return self.confirm


@pytest.fixture
def dialogs() -> Dialogs:
    return Dialogs()


@pytest.fixture
def browser(qtbot, tmp_path: Path, models_dir: Path, dialogs: Dialogs) -> ModelBrowser:
    lib = LocalLibrary([models_dir], tmp_path / "cache.json")
    w = ModelBrowser(lib, folder_dialog=dialogs.folder_dialog, confirm_delete=dialogs.confirm_delete)
    qtbot.addWidget(w)
    w.resize(900, 400)
    w.show()
    with qtbot.waitSignal(w.scanFinished, timeout=TIMEOUT_MS):
        w.refresh()
    return w


def model(w: ModelBrowser, name: str) -> LocalModel:
    return next(m for m in w.models() if m.name == name)


def row_of(w: ModelBrowser, name: str) -> int:
    proxy = w.table.model()
    for r in range(proxy.rowCount()):
        if proxy.index(r, NAME).data() == name:
            return r
    raise AssertionError(f"{name} not shown")


def cell(w: ModelBrowser, name: str, col: int, role: int = Qt.ItemDataRole.DisplayRole) -> object:
    proxy = w.table.model()
    return proxy.index(row_of(w, name), col).data(role)


def select(w: ModelBrowser, name: str) -> LocalModel:
    m = model(w, name)
    assert w.select_model(m)
    assert w.selected_model() == m
    return m


def set_target(qtbot, w: ModelBrowser, target: LocalModel | None) -> None:
    with qtbot.waitSignal(w.compatibilityChanged, timeout=TIMEOUT_MS):
        w.set_target(target)


# ---------------------------------------------------------------------------------------------------------


def test_lists_the_library(browser: ModelBrowser, models_dir: Path) -> None:
    assert sorted(m.name for m in browser.models()) == [
        "broken",
        "tiny-draft",
        "tiny-other-vocab",
        "tiny-target",
    ]
    assert cell(browser, "tiny-target", ARCH) == "llama"
    assert cell(browser, "tiny-target", PARAMS) == "207K"
    assert cell(browser, "tiny-target", QUANT) == "F32"
    assert cell(browser, "tiny-target", SIZE) == "843 kB"
    assert cell(browser, "tiny-target", CONTEXT) == "4K"
    assert str(models_dir / "tandem-tests") in cell(browser, "tiny-target", NAME, Qt.ItemDataRole.ToolTipRole)
    assert browser.table.isColumnHidden(DRAFT)
    assert browser.status_label.text().startswith("4 models · 1 unreadable · 1 folder")
    assert browser.busy.isHidden()


def test_broken_file_is_greyed_with_its_error(browser: ModelBrowser) -> None:
    broken = model(browser, "broken")
    assert broken.error and "GGUF" in broken.error
    assert cell(browser, "broken", NAME, Qt.ItemDataRole.ToolTipRole) == broken.error
    assert cell(browser, "broken", SIZE, Qt.ItemDataRole.ToolTipRole) == broken.error
    grey = QApplication.palette().color(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text)
    assert cell(browser, "broken", NAME, Qt.ItemDataRole.ForegroundRole) == grey
    assert cell(browser, "tiny-target", NAME, Qt.ItemDataRole.ForegroundRole) is None
    assert cell(browser, "broken", NAME, Qt.ItemDataRole.DecorationRole) is not None

    select(browser, "broken")
    assert not browser.load_button.isEnabled() and not browser.draft_button.isEnabled()
    assert broken.error in browser.load_button.toolTip()


def test_filter(qtbot, browser: ModelBrowser) -> None:
    proxy = browser.table.model()
    qtbot.keyClicks(browser.filter_edit, "OTHER")
    assert proxy.rowCount() == 1 and proxy.index(0, NAME).data() == "tiny-other-vocab"
    assert browser.status_label.text().startswith("1 of 4 models")
    browser.filter_edit.setText("llama f32")
    assert proxy.rowCount() == 3
    browser.filter_edit.setText("no such model")
    assert proxy.rowCount() == 0
    browser.filter_edit.clear()
    assert proxy.rowCount() == 4
    assert len(browser.models()) == 4  # the filter only hides rows


def test_sorting_by_size_is_numeric(browser: ModelBrowser) -> None:
    browser.table.sortByColumn(SIZE, Qt.SortOrder.DescendingOrder)
    proxy = browser.table.model()
    assert [proxy.index(r, NAME).data() for r in range(proxy.rowCount())] == [
        "tiny-target",
        "tiny-draft",
        "tiny-other-vocab",
        "broken",
    ]


def test_buttons_follow_the_selection_and_load_emits(qtbot, browser: ModelBrowser) -> None:
    assert not browser.load_button.isEnabled() and not browser.draft_button.isEnabled()
    target = select(browser, "tiny-target")
    assert browser.load_button.isEnabled() and browser.draft_button.isEnabled()
    with qtbot.waitSignal(browser.loadRequested, timeout=1000) as sig:
        qtbot.mouseClick(browser.load_button, Qt.MouseButton.LeftButton)
    assert sig.args == [target]
    with qtbot.waitSignal(browser.loadRequested, timeout=1000) as sig:
        qtbot.keyClick(browser.table, Qt.Key.Key_Return)
    assert sig.args == [target]
    draft = select(browser, "tiny-draft")
    with qtbot.waitSignal(browser.useAsDraftRequested, timeout=1000) as sig:
        qtbot.mouseClick(browser.draft_button, Qt.MouseButton.LeftButton)
    assert sig.args == [draft]


def test_scanning_happens_off_the_gui_thread(
    qtbot, browser: ModelBrowser, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[threading.Thread] = []
    release = threading.Event()
    real = local.inspect_gguf

    def slow(path: Path):
        threads.append(threading.current_thread())
        release.wait(5)
        return real(path)

    monkeypatch.setattr(local, "inspect_gguf", slow)
    browser.library.cache_path = None
    browser.library._cache.clear()  # force parsing again
    started = time.monotonic()
    browser.refresh()
    assert time.monotonic() - started < 0.5  # refresh() returned at once
    assert browser.is_busy() and not browser.busy.isHidden() and not browser.busy_label.isHidden()
    qtbot.wait(50)  # the GUI keeps processing events meanwhile
    assert browser.is_busy()
    with qtbot.waitSignal(browser.scanFinished, timeout=TIMEOUT_MS):
        release.set()
    assert threads and all(t is not threading.main_thread() for t in threads)
    assert browser.busy.isHidden() and not browser.is_busy()
    assert len(browser.models()) == 4


def test_refresh_while_scanning_scans_again(
    qtbot, browser: ModelBrowser, tiny_draft: Path, models_dir: Path
) -> None:
    finished: list[list] = []
    browser.scanFinished.connect(finished.append)
    browser.refresh()
    put(tiny_draft, models_dir / "new" / "added-later.gguf")
    browser.refresh()  # queued behind the running scan
    qtbot.waitUntil(lambda: len(finished) == 2, timeout=TIMEOUT_MS)
    assert any(m.path.name == "added-later.gguf" for m in browser.models())


def test_draft_compatibility_with_the_target(qtbot, browser: ModelBrowser, models_dir: Path) -> None:
    target = model(browser, "tiny-target")
    set_target(qtbot, browser, target)
    assert not browser.table.isColumnHidden(DRAFT)
    assert browser.target() == target
    assert cell(browser, "tiny-draft", DRAFT) == "✓ compatible"
    assert cell(browser, "tiny-other-vocab", DRAFT) == "✗ incompatible"
    assert cell(browser, "tiny-target", DRAFT) == "loaded target"

    t_info = inspect_gguf(target.path)
    select(browser, "tiny-draft")
    assert browser.draft_button.isEnabled()
    real = check_draft_compatibility(t_info, inspect_gguf(model(browser, "tiny-draft").path))
    assert real.reason in browser.draft_button.toolTip()

    other = select(browser, "tiny-other-vocab")
    assert browser.load_button.isEnabled() and not browser.draft_button.isEnabled()
    real = check_draft_compatibility(t_info, inspect_gguf(other.path))
    assert not real.compatible and real.reason.startswith("different tokenizer")
    assert browser.draft_button.toolTip() == f"Cannot draft for tiny-target: {real.reason}"
    assert browser.verdict(other) == real
    assert cell(browser, "tiny-other-vocab", DRAFT, Qt.ItemDataRole.ToolTipRole) == real.reason
    assert "cannot draft" in browser.detail_label.text()

    select(browser, "tiny-target")
    assert not browser.draft_button.isEnabled() and "target" in browser.draft_button.toolTip()

    browser.set_target(None)
    assert browser.table.isColumnHidden(DRAFT)
    select(browser, "tiny-other-vocab")
    assert browser.draft_button.isEnabled()


def test_draft_button_waits_for_the_check(
    qtbot, browser: ModelBrowser, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    real = browser.library.compatible_drafts

    def slow(target: LocalModel):
        release.wait(5)
        return real(target)

    monkeypatch.setattr(browser.library, "compatible_drafts", slow)
    select(browser, "tiny-draft")
    browser.set_target(model(browser, "tiny-target"))
    assert not browser.draft_button.isEnabled() and "Checking" in browser.draft_button.toolTip()
    assert cell(browser, "tiny-draft", DRAFT) == "checking…"
    with qtbot.waitSignal(browser.compatibilityChanged, timeout=TIMEOUT_MS):
        release.set()
    assert browser.draft_button.isEnabled()


def test_vanished_file_is_not_loaded(qtbot, browser: ModelBrowser) -> None:
    draft = select(browser, "tiny-draft")
    draft.path.unlink()
    with (
        qtbot.assertNotEmitted(browser.loadRequested),
        qtbot.waitSignal(browser.scanFinished, timeout=TIMEOUT_MS),
    ):
        qtbot.mouseClick(browser.load_button, Qt.MouseButton.LeftButton)
    assert browser.message() == f"file no longer exists: {draft.path}"
    assert not browser.message_label.isHidden()
    assert "tiny-draft" not in [m.name for m in browser.models()]

    other = select(browser, "tiny-other-vocab")
    other.path.unlink()
    with (
        qtbot.assertNotEmitted(browser.useAsDraftRequested),
        qtbot.waitSignal(browser.scanFinished, timeout=TIMEOUT_MS),
    ):
        qtbot.mouseClick(browser.draft_button, Qt.MouseButton.LeftButton)
    assert browser.message() == f"file no longer exists: {other.path}"


def test_selection_survives_a_refresh(qtbot, browser: ModelBrowser) -> None:
    select(browser, "tiny-other-vocab")
    with qtbot.waitSignal(browser.scanFinished, timeout=TIMEOUT_MS):
        browser.refresh()
    assert browser.selected_model().name == "tiny-other-vocab"


def test_add_folder(qtbot, browser: ModelBrowser, dialogs: Dialogs, tmp_path: Path, tiny_draft: Path) -> None:
    extra = tmp_path / "extra"
    put(tiny_draft, extra / "pub" / "repo" / "extra-draft.gguf")

    dialogs.folder = None  # cancelled
    with qtbot.assertNotEmitted(browser.foldersChanged):
        qtbot.mouseClick(browser.add_folder_button, Qt.MouseButton.LeftButton)
    assert dialogs.asked == ["folder"]

    dialogs.folder = extra
    with (
        qtbot.waitSignal(browser.foldersChanged, timeout=1000) as changed,
        qtbot.waitSignal(browser.scanFinished, timeout=TIMEOUT_MS),
    ):
        qtbot.mouseClick(browser.add_folder_button, Qt.MouseButton.LeftButton)
    assert changed.args[0][-1] == extra and len(changed.args[0]) == 2
    assert any(m.path.name == "extra-draft.gguf" for m in browser.models())

    with qtbot.assertNotEmitted(browser.foldersChanged):
        browser.add_folder()  # the same folder again
    assert "already" in browser.message()

    dialogs.folder = tmp_path / "not-there"
    with qtbot.assertNotEmitted(browser.foldersChanged):
        browser.add_folder()
    assert browser.message() == f"not a folder: {tmp_path / 'not-there'}"


def test_set_folders_and_the_empty_state(qtbot, browser: ModelBrowser, tmp_path: Path) -> None:
    select(browser, "tiny-target")
    empty = tmp_path / "empty"
    empty.mkdir()
    with qtbot.waitSignal(browser.scanFinished, timeout=TIMEOUT_MS):
        browser.set_folders([empty])
    assert browser.models() == [] and browser.folders() == [empty]
    assert browser.stack.currentWidget() is browser.empty_label
    assert "No models found" in browser.empty_label.text() and str(empty) in browser.empty_label.text()
    assert not browser.load_button.isEnabled()


def test_delete_asks_first(qtbot, browser: ModelBrowser, dialogs: Dialogs) -> None:
    other = select(browser, "tiny-other-vocab")
    dialogs.confirm = False
    browser.delete_selected()
    assert other.path.exists() and dialogs.asked == ["delete tiny-other-vocab"]
    dialogs.confirm = True
    browser.delete_selected()
    assert not other.path.exists()
    assert "tiny-other-vocab" not in [m.name for m in browser.models()]
    assert browser.message() == "deleted tiny-other-vocab"


def test_reveal_failure_is_shown(browser: ModelBrowser, monkeypatch: pytest.MonkeyPatch) -> None:
    select(browser, "tiny-target")
    monkeypatch.setattr(
        browser.library, "reveal_in_file_manager", lambda path: Verdict(False, "no file manager found")
    )
    browser.reveal_selected()
    assert browser.message() == "no file manager found"
