"""The service and the server run without Qt: nothing under app/service or app/server imports PySide6 or app.ui."""

from __future__ import annotations

import ast
from pathlib import Path

import app.server
import app.service

PACKAGES = [Path(app.service.__file__).parent, Path(app.server.__file__).parent]


def _imports(source: str) -> list[str]:
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append(node.module)
    return found


def _qt(name: str) -> bool:
    return name.split(".")[0] in ("PySide6", "shiboken6") or name == "app.ui" or name.startswith("app.ui.")


def test_service_and_server_import_no_qt() -> None:
    sources = sorted(p for pkg in PACKAGES for p in pkg.rglob("*.py"))
    assert len(sources) >= 6
    offenders = [f"{p.name}: {name}" for p in sources for name in _imports(p.read_text(encoding="utf-8")) if _qt(name)]
    assert offenders == []
    assert _qt("PySide6.QtCore") and _qt("app.ui.bridge") and not _qt("app.service.engine_service")
