"""Workers: other machines that hold part of the target model, through llama.cpp's RPC backend (ggml-rpc).

A worker is llama.cpp's RPC server (`tandem worker` starts the one built into llama-cpp-python); a model
loaded with workers keeps some of its layers on their devices and one process (this one) drives them all.
This module is the one place that knows about it:

* **Addresses**: `parse_endpoint` turns ``HOST:PORT`` into an `Endpoint` or says in one line what is wrong.
* **Looking at a worker** without llama.cpp: `probe` speaks the first messages of the RPC protocol itself
  (HELLO, device count, device memory) over a socket with a timeout, so an unreachable worker, one that
  runs another protocol version or one busy with another client is a clear `WorkerError` — before
  llama.cpp, whose RPC client aborts the whole process on any connection failure, ever connects.
* **Losing a worker** mid-generation: llama.cpp aborts the process when a connection breaks. Every
  llama.cpp call of a model on workers runs on that model's own thread (`RemoteCalls`); ggml's abort
  callback, on an RPC failure, marks those models lost and parks the failing thread for good instead of
  returning into `abort()`. The caller gets `WorkerLost`; the lost model's memory is never freed (freeing
  it would wait for the dead worker), and our connections to the workers still alive are shut down so
  they can serve a new load.
* **Serving**: `serve` runs llama.cpp's own `ggml_backend_rpc_start_server` on this machine's devices.
* **Splitting**: `layer_split` says which layers go where, as llama.cpp will place them.

The RPC protocol has no authentication and no encryption: a worker must only listen on loopback or a
trusted network (docs/scaling.md shows an SSH tunnel).
"""

from __future__ import annotations

import ctypes
import os
import re
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import llama_cpp

from app.engine.llama_backend import EngineError
from app.engine.units import format_memory

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "RPC_PROTOCOL",
    "BadEndpoint",
    "Endpoint",
    "RemoteCalls",
    "WorkerDevice",
    "WorkerError",
    "WorkerInfo",
    "WorkerLost",
    "layer_split",
    "local_devices",
    "parse_endpoint",
    "probe",
    "rpc_devices",
    "rpc_supported",
    "serve",
    "INSECURE_WARNING",
    "NO_RPC",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 50052
# the RPC protocol the pinned llama.cpp speaks (ggml/include/ggml-rpc.h: RPC_PROTO_*_VERSION): a server
# answers HELLO with its version; the client refuses another major version or a newer minor one
RPC_PROTOCOL = (7, 0, 0)
PROBE_TIMEOUT_S = 5.0

INSECURE_WARNING = (
    "warning: llama.cpp's RPC protocol has no authentication and no encryption — anyone who can reach "
    "{endpoint} can use this machine's memory and run computations on it, and sees the model's weights. "
    "Listen only on a network you trust, or keep the default 127.0.0.1 and reach it through an SSH tunnel "
    "(docs/scaling.md)."
)

# RPC commands (ggml/src/ggml-rpc/ggml-rpc.cpp, enum rpc_cmd) and the HELLO capability block size
_CMD_GET_DEVICE_MEMORY = 11
_CMD_HELLO = 14
_CMD_DEVICE_COUNT = 15
_CONN_CAPS_SIZE = 24


class WorkerError(EngineError):
    """A worker cannot be used (unreachable, another version, busy, no RPC in this build): nothing was loaded."""


class WorkerLost(EngineError):
    """A worker stopped answering while a model used it: that model is gone, what was generated is kept."""


class BadEndpoint(ValueError):
    """A worker address that is not HOST:PORT."""


# -- addresses --------------------------------------------------------------------------------------------
_HOST_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


@dataclass(frozen=True, order=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def parse_endpoint(text: str) -> Endpoint:
    """``HOST:PORT`` (a host name or an IPv4 address, a port 1-65535) → `Endpoint`; `BadEndpoint` with one
    line saying what is wrong otherwise. llama.cpp's RPC transport is IPv4 only."""
    raw = str(text).strip()
    if not raw:
        raise BadEndpoint("a worker address is empty (expected HOST:PORT, e.g. 192.168.1.20:50052)")
    if raw.startswith("[") or raw.count(":") > 1:
        raise BadEndpoint(f"worker {raw!r}: IPv6 addresses are not supported by llama.cpp's RPC transport "
                          "(use an IPv4 address or a host name)")
    host, sep, port_text = raw.rpartition(":")
    if not sep or not host:
        raise BadEndpoint(f"worker {raw!r} is not HOST:PORT (e.g. 192.168.1.20:{DEFAULT_PORT})")
    if not port_text.isdigit() or not (1 <= int(port_text) <= 65535):
        raise BadEndpoint(f"worker {raw!r}: the port must be a number from 1 to 65535, got {port_text!r}")
    if not _HOST_RE.match(host):
        raise BadEndpoint(f"worker {raw!r}: {host!r} is not a host name or an IPv4 address")
    return Endpoint(host.lower(), int(port_text))


# -- looking at a worker ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WorkerDevice:
    index: int
    free: int
    total: int


@dataclass(frozen=True)
class WorkerInfo:
    endpoint: Endpoint
    version: tuple[int, int, int]
    devices: tuple[WorkerDevice, ...]

    @property
    def free(self) -> int:
        return sum(d.free for d in self.devices)

    @property
    def total(self) -> int:
        return sum(d.total for d in self.devices)

    def describe(self) -> str:
        """'127.0.0.1:50052: RPC 7.0.0, 1 device, 10.2 GiB free of 23.4 GiB'."""
        n = len(self.devices)
        return (f"{self.endpoint}: RPC {'.'.join(map(str, self.version))}, {n} device{'s' if n != 1 else ''}, "
                f"{format_memory(self.free)} free of {format_memory(self.total)}")


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("the worker closed the connection")
        buf += chunk
    return bytes(buf)


def _command(sock: socket.socket, cmd: int, payload: bytes, reply_size: int) -> bytes:
    sock.sendall(struct.pack("<BQ", cmd, len(payload)) + payload)
    (size,) = struct.unpack("<Q", _recv_exact(sock, 8))
    if size != reply_size:
        raise ConnectionError(f"unexpected reply of {size} bytes to command {cmd}")
    return _recv_exact(sock, size)


def probe(endpoint: Endpoint, timeout: float = PROBE_TIMEOUT_S) -> WorkerInfo:
    """Connect to the worker at `endpoint`, check its protocol version, read its devices' memory, disconnect.

    Raises `WorkerError` with one line: unreachable, not answering (e.g. serving another client: a worker
    serves one client at a time), another RPC version, or not an RPC server."""
    where = f"worker {endpoint}"
    try:
        sock = socket.create_connection((endpoint.host, endpoint.port), timeout=timeout)
    except socket.gaierror:
        raise WorkerError(f"{where}: unknown host {endpoint.host!r}") from None
    except TimeoutError:
        raise WorkerError(f"{where} is unreachable (no answer within {timeout:g} s)") from None
    except ConnectionRefusedError:
        raise WorkerError(f"{where} is unreachable: nothing listens on port {endpoint.port} "
                          "(start it there with `tandem worker`)") from None
    except OSError as e:
        raise WorkerError(f"{where} is unreachable: {e.strerror or e}") from None
    try:
        with sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                hello = _command(sock, _CMD_HELLO, bytes(_CONN_CAPS_SIZE), 4 + _CONN_CAPS_SIZE)
            except TimeoutError:
                raise WorkerError(f"{where} accepted the connection but does not answer: it is busy with another "
                                  "client (a worker serves one at a time) or is not a Tandem/llama.cpp worker") from None
            version = (hello[0], hello[1], hello[2])
            if version[0] != RPC_PROTOCOL[0] or version[1] > RPC_PROTOCOL[1]:
                ours = ".".join(map(str, RPC_PROTOCOL))
                raise WorkerError(f"{where} speaks RPC protocol {'.'.join(map(str, version))}, this Tandem speaks "
                                  f"{ours}: install the same Tandem (llama-cpp-python {llama_cpp.__version__}) there")
            (count,) = struct.unpack("<I", _command(sock, _CMD_DEVICE_COUNT, b"", 4))
            devices = []
            for i in range(count):
                free, total = struct.unpack("<QQ", _command(sock, _CMD_GET_DEVICE_MEMORY, struct.pack("<I", i), 16))
                devices.append(WorkerDevice(i, free, total))
    except WorkerError:
        raise
    except (OSError, ConnectionError, struct.error) as e:
        raise WorkerError(f"{where} does not speak llama.cpp's RPC protocol ({e})") from None
    if not devices:
        raise WorkerError(f"{where} has no devices to offer")
    return WorkerInfo(endpoint, version, tuple(devices))


# -- llama.cpp's RPC backend --------------------------------------------------------------------------------
def rpc_supported() -> bool:
    """Whether the installed llama-cpp-python was built with RPC (CMAKE_ARGS="... -DGGML_RPC=ON")."""
    return bool(llama_cpp.llama_supports_rpc())


NO_RPC = ("this llama-cpp-python was built without RPC: reinstall it with "
          'CMAKE_ARGS="-DGGML_LLAMAFILE=OFF -DGGML_RPC=ON" pip install --force-reinstall --no-cache-dir '
          f"llama-cpp-python=={llama_cpp.__version__} (see docs/scaling.md)")

_lock = threading.Lock()
_ggml: Any = None
_rpc_fns: dict[str, Any] = {}


def _lib() -> Any:
    """libggml (the backend registry and devices), its functions declared once."""
    global _ggml
    with _lock:
        if _ggml is None:
            from llama_cpp import _ggml as ggml_module

            lib = ggml_module.libggml
            vp, sz = ctypes.c_void_p, ctypes.c_size_t
            for name, args, res in (
                ("ggml_backend_reg_by_name", [ctypes.c_char_p], vp),
                ("ggml_backend_reg_get_proc_address", [vp, ctypes.c_char_p], vp),
                ("ggml_backend_reg_dev_count", [vp], sz),
                ("ggml_backend_reg_dev_get", [vp, sz], vp),
                ("ggml_backend_dev_count", [], sz),
                ("ggml_backend_dev_get", [sz], vp),
                ("ggml_backend_dev_type", [vp], ctypes.c_int),
                ("ggml_backend_dev_name", [vp], ctypes.c_char_p),
                ("ggml_backend_dev_description", [vp], ctypes.c_char_p),
                ("ggml_backend_dev_memory", [vp, ctypes.POINTER(sz), ctypes.POINTER(sz)], None),
                ("ggml_set_abort_callback", [vp], vp),
            ):
                fn = getattr(lib, name)
                fn.argtypes, fn.restype = args, res
            _ggml = lib
        return _ggml


def _rpc_fn(name: str, restype: Any, *argtypes: Any) -> Any:
    """A function of the RPC backend, found through the backend registry as llama.cpp's own tools do."""
    if not rpc_supported():
        raise WorkerError(NO_RPC)
    fn = _rpc_fns.get(name)
    if fn is None:
        lib = _lib()
        reg = lib.ggml_backend_reg_by_name(b"RPC")
        address = lib.ggml_backend_reg_get_proc_address(reg, name.encode()) if reg else None
        if not address:
            raise WorkerError(f"llama.cpp's RPC backend has no {name}")
        fn = ctypes.CFUNCTYPE(restype, *argtypes)(address)
        _rpc_fns[name] = fn
    return fn


# a worker that was lost once is reached under another spelling of its port ("0" in front): llama.cpp keeps
# one connection per endpoint string for the life of the process, and the lost one can never be used again
_generation: dict[Endpoint, int] = {}


def _llama_endpoint(endpoint: Endpoint) -> str:
    return f"{endpoint.host}:{'0' * _generation.get(endpoint, 0)}{endpoint.port}"


def rpc_devices(endpoint: Endpoint, calls: RemoteCalls) -> list[int]:
    """llama.cpp's devices for the worker at `endpoint` (connects; `probe` it first). Runs on `calls`' thread."""
    add_server = _rpc_fn("ggml_backend_rpc_add_server", ctypes.c_void_p, ctypes.c_char_p)
    reg = calls.call(add_server, _llama_endpoint(endpoint).encode())
    if not reg:
        raise WorkerError(f"worker {endpoint} has no devices to offer")
    lib = _lib()
    return [lib.ggml_backend_reg_dev_get(reg, i) for i in range(lib.ggml_backend_reg_dev_count(reg))]


# -- the guard: llama.cpp calls of a model on workers -----------------------------------------------------
T = TypeVar("T")
_RPC_ABORTS = ("Remote RPC server crashed", "Failed to connect to", "RPC handshake failed")
_guards: set[RemoteCalls] = set()
_abort_cb: Any = None
_kept: list[object] = []  # lost models and contexts: never freed, never collected


def _on_abort(message: bytes | None) -> None:
    text = (message or b"").decode("utf-8", "replace")
    with _lock:
        guards = list(_guards)
    if guards and any(marker in text for marker in _RPC_ABORTS):
        for guard in guards:
            guard._lose(text)
        threading.Event().wait()  # park this thread for good: returning would let ggml abort() the process
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _install_abort_handler() -> None:
    global _abort_cb
    with _lock:
        if _abort_cb is not None:
            return
        _abort_cb = ctypes.CFUNCTYPE(None, ctypes.c_char_p)(_on_abort)
    _lib().ggml_set_abort_callback(ctypes.cast(_abort_cb, ctypes.c_void_p))


class RemoteCalls:
    """Runs the llama.cpp calls of one model that uses workers on a thread of its own.

    `call(fn, *args)` returns `fn(*args)`, or raises `WorkerLost` as soon as a worker's connection broke
    (that thread may then never come back). After a loss every call raises `WorkerLost` at once.
    """

    def __init__(self, endpoints: Sequence[Endpoint]) -> None:
        self.endpoints = tuple(endpoints)
        self.lost: str | None = None
        self._wake = threading.Condition()
        self._jobs: list[tuple[Callable[..., Any], tuple[Any, ...], list[Any]]] = []
        self._closed = False
        _install_abort_handler()
        with _lock:
            _guards.add(self)
        self._thread = threading.Thread(target=self._run, name="tandem-workers", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._jobs and not self._closed:
                    self._wake.wait()
                if self._closed and not self._jobs:
                    return
                fn, args, box = self._jobs.pop(0)
            try:
                box.append((True, fn(*args)))
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                box.append((False, e))
            with self._wake:
                self._wake.notify_all()

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        box: list[Any] = []
        with self._wake:
            self._check()
            self._jobs.append((fn, args, box))
            self._wake.notify_all()
            while not box:
                self._check()
                self._wake.wait()
        ok, value = box[0]
        if not ok:
            raise value
        return value

    def _check(self) -> None:
        if self.lost is not None:
            raise WorkerLost(self.lost)
        if self._closed:
            raise EngineError("the model on workers was closed")

    def _lose(self, detail: str) -> None:
        with self._wake:
            if self.lost is None:
                self.lost = _loss_message(self.endpoints, detail)
                for endpoint in self.endpoints:
                    _generation[endpoint] = _generation.get(endpoint, 0) + 1
            self._wake.notify_all()
        _release_connections(self.endpoints)

    def keep(self, *objects: object) -> None:
        """Keep lost llama.cpp objects alive for good (freeing them would wait for a dead worker)."""
        _kept.extend(objects)

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        with _lock:
            _guards.discard(self)


def _loss_message(endpoints: Sequence[Endpoint], detail: str) -> str:
    gone = []
    for endpoint in endpoints:
        # refused: nothing listens there any more. A worker still alive accepts (into its backlog: it is busy
        # with our old connection); a killed one's listening socket may close a moment after its connection
        for _ in range(2):
            try:
                socket.create_connection((endpoint.host, endpoint.port), timeout=1.0).close()
            except ConnectionRefusedError:
                gone.append(str(endpoint))
                break
            except OSError:
                break
            time.sleep(0.3)
    who = f"worker {', '.join(gone)}" if gone else f"a worker ({', '.join(map(str, endpoints))})"
    why = "connection lost" if "crashed" in detail else "could not connect"
    return (f"{who} stopped answering ({why}): the model is unloaded — the text generated so far is kept; "
            "load it again, without that worker to run it on this machine only")


def _release_connections(endpoints: Sequence[Endpoint]) -> None:
    """Shut down this process's connections to `endpoints`: the workers still alive can serve a new client."""
    try:
        import psutil

        conns = psutil.Process().net_connections(kind="tcp4")
    except Exception:  # noqa: BLE001 - best effort: the workers then serve again once this process ends
        return
    peers = set()
    for endpoint in endpoints:
        try:
            peers.add((socket.gethostbyname(endpoint.host), endpoint.port))
        except OSError:
            continue
    for c in conns:
        if c.raddr and (c.raddr.ip, c.raddr.port) in peers and c.fd >= 0:
            try:
                with socket.socket(fileno=os.dup(c.fd)) as s:
                    s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


# -- splitting a model's layers --------------------------------------------------------------------------
def layer_split(n_layer: int, shares: Sequence[float]) -> list[int]:
    """How many of `n_layer` layers each place gets for `shares` (this machine first, then each worker), the
    way llama.cpp assigns them: this machine keeps the first layers, the workers take the rest in order,
    layer i going to the device whose cumulative share first exceeds i / n_offloaded."""
    if not shares or any(s < 0 for s in shares) or sum(shares) <= 0:
        raise ValueError("the split needs at least one positive share and no negative one")
    total = float(sum(shares))
    local = min(n_layer, round(n_layer * shares[0] / total))
    remote = [float(s) for s in shares[1:]]
    counts = [local] + [0] * len(remote)
    offloaded = n_layer - local
    if offloaded and sum(remote) <= 0:
        counts[0] = n_layer
        return counts
    cumulative, acc = [], 0.0
    for s in remote:
        acc += s / sum(remote)
        cumulative.append(acc)
    for i in range(offloaded):
        x = i / offloaded
        j = next((k for k, c in enumerate(cumulative) if x < c), len(remote) - 1)
        counts[1 + j] += 1
    return counts


# -- serving ------------------------------------------------------------------------------------------------
_CPU, _ACCEL = 0, 3


def local_devices() -> list[tuple[int, str, str, int, int]]:
    """What a worker on this machine offers, as llama.cpp's rpc-server chooses: its GPUs, else the CPU.
    Each is (device pointer, name, description, free bytes, total bytes)."""
    llama_cpp.llama_backend_init()
    lib = _lib()
    devs = [lib.ggml_backend_dev_get(i) for i in range(lib.ggml_backend_dev_count())]
    chosen = [d for d in devs if lib.ggml_backend_dev_type(d) not in (_CPU, _ACCEL)]
    if not chosen:
        chosen = [d for d in devs if lib.ggml_backend_dev_type(d) == _CPU][:1]
    out = []
    for d in chosen:
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        lib.ggml_backend_dev_memory(d, ctypes.byref(free), ctypes.byref(total))
        out.append((d, lib.ggml_backend_dev_name(d).decode(), lib.ggml_backend_dev_description(d).decode(),
                    free.value, total.value))
    return out


def serve(host: str, port: int, threads: int, cache_dir: str | None = None) -> None:
    """Run llama.cpp's RPC server on this machine's devices at host:port; returns only if it cannot start.

    llama.cpp prints the endpoint and the devices on stdout. Blocks in C: call it from a thread of its own."""
    if not rpc_supported():
        raise WorkerError(NO_RPC)
    start = _rpc_fn("ggml_backend_rpc_start_server", None, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t,
                    ctypes.c_size_t, ctypes.POINTER(ctypes.c_void_p))
    devices = [d[0] for d in local_devices()]
    if not devices:
        raise WorkerError("this machine has no device llama.cpp can offer")
    array = (ctypes.c_void_p * len(devices))(*devices)
    start(f"{host}:{port}".encode(), cache_dir.encode() if cache_dir else None, threads, len(devices), array)
