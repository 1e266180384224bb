"""What the machine has: RAM, CPU load, NVIDIA GPUs. Every function here answers; none raises.

GPU data comes from NVML (the `pynvml` module of nvidia-ml-py). Without an NVIDIA driver or library,
`gpus()` is empty and `gpu_status_text()` says so.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

import psutil

from app.engine.units import format_memory

__all__ = [
    "GPU",
    "MemoryStatus",
    "Resources",
    "cpu_percent",
    "gpu_status_text",
    "gpus",
    "nvml_error",
    "process_memory",
    "refresh_gpu_detection",
    "resources",
    "system_memory",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MemoryStatus:
    total: int  # bytes
    available: int  # bytes a new allocation can get without swapping (includes reclaimable cache)

    @property
    def used(self) -> int:
        return self.total - self.available


@dataclass(frozen=True)
class GPU:
    index: int
    name: str
    total: int  # bytes of VRAM
    used: int
    free: int
    process_used: int | None  # VRAM used by this process, when the driver reports it


@dataclass(frozen=True)
class Resources:
    """A snapshot of what a model load can use."""

    available_ram: int  # bytes
    total_ram: int
    free_vram: int  # bytes, summed over all GPUs
    total_vram: int
    gpu_count: int

    @classmethod
    def current(cls) -> Resources:
        return resources()


def system_memory() -> MemoryStatus:
    try:
        vm = psutil.virtual_memory()
        return MemoryStatus(total=int(vm.total), available=int(vm.available))
    except Exception as e:  # pragma: no cover - psutil does not fail on supported systems
        log.warning("cannot read system memory: %s", e)
        return MemoryStatus(total=0, available=0)


def process_memory(pid: int | None = None) -> int:
    """Resident set size of the process (this one by default), in bytes; 0 if it cannot be read."""
    try:
        return int(psutil.Process(pid if pid is not None else os.getpid()).memory_info().rss)
    except Exception:
        return 0


def cpu_percent() -> float:
    """System-wide CPU use in percent since the previous call (the first call measures nothing: 0.0)."""
    try:
        return float(psutil.cpu_percent(interval=None))
    except Exception:  # pragma: no cover
        return 0.0


# ---------------------------------------------------------------------------------------------------------
# NVML

_nvml_lock = threading.Lock()
_nvml: Any = None  # the pynvml module once initialised
_nvml_error: str | None = None  # why NVML is unavailable, once we know


def _init_nvml() -> Any:
    """The initialised pynvml module, or None (the reason is kept in `_nvml_error`). Tried once."""
    global _nvml, _nvml_error
    with _nvml_lock:
        if _nvml is not None or _nvml_error is not None:
            return _nvml
        try:
            import pynvml
        except Exception as e:
            _nvml_error = f"nvidia-ml-py is not installed ({e})"
            return None
        try:
            pynvml.nvmlInit()
        except Exception as e:
            _nvml_error = _nvml_reason(e)
            return None
        _nvml = pynvml
        return _nvml


def _nvml_reason(e: Exception) -> str:
    name = type(e).__name__
    if "LibraryNotFound" in name:
        return "no NVIDIA driver library (NVML) found"
    if "DriverNotLoaded" in name:
        return "the NVIDIA driver is not loaded"
    if "NoPermission" in name:
        return "no permission to query the NVIDIA driver"
    return f"NVML error: {e}"


def refresh_gpu_detection() -> None:
    """Forget what NVML said, so the next call tries again (e.g. after a driver was installed)."""
    global _nvml, _nvml_error
    with _nvml_lock:
        if _nvml is not None:
            try:
                _nvml.nvmlShutdown()
            except Exception:
                pass
        _nvml = None
        _nvml_error = None


def nvml_error() -> str | None:
    """Why GPU information is unavailable, or None when NVML works."""
    _init_nvml()
    return _nvml_error


def _text(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def gpus() -> list[GPU]:
    """The NVIDIA GPUs NVML sees, with their memory; [] when there are none or NVML is unavailable."""
    nv = _init_nvml()
    if nv is None:
        return []
    out: list[GPU] = []
    try:
        count = int(nv.nvmlDeviceGetCount())
    except Exception as e:
        log.warning("NVML: cannot count GPUs: %s", e)
        return []
    pid = os.getpid()
    for i in range(count):
        try:
            h = nv.nvmlDeviceGetHandleByIndex(i)
            name = _text(nv.nvmlDeviceGetName(h))
            mem = nv.nvmlDeviceGetMemoryInfo(h)
        except Exception as e:
            log.warning("NVML: cannot read GPU %d: %s", i, e)
            continue
        mine: int | None = None
        try:
            for proc in nv.nvmlDeviceGetComputeRunningProcesses(h):
                if proc.pid == pid and proc.usedGpuMemory is not None:
                    mine = (mine or 0) + int(proc.usedGpuMemory)
        except Exception:
            mine = None  # not supported on this GPU/driver (e.g. some consumer cards under WDDM)
        out.append(GPU(index=i, name=name, total=int(mem.total), used=int(mem.used), free=int(mem.free),
                       process_used=mine))  # fmt: skip
    return out


def gpu_status_text() -> str:
    """One line for the status bar, e.g. 'GPU 0: NVIDIA RTX 4090, 20.1 GiB of 24.0 GiB free'."""
    found = gpus()
    if not found:
        reason = nvml_error()
        return f"no NVIDIA GPU ({reason})" if reason else "no NVIDIA GPU"
    return "; ".join(
        f"GPU {g.index}: {g.name}, {format_memory(g.free)} of {format_memory(g.total)} free" for g in found
    )


def resources() -> Resources:
    mem = system_memory()
    found = gpus()
    return Resources(
        available_ram=mem.available,
        total_ram=mem.total,
        free_vram=sum(g.free for g in found),
        total_vram=sum(g.total for g in found),
        gpu_count=len(found),
    )
