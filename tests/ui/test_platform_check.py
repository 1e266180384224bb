"""The xcb check before Qt starts: missing libraries are named with their packages; Wayland or a clean exit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.ui.platform_check import PACKAGES, check_display, install_hint, missing_libraries, xcb_plugin

LDD_MISSING = """\
\tlinux-vdso.so.1 (0x00007ffd)
\tlibxkbcommon-x11.so.0 => /lib/x86_64-linux-gnu/libxkbcommon-x11.so.0 (0x00007f93)
\tlibxcb-cursor.so.0 => not found
\tlibxcb-icccm.so.4 => not found
\tlibxcb-keysyms.so.1 => not found
\tlibxcb-icccm.so.4 => not found
\tlibfoo-unknown.so.7 => not found
"""
X11 = {"DISPLAY": ":0"}
PLUGIN = Path("/qt/plugins/platforms/libqxcb.so")


def test_ldd_output_is_read_for_not_found_libraries():
    assert missing_libraries(LDD_MISSING) == ["libxcb-cursor.so.0", "libxcb-icccm.so.4", "libxcb-keysyms.so.1",
                                              "libfoo-unknown.so.7"]
    assert missing_libraries("\tlibc.so.6 => /lib/libc.so.6 (0x1)\n") == []


def test_the_hint_names_debian_and_fedora_packages():
    hint = install_hint(["libxcb-cursor.so.0", "libxcb-icccm.so.4", "libxcb-keysyms.so.1", "libfoo-unknown.so.7"])
    assert "sudo apt install libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1" in hint
    assert "sudo dnf install xcb-util-cursor xcb-util-wm xcb-util-keysyms" in hint
    assert "libfoo-unknown.so.7" in hint


def test_missing_libraries_exit_cleanly_with_the_packages():
    v = check_display(X11, platform="linux", plugin=PLUGIN, ldd=lambda _p: LDD_MISSING, wayland_available=True)
    assert not v.ok and v.platform is None
    assert "libxcb-icccm.so.4" in v.message and "sudo apt install" in v.message and "sudo dnf install" in v.message


def test_a_wayland_session_starts_on_wayland_instead():
    env = {"DISPLAY": ":0", "WAYLAND_DISPLAY": "wayland-0"}
    v = check_display(env, platform="linux", plugin=PLUGIN, ldd=lambda _p: LDD_MISSING, wayland_available=True)
    assert v.ok and v.platform == "wayland" and "Wayland" in v.message
    no_plugin = check_display(env, platform="linux", plugin=PLUGIN, ldd=lambda _p: LDD_MISSING,
                              wayland_available=False)
    assert not no_plugin.ok


def test_nothing_to_say_when_everything_loads_or_another_platform_is_chosen():
    assert check_display(X11, platform="linux", plugin=PLUGIN, ldd=lambda _p: "") == check_display(
        {"QT_QPA_PLATFORM": "offscreen"}, platform="linux", ldd=lambda _p: LDD_MISSING)
    assert check_display({}, platform="win32").ok
    assert check_display({"WAYLAND_DISPLAY": "w"}, platform="linux", ldd=lambda _p: LDD_MISSING).ok


def test_no_display_at_all_is_said_plainly():
    v = check_display({}, platform="linux", plugin=PLUGIN, ldd=lambda _p: "")
    assert not v.ok and "no display" in v.message and "tandem chat" in v.message


@pytest.mark.skipif(not sys.platform.startswith("linux") or xcb_plugin() is None, reason="Linux with PySide6's xcb")
def test_the_real_plugin_is_checked_with_the_real_ldd():
    """On this machine: every library ldd reports missing is one the table knows (else the hint is vague)."""
    from app.ui.platform_check import _run_ldd

    out = _run_ldd(xcb_plugin())
    assert out is not None and "libxcb" in out
    assert all(lib in PACKAGES for lib in missing_libraries(out))


def test_the_app_exits_with_the_message_instead_of_aborting(tmp_path):
    """`tandem` with an X display whose xcb libraries are missing: exit 1 and the message, no Qt abort.
    The missing libraries are simulated by an `ldd` earlier on PATH that reports them missing."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "ldd").write_text("#!/bin/sh\nprintf '\\tlibxcb-icccm.so.4 => not found\\n'\n")
    (fake / "ldd").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "WAYLAND_DISPLAY")}
    env.update(DISPLAY=":99", PATH=f"{fake}{os.pathsep}{env.get('PATH', '')}", TANDEM_DATA_DIR=str(tmp_path / "d"))
    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, "-c", "import sys; from app.ui.main import main; sys.exit(main([]))"],
                       cwd=root, env={**env, "PYTHONPATH": str(root)}, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert "libxcb-icccm.so.4" in r.stderr and "libxcb-icccm4" in r.stderr and "xcb-util-wm" in r.stderr
    assert "Traceback" not in r.stderr
