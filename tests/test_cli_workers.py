"""`tandem worker`, `tandem workers` and `--worker` / `--split` on the command line (real subprocesses)."""

from __future__ import annotations

import json

import pytest

from tests.fixtures_workers import free_port
from tests.test_cli import assert_one_line_error, tandem


@pytest.mark.parametrize(("args", "needle"), [
    (["--worker", "nohost"], "not HOST:PORT"),
    (["--worker", "box:99999"], "port must be a number from 1 to 65535"),
    (["--worker", "[::1]:50052"], "IPv6"),
    (["--split", "1,1"], "--split needs at least one --worker"),
    (["--worker", "127.0.0.1:50052", "--split", "1,x"], "numbers separated by commas"),
])
def test_bad_worker_options_exit_2_with_one_line(tiny_target, args, needle):
    proc = tandem("generate", "-m", str(tiny_target), "-p", "hi", *args)
    assert_one_line_error(proc, 2, needle)


def test_worker_refuses_a_host_that_is_not_an_ipv4_address():
    assert_one_line_error(tandem("worker", "--host", "example.org"), 2, "IPv4")


def test_an_unreachable_worker_is_one_line_and_nothing_runs(rpc, tiny_target):
    port = free_port()
    proc = tandem("generate", "-m", str(tiny_target), "-p", "hi", "--worker", f"127.0.0.1:{port}")
    assert_one_line_error(proc, 1, f"127.0.0.1:{port}", "unreachable")
    assert proc.stdout == ""


def test_workers_shows_each_worker_and_generate_runs_on_them(two_workers, tiny_target):
    a, b = (str(w.endpoint) for w in two_workers)
    dead = f"127.0.0.1:{free_port()}"
    proc = tandem("workers", a, b, dead)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"{a}: RPC 7.0.0, 1 device") and "free of" in lines[0]
    assert any(line.startswith(f"{b}: RPC 7.0.0") for line in lines)
    assert f"worker {dead} is unreachable" in proc.stdout
    info = json.loads(tandem("workers", a, "--json").stdout)
    assert info[0]["endpoint"] == a and info[0]["devices"][0]["free"] > 0

    local = tandem("generate", "-m", str(tiny_target), "-p", "def if", "-n", "24", "--temperature", "0", "--json")
    remote = tandem("generate", "-m", str(tiny_target), "-p", "def if", "-n", "24", "--temperature", "0", "--json",
                    "--worker", a, "--worker", b, "--split", "1,1,1")
    assert remote.returncode == 0, remote.stderr
    assert json.loads(remote.stdout)["tokens"] == json.loads(local.stdout)["tokens"]
    assert "target layers: this machine 1" in remote.stderr and a in remote.stderr


def test_a_worker_bound_beyond_loopback_warns_in_plain_words(rpc):
    import subprocess
    import sys
    import time

    from tests.fixtures_workers import ROOT

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--host", "0.0.0.0", "--port", str(port),
                             "--threads", "1"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any("listening on" in line for line in lines):
            lines.append(proc.stderr.readline())
        text = "".join(lines)
        assert "no authentication and no encryption" in text and "SSH tunnel" in text
        assert f"listening on 0.0.0.0:{port}" in text
    finally:
        proc.kill()
        proc.communicate(timeout=30)


def test_a_port_in_use_is_one_line(rpc):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        assert_one_line_error(tandem("worker", "--port", str(port)), 1, f"cannot listen on 127.0.0.1:{port}")


def test_openmp_threads_spin_briefly_in_workers_and_in_processes_that_use_them(monkeypatch):
    import os

    from app.cli_workers import OPENMP_SPIN_COUNT, prepare_process

    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    prepare_process(["generate", "-m", "x.gguf", "-p", "hi"])
    assert "GOMP_SPINCOUNT" not in os.environ  # a model on this machine only: llama.cpp's own behaviour
    for argv in (["worker"], ["chat", "-w", "h:1"], ["bench", "--worker=h:1"]):
        monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
        prepare_process(argv)
        assert os.environ["GOMP_SPINCOUNT"] == OPENMP_SPIN_COUNT
    monkeypatch.setenv("GOMP_SPINCOUNT", "5")
    prepare_process(["worker"])
    assert os.environ["GOMP_SPINCOUNT"] == "5"  # what the user set wins
