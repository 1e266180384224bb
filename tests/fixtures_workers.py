"""Pytest plugin: `tandem worker` processes on free loopback ports (llama.cpp's RPC server, 1 thread each).

Skipped, with the reason, only where the installed llama-cpp-python was built without RPC."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.engine.workers import Endpoint, WorkerError, probe, rpc_supported

ROOT = Path(__file__).resolve().parents[1]
NO_RPC_REASON = ("the installed llama-cpp-python has no RPC backend (build it with "
                 'CMAKE_ARGS="-DGGML_LLAMAFILE=OFF -DGGML_RPC=ON", as README says)')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WorkerProcess:
    """One `tandem worker` on 127.0.0.1:<free port>."""

    def __init__(self) -> None:
        self.endpoint = Endpoint("127.0.0.1", free_port())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker", "--port", str(self.endpoint.port), "--threads", "1"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                probe(self.endpoint, timeout=2.0)
                return
            except WorkerError as e:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.proc.kill()
                    _, err = self.proc.communicate(timeout=30)
                    raise RuntimeError(f"the worker did not start: {err}") from e
                time.sleep(0.1)

    def kill(self) -> None:
        """Kill it at once (SIGKILL: no goodbye on the connection) and wait until it is gone."""
        self.proc.kill()
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        if self.proc.stderr:
            self.proc.stderr.close()


@pytest.fixture(scope="session")
def rpc() -> None:
    if not rpc_supported():
        pytest.skip(NO_RPC_REASON)


@pytest.fixture(scope="module")
def two_workers(rpc: None) -> Iterator[tuple[WorkerProcess, WorkerProcess]]:
    workers = (WorkerProcess(), WorkerProcess())
    try:
        yield workers
    finally:
        for w in workers:
            w.stop()


@pytest.fixture
def start_worker(rpc: None) -> Iterator[Callable[[], WorkerProcess]]:
    """Start workers of the test's own (stopped at its end)."""
    started: list[WorkerProcess] = []

    def start() -> WorkerProcess:
        started.append(WorkerProcess())
        return started[-1]

    yield start
    for w in started:
        w.stop()
