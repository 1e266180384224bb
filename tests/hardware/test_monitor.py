"""Hardware monitor: real psutil readings, and NVML faked in every way it can fail or succeed."""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest

from app.hardware import monitor


@pytest.fixture(autouse=True)
def fresh_nvml_state() -> Iterator[None]:
    monitor.refresh_gpu_detection()
    yield
    monitor.refresh_gpu_detection()


def test_system_memory() -> None:
    mem = monitor.system_memory()
    assert mem.total > 0
    assert 0 < mem.available <= mem.total
    assert mem.used == mem.total - mem.available


def test_process_memory() -> None:
    assert monitor.process_memory() > 10 * 1024 * 1024
    assert monitor.process_memory(os.getpid()) > 0
    assert monitor.process_memory(2**22 + 12345) == 0  # no such process: 0, no exception


def test_cpu_percent() -> None:
    monitor.cpu_percent()
    value = monitor.cpu_percent()
    assert isinstance(value, float) and 0.0 <= value <= 100.0


def test_real_gpus_never_raise() -> None:
    found = monitor.gpus()
    text = monitor.gpu_status_text()
    if found:
        assert text.startswith("GPU 0: ")
    else:
        assert text.startswith("no NVIDIA GPU")
    res = monitor.resources()
    assert res.gpu_count == len(found)
    assert res.free_vram == sum(g.free for g in found)
    assert res.available_ram > 0 and res.total_ram >= res.available_ram
    assert isinstance(monitor.Resources.current(), monitor.Resources)


class _NVMLError(Exception):
    pass


class NVMLError_LibraryNotFound(_NVMLError):  # noqa: N801 - the name pynvml uses
    pass


def _fake_pynvml(monkeypatch: pytest.MonkeyPatch, **functions: Any) -> types.ModuleType:
    module = types.ModuleType("pynvml")
    for name, fn in functions.items():
        setattr(module, name, fn)
    monkeypatch.setitem(sys.modules, "pynvml", module)
    return module


def test_no_nvidia_library(monkeypatch: pytest.MonkeyPatch) -> None:
    def init() -> None:
        raise NVMLError_LibraryNotFound("NVML Shared Library Not Found")

    _fake_pynvml(monkeypatch, nvmlInit=init)
    assert monitor.gpus() == []
    assert monitor.gpu_status_text() == "no NVIDIA GPU (no NVIDIA driver library (NVML) found)"
    assert monitor.resources().free_vram == 0


def test_pynvml_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` fail
    assert monitor.gpus() == []
    assert monitor.gpu_status_text().startswith("no NVIDIA GPU (nvidia-ml-py is not installed")


class _Mem:
    def __init__(self, total: int, used: int) -> None:
        self.total, self.used, self.free = total, used, total - used


class _Proc:
    def __init__(self, pid: int, used: int | None) -> None:
        self.pid, self.usedGpuMemory = pid, used


GIB = 1024**3


def test_two_fake_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    me = os.getpid()
    devices = {
        0: ("NVIDIA GeForce RTX 4090", _Mem(24 * GIB, 4 * GIB), [_Proc(me, 3 * GIB), _Proc(1, GIB)]),
        1: (b"Tesla T4", _Mem(16 * GIB, 0), None),  # old pynvml returns bytes; process list unsupported
    }

    def processes(h: int) -> list[_Proc]:
        procs = devices[h][2]
        if procs is None:
            raise _NVMLError("Not Supported")
        return procs

    _fake_pynvml(
        monkeypatch,
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: None,
        nvmlDeviceGetCount=lambda: 2,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetName=lambda h: devices[h][0],
        nvmlDeviceGetMemoryInfo=lambda h: devices[h][1],
        nvmlDeviceGetComputeRunningProcesses=processes,
    )
    found = monitor.gpus()
    assert found == [
        monitor.GPU(0, "NVIDIA GeForce RTX 4090", 24 * GIB, 4 * GIB, 20 * GIB, 3 * GIB),
        monitor.GPU(1, "Tesla T4", 16 * GIB, 0, 16 * GIB, None),
    ]
    assert monitor.nvml_error() is None
    assert monitor.gpu_status_text() == (
        "GPU 0: NVIDIA GeForce RTX 4090, 20.0 GiB of 24.0 GiB free; GPU 1: Tesla T4, 16.0 GiB of 16.0 GiB free"
    )
    res = monitor.resources()
    assert (res.gpu_count, res.free_vram, res.total_vram) == (2, 36 * GIB, 40 * GIB)


def test_a_failing_gpu_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    def name(h: int) -> str:
        if h == 0:
            raise _NVMLError("GPU is lost")
        return "NVIDIA A100"

    _fake_pynvml(
        monkeypatch,
        nvmlInit=lambda: None,
        nvmlDeviceGetCount=lambda: 2,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetName=name,
        nvmlDeviceGetMemoryInfo=lambda h: _Mem(80 * GIB, GIB),
        nvmlDeviceGetComputeRunningProcesses=lambda h: [],
    )
    found = monitor.gpus()
    assert [g.index for g in found] == [1]
    assert found[0].process_used is None


def test_counting_gpus_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    def count() -> int:
        raise _NVMLError("Unknown Error")

    _fake_pynvml(monkeypatch, nvmlInit=lambda: None, nvmlDeviceGetCount=count)
    assert monitor.gpus() == []
    assert monitor.gpu_status_text() == "no NVIDIA GPU"
