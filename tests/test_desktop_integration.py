"""Desktop entry + icons: install / uninstall into a temporary $XDG_DATA_HOME, and validate the entry."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from app import desktop_integration as di

ROOT = Path(__file__).resolve().parents[1]
ENTRY = ROOT / "resources" / "tandem.desktop"
REQUIRED = ("Type", "Name", "Exec", "Icon", "Categories", "StartupWMClass")
MAIN_CATEGORIES = {"AudioVideo", "Audio", "Video", "Development", "Education", "Game", "Graphics", "Network",
                   "Office", "Science", "Settings", "System", "Utility"}


def _fake_exe(tmp_path: Path, name: str = "tandem") -> Path:
    exe = tmp_path / "bin" / name
    exe.parent.mkdir(parents=True, exist_ok=True)
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe


def _parse(path: Path) -> dict[str, str]:
    cp = configparser.RawConfigParser(delimiters=("=",), interpolation=None)
    cp.optionxform = str  # keys are case-sensitive
    cp.read_string(path.read_text(encoding="utf-8"))
    assert cp.sections()[0] == "Desktop Entry", "the first group must be [Desktop Entry]"
    return dict(cp["Desktop Entry"])


def _strict_validate(path: Path) -> None:
    """What desktop-file-validate checks for this entry, for machines without the tool."""
    text = path.read_text(encoding="utf-8")
    assert text.splitlines()[0] == "[Desktop Entry]"
    for line in text.splitlines():
        assert not line.startswith(" "), f"leading space: {line!r}"
        if line and not line.startswith(("#", "[")):
            assert re.match(r"^[A-Za-z0-9-]+(\[[^\]]+\])?=", line), f"bad key line: {line!r}"
    entry = _parse(path)
    for key in REQUIRED:
        assert entry.get(key), f"{key} is missing"
    assert entry["Type"] == "Application"
    assert entry.get("Terminal", "false") in ("true", "false")
    cats = entry["Categories"]
    assert cats.endswith(";"), "Categories must end with ';'"
    assert set(cats.rstrip(";").split(";")) & MAIN_CATEGORIES, "needs a registered main category"
    assert entry.get("Keywords", ";").endswith(";")
    assert not Path(entry["Icon"]).suffix, "Icon is a theme name, without extension"
    if "Version" in entry:
        assert entry["Version"] in ("1.0", "1.1", "1.2", "1.3", "1.4")


def _validate(path: Path) -> None:
    _strict_validate(path)
    tool = shutil.which("desktop-file-validate")
    if tool:  # CI: apt-get install -y desktop-file-utils
        out = subprocess.run([tool, str(path)], capture_output=True, text=True)
        problems = [ln for ln in out.stdout.splitlines() if " error: " in ln or " warning: " in ln]
        assert out.returncode == 0 and not problems, out.stdout + out.stderr  # hints are fine


def test_resource_entry_is_valid():
    _validate(ENTRY)
    entry = _parse(ENTRY)
    assert entry["Exec"] == "tandem" and entry["Icon"] == "tandem" and entry["StartupWMClass"] == "tandem"
    assert entry["Terminal"] == "false"


def test_icons_exist_in_every_size():
    icons = ROOT / "resources" / "icons"
    assert (icons / "tandem.svg").read_text().lstrip().startswith("<?xml")
    for size in di.ICON_SIZES:
        data = (icons / f"tandem-{size}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert (width, height) == (size, size)


def test_install_and_uninstall(tmp_path, monkeypatch):
    base = tmp_path / "share"
    monkeypatch.setenv("XDG_DATA_HOME", str(base))
    exe = _fake_exe(tmp_path)
    result = di.install_desktop_entry(exec_path=exe)
    installed = base / "applications" / "tandem.desktop"
    assert installed in result.written and len(result.written) == 2 + len(di.ICON_SIZES)
    entry = _parse(installed)
    assert entry["Exec"] == str(exe) and entry["TryExec"] == str(exe)
    _validate(installed)
    for size in di.ICON_SIZES:
        assert (base / "icons" / "hicolor" / f"{size}x{size}" / "apps" / "tandem.png").is_file()
    assert (base / "icons" / "hicolor" / "scalable" / "apps" / "tandem.svg").is_file()

    again = di.install_desktop_entry(exec_path=exe)  # idempotent: nothing to write
    assert again.written == []

    removed = di.uninstall_desktop_entry()
    assert len(removed.removed) == 2 + len(di.ICON_SIZES)
    assert not installed.exists()
    assert di.uninstall_desktop_entry().removed == []  # idempotent


def test_exec_with_spaces_is_quoted(tmp_path):
    exe = _fake_exe(tmp_path / "my apps")
    base = tmp_path / "share"
    di.install_desktop_entry(base=base, exec_path=exe)
    installed = base / "applications" / "tandem.desktop"
    assert _parse(installed)["Exec"] == f'"{exe}"'
    _validate(installed)


def test_default_data_home(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert di.data_home() == tmp_path / ".local" / "share"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/path")  # not absolute: ignored, per the spec
    assert di.data_home() == tmp_path / ".local" / "share"


def test_find_executable_next_to_python(tmp_path, monkeypatch):
    exe = _fake_exe(tmp_path)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python"))
    monkeypatch.setattr(sys, "argv", ["python"])
    assert di.find_executable() == exe


def test_unwritable_target_is_one_line_error(tmp_path):
    if os.geteuid() == 0:
        blocker = tmp_path / "share"
        blocker.write_text("a file where a folder should be")
    else:
        blocker = tmp_path / "share"
        blocker.mkdir()
        blocker.chmod(0o500)
    with pytest.raises(di.DesktopIntegrationError) as err:
        di.install_desktop_entry(base=blocker, exec_path=_fake_exe(tmp_path))
    assert "\n" not in str(err.value) and "cannot write" in str(err.value)


def test_run_cli(tmp_path, monkeypatch, capsys):
    base = tmp_path / "share"
    monkeypatch.setenv("XDG_DATA_HOME", str(base))
    exe = _fake_exe(tmp_path)
    monkeypatch.setattr(di, "find_executable", lambda: exe)
    monkeypatch.setattr(sys, "platform", "linux")
    assert di.run_cli(["--install-desktop-entry"]) == 0
    assert "installed" in capsys.readouterr().out
    assert (base / "applications" / "tandem.desktop").is_file()
    assert di.run_cli(["--uninstall-desktop-entry"]) == 0
    assert not (base / "applications" / "tandem.desktop").exists()
    assert di.run_cli(["--install-desktop-entry", "--uninstall-desktop-entry"]) == 2
    capsys.readouterr()

    def broken():
        raise di.DesktopIntegrationError("cannot find the `tandem` program")

    monkeypatch.setattr(di, "find_executable", broken)
    assert di.run_cli(["--install-desktop-entry"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tandem: ")
