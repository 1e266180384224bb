"""The engine stands alone: nothing under app/engine imports another app package."""

from __future__ import annotations

import ast
from pathlib import Path

import app.engine

ENGINE = Path(app.engine.__file__).parent


def _app_imports(source: str, package: str = "app.engine") -> list[str]:
    """Every module under ``app`` that `source`, a module of `package`, imports (relative imports resolved)."""
    parts = package.split(".")
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = parts[: len(parts) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found += [module] + [f"{module}.{alias.name}" for alias in node.names]
    return [name for name in found if name == "app" or name.startswith("app.")]


def _outside_engine(name: str) -> bool:
    return name != "app" and not (name == "app.engine" or name.startswith("app.engine."))


def _package(path: Path) -> str:
    return ".".join(path.relative_to(ENGINE.parent.parent).parent.parts)


def test_the_engine_imports_no_other_app_package() -> None:
    sources = sorted(ENGINE.rglob("*.py"))
    assert len(sources) > 10
    offenders = [
        f"{path.relative_to(ENGINE.parent.parent)}: {name}"
        for path in sources
        for name in _app_imports(path.read_text(encoding="utf-8"), _package(path))
        if _outside_engine(name)
    ]
    assert offenders == []


def test_the_check_sees_every_form_of_import() -> None:
    for line in ("import app.hardware.monitor", "from app.ui import bridge", "from app import store",
                 "def f():\n    from app.library.local import LocalModel", "from ..hardware import monitor",
                 "from .. import ui"):  # fmt: skip
        assert any(_outside_engine(name) for name in _app_imports(line)), line
    assert not any(_outside_engine(name) for name in _app_imports("from app.engine import units"))
    assert not any(_outside_engine(name) for name in _app_imports("from app.engine.memory import ModelLoad"))
    assert not any(_outside_engine(name) for name in _app_imports("from .units import format_bytes"))
