#!/usr/bin/env bash
# Packaging smoke test (not in CI): build the bundle if needed, start it with --smoke-test under Xvfb
# (or Qt's offscreen platform when xvfb-run is missing): it loads the demo model, generates a few
# tokens and must exit 0. REBUILD=1 forces a fresh build. Needs the demo model: `tandem setup` once.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
EXE="$ROOT/dist/tandem/tandem"
if [[ ! -x "$EXE" || "${REBUILD:-0}" == "1" ]]; then
  nice bash packaging/build.sh
fi
RUN=()
if command -v xvfb-run >/dev/null 2>&1; then
  RUN=(xvfb-run -a -s "-screen 0 1280x800x24")
  echo "smoke.sh: running under Xvfb" >&2
else
  export QT_QPA_PLATFORM=offscreen
  echo "smoke.sh: xvfb-run not found (apt-get install -y xvfb); using QT_QPA_PLATFORM=offscreen" >&2
fi
start=$(date +%s)
set +e
"${RUN[@]}" timeout 300 "$EXE" --smoke-test
rc=$?
set -e
echo "smoke.sh: --smoke-test exit code $rc after $(( $(date +%s) - start ))s; bundle size $(du -sh "$ROOT/dist/tandem" | cut -f1)"
if [[ $rc -ne 0 ]]; then echo "smoke.sh: FAILED" >&2; exit 1; fi

# the window itself (Qt plugins, icons, stores) in throw-away data folders: it must still be up after 20 s
GUI_RUN=("${RUN[@]}")
GUI_ENV=()
QXCB="$ROOT/dist/tandem/_internal/PySide6/Qt/plugins/platforms/libqxcb.so"
if [[ ${#RUN[@]} -gt 0 && -f "$QXCB" ]] && ldd "$QXCB" | grep -q "not found"; then
  missing="$(ldd "$QXCB" | awk '/not found/ {print $1}' | sort -u | tr '\n' ' ')"
  echo "smoke.sh: Qt's xcb plugin needs system libraries that are missing here: $missing" >&2
  echo "smoke.sh: (Debian/Ubuntu: apt-get install -y libxcb-icccm4 libxcb-keysyms1 libxcb-cursor0 ...);" \
    "checking the window with QT_QPA_PLATFORM=offscreen instead" >&2
  GUI_RUN=()
  GUI_ENV=(QT_QPA_PLATFORM=offscreen)
fi
TMP="$(mktemp -d)"; trap 'rm -rf "$TMP"' EXIT
set +e
env "${GUI_ENV[@]}" XDG_DATA_HOME="$TMP/data" XDG_CONFIG_HOME="$TMP/config" XDG_STATE_HOME="$TMP/state" \
  "${GUI_RUN[@]}" timeout 20 "$EXE" >"$TMP/gui.log" 2>&1
grc=$?
set -e
if [[ $grc -ne 124 ]]; then
  echo "smoke.sh: the desktop app exited early (code $grc):" >&2; tail -20 "$TMP/gui.log" >&2; exit 1
fi
echo "smoke.sh: desktop app started and stayed up for 20 s"
echo "smoke.sh: OK"
