"""The PyInstaller spec collects llama-cpp-python's shared libraries (nothing is built here)."""

from __future__ import annotations

import ast
import fnmatch
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "packaging" / "tandem.spec"


def _tree() -> ast.Module:
    return ast.parse(SPEC.read_text(encoding="utf-8"), filename=str(SPEC))


def _collect_dynamic_libs():
    """PyInstaller's own function; without PyInstaller, the same search over the package folder."""
    try:
        from PyInstaller.utils.hooks import collect_dynamic_libs

        return collect_dynamic_libs
    except ImportError:
        import importlib.util

        def collect_dynamic_libs(package, destdir=None, search_patterns=()):
            pkg_dir = Path(importlib.util.find_spec(package).origin).parent
            found = []
            for folder, _dirs, files in os.walk(pkg_dir):
                for name in files:
                    if any(fnmatch.fnmatch(name, p) for p in search_patterns):
                        rel = Path(folder).relative_to(pkg_dir.parent)
                        found.append((str(Path(folder) / name), destdir or str(rel)))
            return found

        return collect_dynamic_libs


def _spec_helper():
    """``llama_cpp_binaries`` and its patterns, taken out of the spec without running the rest of it."""
    tree = _tree()
    wanted = [n for n in tree.body if (isinstance(n, ast.FunctionDef) and n.name == "llama_cpp_binaries")
              or (isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "LLAMA_LIB_PATTERNS" for t in n.targets))]
    assert len(wanted) == 2, "the spec must define LLAMA_LIB_PATTERNS and llama_cpp_binaries()"
    namespace = {"Path": Path, "collect_dynamic_libs": _collect_dynamic_libs()}
    exec(compile(ast.Module(body=wanted, type_ignores=[]), str(SPEC), "exec"), namespace)
    return namespace["llama_cpp_binaries"]


def test_spec_parses_and_uses_the_helper():
    tree = _tree()
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert {"Analysis", "PYZ", "EXE", "COLLECT"} <= names
    calls = {n.func.id: n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert "collect_dynamic_libs" in calls and "llama_cpp_binaries" in calls
    analysis = calls["Analysis"]
    kw = {k.arg: k.value for k in analysis.keywords}
    assert isinstance(kw["binaries"], ast.Name) and kw["binaries"].id == "binaries"
    assigned = [n for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "binaries"]
    assert assigned and ast.unparse(assigned[0].value) == "llama_cpp_binaries()"
    entry = ast.unparse(analysis.args[0])
    assert "tandem_entry.py" in entry and (ROOT / "packaging" / "tandem_entry.py").is_file()
    exe_kw = {k.arg: k.value for k in calls["EXE"].keywords}
    assert ast.literal_eval(exe_kw["name"]) == "tandem"
    text = SPEC.read_text()
    for needed in ("jinja2.sandbox", 'collect_submodules("gguf")', '"resources"', "PySide6"):
        assert needed in text


def test_spec_collects_llama_cpp_lib():
    pytest.importorskip("llama_cpp")
    found = _spec_helper()()
    by_name = {Path(src).name: dest for src, dest in found}
    lib_names = [n for n in by_name if n.startswith("libllama.")]
    assert "libllama.so" in by_name or any(n.endswith((".dll", ".dylib")) for n in lib_names), by_name
    assert all(Path(dest).as_posix() == "llama_cpp/lib" for dest in by_name.values())
    if "libllama.so" in by_name:
        # the SONAMEs the libraries link each other with must travel too, not only what ctypes opens
        import subprocess

        src = next(s for s, _ in found if Path(s).name == "libllama.so")
        for lib in Path(src).parent.glob("lib*.so.[0-9]"):
            assert lib.name in by_name, f"{lib.name} is missing from the bundle"
        readelf = subprocess.run(["readelf", "-d", src], capture_output=True, text=True) if os.path.exists(
            "/usr/bin/readelf") else None
        if readelf is not None and readelf.returncode == 0:
            for line in readelf.stdout.splitlines():
                if "(NEEDED)" in line and ("libggml" in line or "libllama" in line):
                    needed = line.split("[", 1)[1].rstrip("]")
                    assert needed in by_name, f"libllama.so needs {needed}, which the spec does not collect"


def test_entry_script_runs_the_cli():
    text = (ROOT / "packaging" / "tandem_entry.py").read_text()
    assert "from app.cli import main" in text and "sys.exit(main())" in text


def test_spec_collects_the_package_data_the_app_reads_at_run_time():
    """Every package-data entry of pyproject.toml is collected by the spec (e.g. the benchmark's prompts)."""
    import tomllib

    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"][
        "package-data"
    ]
    collected = {
        n.args[0].value
        for n in ast.walk(_tree())
        if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "collect_data_files" and n.args
        and isinstance(n.args[0], ast.Constant)
    }
    assert set(package_data) <= collected, set(package_data) - collected
