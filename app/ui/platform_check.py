"""Before Qt starts on Linux: can its xcb (X11) platform plugin load? If not, say what to install.

Qt aborts with "Could not load the Qt platform plugin "xcb"" when one of the plugin's system libraries is
missing, and names none of them. :func:`check_display` runs *before* the ``QApplication`` exists: it asks
``ldd`` which libraries of ``libqxcb.so`` (and of Qt's xcb library it pulls in) are "not found" and maps
them to the packages that provide them on Debian/Ubuntu and on Fedora (:data:`PACKAGES`).

What happens then (:class:`DisplayVerdict`): nothing to say → start as usual; libraries missing and a
Wayland session (``WAYLAND_DISPLAY``) with Qt's Wayland plugin → start on Wayland, after printing what xcb
lacks; otherwise → print the message and exit with status 1 (no Qt abort, no core dump). No display at all
(neither ``DISPLAY`` nor ``WAYLAND_DISPLAY``) is said plainly too. Another platform chosen with
``QT_QPA_PLATFORM`` (``offscreen`` in tests, ``wayland``, …) is not checked.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PACKAGES", "DisplayVerdict", "check_display", "install_hint", "missing_libraries", "xcb_plugin"]

#: soname → (Debian/Ubuntu package, Fedora package)
PACKAGES: dict[str, tuple[str, str]] = {
    "libxcb-cursor.so.0": ("libxcb-cursor0", "xcb-util-cursor"),
    "libxcb-icccm.so.4": ("libxcb-icccm4", "xcb-util-wm"),
    "libxcb-keysyms.so.1": ("libxcb-keysyms1", "xcb-util-keysyms"),
    "libxcb-image.so.0": ("libxcb-image0", "xcb-util-image"),
    "libxcb-render-util.so.0": ("libxcb-render-util0", "xcb-util-renderutil"),
    "libxcb-util.so.1": ("libxcb-util1", "xcb-util"),
    "libxkbcommon-x11.so.0": ("libxkbcommon-x11-0", "libxkbcommon-x11"),
    "libxkbcommon.so.0": ("libxkbcommon0", "libxkbcommon"),
    "libxcb-xkb.so.1": ("libxcb-xkb1", "libxcb"),
    "libxcb-randr.so.0": ("libxcb-randr0", "libxcb"),
    "libxcb-shape.so.0": ("libxcb-shape0", "libxcb"),
    "libxcb-xfixes.so.0": ("libxcb-xfixes0", "libxcb"),
    "libxcb-sync.so.1": ("libxcb-sync1", "libxcb"),
    "libxcb-shm.so.0": ("libxcb-shm0", "libxcb"),
    "libxcb-render.so.0": ("libxcb-render0", "libxcb"),
    "libxcb-xinerama.so.0": ("libxcb-xinerama0", "libxcb"),
    "libxcb-xinput.so.0": ("libxcb-xinput0", "libxcb"),
    "libxcb.so.1": ("libxcb1", "libxcb"),
    "libX11-xcb.so.1": ("libx11-xcb1", "libX11-xcb"),
    "libX11.so.6": ("libx11-6", "libX11"),
    "libXau.so.6": ("libxau6", "libXau"),
    "libXdmcp.so.6": ("libxdmcp6", "libXdmcp"),
    "libGL.so.1": ("libgl1", "libglvnd-glx"),
    "libGLX.so.0": ("libglx0", "libglvnd-glx"),
    "libGLdispatch.so.0": ("libglvnd0", "libglvnd"),
    "libEGL.so.1": ("libegl1", "libglvnd-egl"),
    "libOpenGL.so.0": ("libopengl0", "libglvnd-opengl"),
    "libfontconfig.so.1": ("libfontconfig1", "fontconfig"),
    "libfreetype.so.6": ("libfreetype6", "freetype"),
    "libdbus-1.so.3": ("libdbus-1-3", "dbus-libs"),
    "libglib-2.0.so.0": ("libglib2.0-0", "glib2"),
    "libgthread-2.0.so.0": ("libglib2.0-0", "glib2"),
    "libSM.so.6": ("libsm6", "libSM"),
    "libICE.so.6": ("libice6", "libICE"),
}


@dataclass(frozen=True)
class DisplayVerdict:
    ok: bool  # start Qt (possibly on `platform`)
    message: str = ""  # what to print on stderr ("" = nothing)
    platform: str | None = None  # the platform to start on instead (QT_QPA_PLATFORM), e.g. "wayland"


def _qt_dir() -> Path | None:
    try:
        import PySide6
    except ImportError:
        return None
    return Path(PySide6.__file__).resolve().parent / "Qt"


def xcb_plugin(qt_dir: Path | None = None) -> Path | None:
    """PySide6's ``libqxcb.so`` (None when it is not there)."""
    qt_dir = qt_dir or _qt_dir()
    plugin = qt_dir / "plugins" / "platforms" / "libqxcb.so" if qt_dir else None
    return plugin if plugin is not None and plugin.exists() else None


def _run_ldd(path: Path) -> str | None:
    ldd = shutil.which("ldd")
    if ldd is None:
        return None
    try:
        return subprocess.run([ldd, str(path)], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def missing_libraries(ldd_output: str) -> list[str]:
    """The sonames ``ldd`` reports as "not found", in its order, without repeats."""
    out: list[str] = []
    for line in ldd_output.splitlines():
        name, sep, where = line.strip().partition("=>")
        if sep and where.strip().startswith("not found") and name.strip() not in out:
            out.append(name.strip())
    return out


def install_hint(missing: list[str]) -> str:
    """The install commands for the packages that provide ``missing`` (Debian/Ubuntu, then Fedora)."""
    debian: list[str] = []
    fedora: list[str] = []
    for lib in missing:
        deb, fed = PACKAGES.get(lib, (None, None))
        if deb and deb not in debian:
            debian.append(deb)
        if fed and fed not in fedora:
            fedora.append(fed)
    lines = []
    if debian:
        lines.append(f"  Debian/Ubuntu: sudo apt install {' '.join(debian)}")
    if fedora:
        lines.append(f"  Fedora:        sudo dnf install {' '.join(fedora)}")
    unknown = [lib for lib in missing if lib not in PACKAGES]
    if unknown:
        lines.append(f"  (also needed: {', '.join(unknown)} — search your distribution's packages for it)")
    return "\n".join(lines)


def check_display(
    env: Mapping[str, str] | None = None,
    *,
    platform: str = sys.platform,
    plugin: Path | None = None,
    ldd: Callable[[Path], str | None] = _run_ldd,
    wayland_available: bool | None = None,
) -> DisplayVerdict:
    """Whether the desktop window can open (see the module docstring)."""
    env = os.environ if env is None else env
    chosen = env.get("QT_QPA_PLATFORM", "")
    if not platform.startswith("linux") or (chosen and not chosen.startswith("xcb")):
        return DisplayVerdict(True)
    wayland = bool(env.get("WAYLAND_DISPLAY"))
    if not env.get("DISPLAY") and not wayland:
        return DisplayVerdict(False, "tandem: no display to open the window on (neither DISPLAY nor WAYLAND_DISPLAY "
                                     "is set). Start it from a desktop session, or use `tandem chat` in a terminal.")
    if not env.get("DISPLAY") and not chosen:
        return DisplayVerdict(True)  # a Wayland session: Qt picks its Wayland plugin
    plugin = plugin or xcb_plugin()
    report = ldd(plugin) if plugin is not None else None
    missing = missing_libraries(report) if report else []
    if not missing:
        return DisplayVerdict(True)
    message = ("tandem: the window cannot open on X11: Qt's xcb platform plugin needs libraries that are not "
               f"installed: {', '.join(missing)}.\nInstall them with:\n{install_hint(missing)}")
    if wayland_available is None:
        qt_dir = plugin.parents[2] if plugin is not None else None
        wayland_available = bool(qt_dir and (qt_dir / "plugins" / "platforms" / "libqwayland.so").exists())
    if wayland and wayland_available and not chosen:
        return DisplayVerdict(True, message + "\nStarting on Wayland meanwhile.", platform="wayland")
    return DisplayVerdict(False, message)
