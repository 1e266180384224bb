#!/usr/bin/env bash
# Build the one-folder Tandem bundle: dist/tandem/tandem (run from anywhere; `nice bash packaging/build.sh`).
#   PYTHON=/path/to/python  use another interpreter/venv (default: the project's .venv, else python3)
#   CLEAN=1                 start from scratch (removes build/ and dist/tandem)
# PyInstaller is installed into that environment when missing (it is a build tool, not a runtime dependency).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if ! "$PYTHON" -c "import PyInstaller" 2>/dev/null; then
  echo "build.sh: installing pyinstaller into $("$PYTHON" -c 'import sys; print(sys.prefix)')" >&2
  "$PYTHON" -m pip install --quiet "pyinstaller>=6.10"
fi
"$PYTHON" -c "import llama_cpp, PySide6, app" || { echo "build.sh: install Tandem first: $PYTHON -m pip install -e ." >&2; exit 1; }
if [[ "${CLEAN:-0}" == "1" ]]; then rm -rf build/tandem dist/tandem; fi
"$PYTHON" -m PyInstaller --noconfirm --log-level WARN \
  --distpath "$ROOT/dist" --workpath "$ROOT/build" packaging/tandem.spec
DIST="$ROOT/dist/tandem"
[[ -x "$DIST/tandem" || -x "$DIST/tandem.exe" ]] || { echo "build.sh: no executable in $DIST" >&2; exit 1; }
ls "$DIST"/_internal/llama_cpp/lib/ | grep -q '^libllama' || { echo "build.sh: llama_cpp/lib missing from the bundle" >&2; exit 1; }
echo "bundle: $DIST"
echo "size:   $(du -sh "$DIST" | cut -f1)"
