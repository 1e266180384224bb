"""CI's apt-get never waits for an answer: no terminal input, DEBIAN_FRONTEND=noninteractive, and the whole
apt output printed when an install fails (a prompt or an error is never hidden)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CI = ROOT / ".ci" / "run"


def _function(text: str) -> str:
    m = re.search(r"^apt_install\(\) \{\n.*?^\}\n", text, re.S | re.M)
    assert m, ".ci/run defines apt_install()"
    return m.group(0)


def test_every_apt_get_goes_through_apt_install():
    text = CI.read_text(encoding="utf-8")
    outside = text.replace(_function(text), "")
    assert "apt-get" not in "\n".join(line for line in outside.splitlines() if not line.lstrip().startswith("#"))
    assert "export DEBIAN_FRONTEND=noninteractive" in outside


def test_apt_install_reads_no_input_and_prints_the_output_when_it_fails(tmp_path):
    # apt-get itself needs root and the network here, so a script of that name stands in on PATH: it asks a
    # question (reads stdin) like a package's configuration prompt would, says what it got, and fails
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "apt-get"
    fake.write_text('#!/bin/sh\necho "frontend=$DEBIAN_FRONTEND"\nread answer\necho "answer=[$answer]"\n'
                    '[ "$1" = update ] || { echo "E: no such package" >&2; exit 100; }\n')
    fake.chmod(0o755)
    script = _function(CI.read_text(encoding="utf-8")) + "export DEBIAN_FRONTEND=noninteractive\napt_install pkg\n"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    # stdin stays open and silent: a prompt reading it would wait until the hang guard
    silent, keep_open = os.pipe()
    try:
        proc = subprocess.run(["bash", "-c", script], stdin=silent, capture_output=True, text=True, env=env,
                              timeout=60)
    finally:
        os.close(silent)
        os.close(keep_open)
    out = proc.stdout
    assert proc.returncode == 1
    assert "ci: apt-get install pkg failed:" in out
    assert out.count("frontend=noninteractive") == 2 and "answer=[]" in out and "E: no such package" in out
