"""`tandem serve`: a real subprocess serving the tiny models; bad options get one clear line."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.test_cli import assert_one_line_error, tandem

ROOT = Path(__file__).resolve().parents[1]


def test_serve_with_a_draft_answers_with_speculation_and_stops_on_ctrl_c(tmp_path, tiny_models):
    models = tmp_path / "models" / "org" / "repo"
    models.mkdir(parents=True)
    for p in tiny_models.values():
        shutil.copy(p, models / p.name)
    env = {**os.environ, "TANDEM_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", "0", "--models-dir",
                             str(tmp_path / "models"), "--model", "tiny-target", "--draft", "tiny-draft",
                             "--draft-max", "4"], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        base = None
        deadline = time.monotonic() + 120
        while base is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "the server exited"
            m = re.search(r"(http://127\.0\.0\.1:\d+/v1)", line)
            base = m.group(1) if m else None
        assert base is not None
        health = httpx.get(base.removesuffix("/v1") + "/health").json()
        assert health["loaded"] == ["org/repo/tiny-target"]  # --model is loaded at start
        r = httpx.post(f"{base}/chat/completions", timeout=60,
                       json={"model": "org/repo/tiny-target", "messages": [{"role": "user", "content": "the value"}],
                             "max_tokens": 30, "temperature": 0})
        assert r.status_code == 200 and r.json()["timings"]["draft_n"] > 0
        log = proc.stderr.readline()
        assert "POST /v1/chat/completions 200" in log and "draft tokens" in log
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_refuses_unsafe_or_incomplete_options(tmp_path):
    assert_one_line_error(tandem("serve", "--host", "0.0.0.0", "--port", "0", "--models-dir", str(tmp_path)), 2,
                          "API key")
    assert_one_line_error(tandem("serve", "--draft", "x"), 2, "--model")
    assert_one_line_error(tandem("serve", "--port", "70000"), 2, "--port")
    assert_one_line_error(tandem("serve", "--port", "0", "--models-dir", str(tmp_path), "--model", "missing"), 1,
                          "not in the library")
