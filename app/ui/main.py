"""Desktop entry point: `tandem` with no sub-command lands here."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "create_main_window"]


def create_main_window(db_path: Path | None = None):
    """Open the stores (recovering replies cut off by a crash) and build the main window."""
    from app.library.local import LocalLibrary, default_models_folder
    from app.library.reference_models import cache_dir
    from app.store.chats import ChatStore
    from app.store.db import open_database
    from app.store.settings import SettingsStore
    from app.ui.main_window import MainWindow

    conn = open_database(db_path)
    chats = ChatStore(conn)
    chats.recover_interrupted()
    settings = SettingsStore(conn)
    library_cache = (db_path.parent if db_path else default_models_folder().parent) / "library-cache.json"
    folders = [default_models_folder()]
    demo_folder = cache_dir()
    library = LocalLibrary(folders, cache_path=library_cache)
    extra = [demo_folder] if demo_folder.exists() else []
    return MainWindow(chats, settings, library, extra_folders=extra)


def _has_application() -> bool:
    from PySide6.QtCore import QCoreApplication

    return QCoreApplication.instance() is not None


def main(argv: Sequence[str] | None = None) -> int:
    import os

    from app.ui.platform_check import check_display

    if not _has_application():
        # before Qt: a missing xcb library would otherwise abort the process with no name to install
        verdict = check_display()
        if verdict.message:
            print(verdict.message, file=sys.stderr)
        if not verdict.ok:
            return 1
        if verdict.platform:
            os.environ["QT_QPA_PLATFORM"] = verdict.platform
    from PySide6.QtGui import QGuiApplication, QIcon
    from PySide6.QtWidgets import QApplication, QMessageBox

    from app.store.db import StoreError, default_db_path, move_aside
    from app.ui.theme import apply_theme

    app = QApplication.instance() or QApplication([sys.argv[0], *(argv or [])])
    app.setApplicationName("Tandem")
    app.setOrganizationName("Tandem")
    QGuiApplication.setDesktopFileName("tandem")
    icon = Path(__file__).resolve().parents[2] / "resources" / "icons" / "tandem.svg"
    if icon.exists():
        app.setWindowIcon(QIcon(str(icon)))
    apply_theme(app, "system")
    from app.crash import install_into_gui
    from app.ui.single_instance import claim_single_instance

    install_into_gui(app)
    guard = claim_single_instance()
    if guard is None:  # another Tandem is running: it was asked to come to the front
        return 0
    try:
        window = create_main_window()
    except StoreError as e:
        answer = QMessageBox.critical(
            None, "Tandem", f"{e}\n\nMove the damaged chat database aside and start with an empty one?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        )
        if answer != QMessageBox.StandardButton.Yes:
            return 1
        moved = move_aside(default_db_path())
        QMessageBox.information(None, "Tandem", f"The old database was kept as {moved}.")
        window = create_main_window()
    apply_theme(app, str(window.settings.get("theme", "system")))
    window.show()
    guard.attach(window)
    return app.exec()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
