"""Linux desktop integration: install / uninstall Tandem's `.desktop` entry and icons for this user.

``tandem --install-desktop-entry`` writes

* ``$XDG_DATA_HOME/applications/tandem.desktop`` (``Exec`` = absolute path of the running ``tandem``),
* ``$XDG_DATA_HOME/icons/hicolor/<N>x<N>/apps/tandem.png`` for every PNG size in ``resources/icons``,
* ``$XDG_DATA_HOME/icons/hicolor/scalable/apps/tandem.svg``,

where ``$XDG_DATA_HOME`` defaults to ``~/.local/share``. Both operations are idempotent; every failure
is a :class:`DesktopIntegrationError` with a one-line message. Nothing here imports Qt.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "APP_ID",
    "ICON_SIZES",
    "DesktopIntegrationError",
    "InstallResult",
    "data_home",
    "find_executable",
    "install_desktop_entry",
    "render_desktop_entry",
    "resources_dir",
    "run_cli",
    "uninstall_desktop_entry",
]

APP_ID = "tandem"
ICON_SIZES = (16, 32, 48, 64, 128, 256, 512)
_FLAGS = ("--install-desktop-entry", "--uninstall-desktop-entry")


class DesktopIntegrationError(Exception):
    """Installing or removing the desktop entry failed; the message is one line for the user."""


@dataclass
class InstallResult:
    written: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)
    exec_path: Path | None = None


def resources_dir() -> Path:
    """``resources/`` of the source tree, or of a PyInstaller bundle (``sys._MEIPASS/resources``)."""
    candidates = []
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        candidates.append(Path(bundle) / "resources")
    candidates.append(Path(__file__).resolve().parents[1] / "resources")
    for c in candidates:
        if (c / f"{APP_ID}.desktop").is_file():
            return c
    raise DesktopIntegrationError(f"Tandem's resources folder is missing (looked in {', '.join(map(str, candidates))})")


def data_home(env: dict[str, str] | None = None) -> Path:
    """``$XDG_DATA_HOME`` (must be absolute per the spec) or ``~/.local/share``."""
    env = os.environ if env is None else env
    value = env.get("XDG_DATA_HOME", "")
    if value and os.path.isabs(value):
        return Path(value)
    return Path.home() / ".local" / "share"


def find_executable() -> Path:
    """Absolute path of the ``tandem`` program that is running (bundle, venv script or PATH)."""
    if getattr(sys, "frozen", False):
        return Path(sys.executable).absolute()
    candidates: list[Path] = []
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if argv0 is not None and argv0.name == APP_ID:
        found = argv0 if argv0.parent != Path() else shutil.which(APP_ID)
        if found:
            candidates.append(Path(found))
    candidates.append(Path(sys.executable).parent / APP_ID)  # the console script next to the venv's python
    which = shutil.which(APP_ID)
    if which:
        candidates.append(Path(which))
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c.absolute()
    raise DesktopIntegrationError(
        "cannot find the `tandem` program to launch (install Tandem with pip, or run the bundled app)"
    )


def _quote_exec(path: Path) -> str:
    """Quote a program path for the Exec key (Desktop Entry spec, 'The Exec key')."""
    text = str(path)
    if not re.search(r'[\s"\'\\><~|&;$*?#()`]', text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`").replace("$", "\\$")
    # the whole value is a string-type key as well: backslashes are escaped once more
    return '"' + escaped.replace("\\", "\\\\") + '"'


def render_desktop_entry(template: str, exec_path: Path) -> str:
    """The template with ``Exec`` and ``TryExec`` pointing to ``exec_path``."""
    out = []
    for line in template.splitlines():
        if line.startswith("Exec="):
            line = f"Exec={_quote_exec(exec_path)}"
        elif line.startswith("TryExec="):
            line = f"TryExec={str(exec_path)}"
        out.append(line)
    return "\n".join(out) + "\n"


def _targets(base: Path) -> dict[str, Path]:
    icons = base / "icons" / "hicolor"
    targets = {"desktop": base / "applications" / f"{APP_ID}.desktop", "svg": icons / "scalable" / "apps" / f"{APP_ID}.svg"}
    for size in ICON_SIZES:
        targets[f"png{size}"] = icons / f"{size}x{size}" / "apps" / f"{APP_ID}.png"
    return targets


def _write_atomic(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` unless it already holds it; True when something changed."""
    try:
        if path.is_file() and path.read_bytes() == data:
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as e:
        raise DesktopIntegrationError(f"cannot write {path}: {e.strerror or e}") from None
    return True


def _refresh_caches(base: Path) -> None:
    """Best effort: tell menus and icon themes that something changed (missing tools are fine)."""
    jobs = [["update-desktop-database", "-q", str(base / "applications")]]
    if (base / "icons" / "hicolor" / "index.theme").is_file():
        jobs.append(["gtk-update-icon-cache", "-q", "-t", "-f", str(base / "icons" / "hicolor")])
    for cmd in jobs:
        if shutil.which(cmd[0]) and Path(cmd[-1]).is_dir():
            try:
                subprocess.run(cmd, capture_output=True, timeout=30, check=False)
            except (OSError, subprocess.SubprocessError):
                pass
    try:
        os.utime(base / "icons" / "hicolor")  # icon caches watch the theme folder's mtime
    except OSError:
        pass


def install_desktop_entry(
    base: Path | None = None, exec_path: Path | None = None, resources: Path | None = None
) -> InstallResult:
    """Install the entry and icons under ``base`` (default: :func:`data_home`). Idempotent."""
    base = data_home() if base is None else Path(base)
    resources = resources_dir() if resources is None else Path(resources)
    exec_path = find_executable() if exec_path is None else Path(exec_path).absolute()
    sources = {"desktop": resources / f"{APP_ID}.desktop", "svg": resources / "icons" / f"{APP_ID}.svg"}
    for size in ICON_SIZES:
        sources[f"png{size}"] = resources / "icons" / f"{APP_ID}-{size}.png"
    missing = [str(p) for p in sources.values() if not p.is_file()]
    if missing:
        raise DesktopIntegrationError(f"Tandem's resources are incomplete: missing {missing[0]}")
    result = InstallResult(exec_path=exec_path)
    for key, target in _targets(base).items():
        if key == "desktop":
            data = render_desktop_entry(sources[key].read_text(encoding="utf-8"), exec_path).encode("utf-8")
        else:
            data = sources[key].read_bytes()
        if _write_atomic(target, data):
            result.written.append(target)
    _refresh_caches(base)
    return result


def uninstall_desktop_entry(base: Path | None = None) -> InstallResult:
    """Remove what :func:`install_desktop_entry` wrote (only Tandem's files). Idempotent."""
    base = data_home() if base is None else Path(base)
    result = InstallResult()
    for target in _targets(base).values():
        try:
            target.unlink()
        except FileNotFoundError:
            continue
        except OSError as e:
            raise DesktopIntegrationError(f"cannot remove {target}: {e.strerror or e}") from None
        result.removed.append(target)
    if result.removed:
        _refresh_caches(base)
    return result


def run_cli(argv: Sequence[str]) -> int:
    """``tandem --install-desktop-entry`` / ``--uninstall-desktop-entry``: one line out, exit 0 or 1."""
    flags = [a for a in argv if a in _FLAGS]
    rest = [a for a in argv if a not in _FLAGS]
    if len(flags) != 1 or rest:
        print(f"tandem: use exactly one of {' / '.join(_FLAGS)}, without other options", file=sys.stderr)
        return 2
    if sys.platform != "linux":
        print("tandem: desktop entries are for Linux; see packaging/README.md for Windows and macOS",
              file=sys.stderr)
        return 1
    try:
        if flags[0] == "--install-desktop-entry":
            result = install_desktop_entry()
            state = "installed" if result.written else "already installed"
            print(f"tandem: desktop entry {state}: {_targets(data_home())['desktop']} (runs {result.exec_path})")
        else:
            result = uninstall_desktop_entry()
            state = f"removed {len(result.removed)} files" if result.removed else "nothing to remove"
            print(f"tandem: desktop entry uninstalled ({state})")
    except DesktopIntegrationError as e:
        print(f"tandem: {e}", file=sys.stderr)
        return 1
    return 0
