"""A thin, careful layer over llama-cpp-python's low-level C API.

Only what the speculative loop needs: load a model (with progress and cancel), tokenize and detokenize,
a context whose KV cache content is tracked token by token, batched decode with chosen output rows,
zero-copy logits, and rollback with `llama_memory_seq_rm` (its return value checked).

Nothing here imports Qt. Everything that can fail raises `EngineError` with one readable line.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import llama_cpp
import numpy as np

if TYPE_CHECKING:
    from app.engine.workers import RemoteCalls

__all__ = [
    "EngineError",
    "LoadCancelled",
    "DecodeAborted",
    "RollbackFailed",
    "SpeculationUnsupported",
    "Model",
    "Context",
    "backend_info",
    "common_prefix_length",
]


class EngineError(RuntimeError):
    """An error the user should read: one line, no traceback needed."""


class LoadCancelled(EngineError):
    """Loading was cancelled by the user."""


class DecodeAborted(EngineError):
    """A decode stopped early because its cancel event was set (the cache is as before the call)."""


class SpeculationUnsupported(EngineError):
    """A model whose memory cannot roll back was asked to take part in speculation (plain decoding works)."""


class RollbackFailed(EngineError):
    """The KV cache refused a partial rollback; the cache and the token mirror are both empty now."""


_backend_lock = threading.Lock()
_backend_ready = False


def _quiet_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    if os.environ.get("TANDEM_LLAMA_LOG"):
        try:
            os.write(2, text)
        except OSError:
            pass


# keep a reference: the C side holds the pointer for the life of the process
_LOG_CALLBACK = llama_cpp.llama_log_callback(_quiet_log)


def _ensure_backend() -> None:
    global _backend_ready
    with _backend_lock:
        if not _backend_ready:
            llama_cpp.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))
            llama_cpp.llama_backend_init()
            _backend_ready = True


def backend_info() -> dict[str, object]:
    """What this llama.cpp build can do (GPU offload support, system info)."""
    _ensure_backend()
    system_info = llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip()
    return {
        "llama_cpp_python": llama_cpp.__version__,
        "gpu_offload": bool(llama_cpp.llama_supports_gpu_offload()),
        "mmap": bool(llama_cpp.llama_supports_mmap()),
        # llamafile's sgemm multiplies batches (n >= 2) with other kernels than single tokens: the verify
        # batch then gives slightly different logits than plain decoding (see docs/engine.md)
        "batch_invariant_cpu": "LLAMAFILE = 1" not in system_info,
        "system_info": system_info,
    }


class Model:
    """A loaded GGUF model (weights + vocabulary). Free it with `close()` (or use it as a context manager)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        n_gpu_layers: int = 0,
        progress: Callable[[float], bool] | None = None,
        vocab_only: bool = False,
        devices: Sequence[int] = (),
        tensor_split: Sequence[float] = (),
        remote: RemoteCalls | None = None,
    ) -> None:
        """Load `path`. `progress(fraction)` is called while loading; return False from it to cancel.

        `devices` (ggml device pointers, e.g. workers' from app.engine.workers.rpc_devices) replace
        llama.cpp's default choice of offload devices; `n_gpu_layers` layers go to them, split by
        `tensor_split` (one share per device; empty: by their free memory). `remote` runs every llama.cpp
        call of this model (and its contexts) that may reach a worker, turning a lost one into `WorkerLost`.
        """
        _ensure_backend()
        self.path = Path(path)
        if not self.path.is_file():
            raise EngineError(f"model file not found: {self.path}")
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = -1 if n_gpu_layers < 0 else int(n_gpu_layers)
        params.vocab_only = bool(vocab_only)
        params.use_extra_bufts = extra_buffer_types_enabled()
        self.remote = remote
        # the arrays llama.cpp reads while loading (kept for the life of the model)
        self._devices = (ctypes.c_void_p * (len(devices) + 1))(*devices, None) if devices else None
        if self._devices is not None:
            params.devices = ctypes.addressof(self._devices)
        if tensor_split:
            n_max = int(llama_cpp.llama_max_devices())
            if len(tensor_split) > n_max:
                raise EngineError(f"{len(tensor_split)} devices to split over, this llama.cpp takes at most {n_max}")
            self._split = (ctypes.c_float * n_max)(*tensor_split)
            params.tensor_split = self._split
        self._cancelled = False

        def _on_progress(fraction: float, _user: ctypes.c_void_p) -> bool:
            if progress is None:
                return True
            try:
                keep_going = progress(float(fraction))
            except Exception:  # a failing UI callback must not crash the C loader
                return True
            if keep_going is False:
                self._cancelled = True
                return False
            return True

        self._progress_cb = llama_cpp.llama_progress_callback(_on_progress)
        params.progress_callback = self._progress_cb
        ptr = self.call(llama_cpp.llama_model_load_from_file, str(self.path).encode("utf-8"), params)
        if not ptr:
            if self._cancelled:
                raise LoadCancelled(f"loading cancelled: {self.path.name}")
            raise EngineError(
                f"llama.cpp could not load {self.path.name} (unsupported architecture, corrupt file, "
                "or not enough memory)"
            )
        self.ptr = ptr
        self.vocab = llama_cpp.llama_model_get_vocab(ptr)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self.vocab))
        self.n_layer = int(llama_cpp.llama_model_n_layer(ptr))
        self.n_ctx_train = int(llama_cpp.llama_model_n_ctx_train(ptr))
        self.bos = int(llama_cpp.llama_vocab_bos(self.vocab))
        self.eos = int(llama_cpp.llama_vocab_eos(self.vocab))
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self.vocab))
        self.n_gpu_layers = n_gpu_layers
        self.architecture = self._meta_str("general.architecture") or "unknown"
        if llama_cpp.llama_model_is_hybrid(ptr):
            self.memory_kind = "hybrid"
        elif llama_cpp.llama_model_is_recurrent(ptr):
            self.memory_kind = "recurrent"
        else:
            self.memory_kind = "attention"
        self._piece_cache: dict[int, bytes] = {}
        self._eog_cache: dict[int, bool] = {}
        self._piece_buf = ctypes.create_string_buffer(256)

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)`: directly, or on the workers' guard thread for a model on workers."""
        return fn(*args) if self.remote is None else self.remote.call(fn, *args)

    @property
    def lost(self) -> bool:
        """Whether a worker of this model was lost (the model can no longer be used, nor freed)."""
        return self.remote is not None and self.remote.lost is not None

    def _meta_str(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(256)
        n = llama_cpp.llama_model_meta_val_str(self.ptr, key.encode("utf-8"), buf, len(buf))
        return buf.value.decode("utf-8", "replace") if n >= 0 else None

    @property
    def can_roll_back(self) -> bool:
        """Whether the model's memory can drop the last tokens of a sequence (what speculation needs).

        Attention-only models can; recurrent (Mamba, RWKV) and hybrid (attention + recurrent layers) models
        keep one running state per sequence that cannot be rewound to an earlier position.
        """
        return self.memory_kind == "attention"

    def speculation_refusal(self, role: str) -> str | None:
        """Why this model cannot take part in speculative decoding as `role` ("target" or "draft"), or None."""
        if self.can_roll_back:
            return None
        return (
            f"{self.path.name} is a {self.memory_kind} model ({self.architecture}): its memory cannot be rolled "
            f"back to drop rejected guesses, so it cannot be the {role} of speculative decoding "
            "(plain decoding works)"
        )

    # -- vocabulary -------------------------------------------------------------------------------
    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        data = text.encode("utf-8")
        n_max = len(data) + 16
        buf = (llama_cpp.llama_token * n_max)()
        n = llama_cpp.llama_tokenize(self.vocab, data, len(data), buf, n_max, add_special, parse_special)
        if n < 0:
            n_max = -n
            buf = (llama_cpp.llama_token * n_max)()
            n = llama_cpp.llama_tokenize(self.vocab, data, len(data), buf, n_max, add_special, parse_special)
            if n < 0:
                raise EngineError("tokenization failed")
        return list(buf[:n])

    def token_bytes(self, token: int) -> bytes:
        """The bytes a token stands for (special tokens render as nothing)."""
        piece = self._piece_cache.get(token)
        if piece is None:
            n = llama_cpp.llama_token_to_piece(self.vocab, token, self._piece_buf, 256, 0, False)
            if n < 0:
                big = ctypes.create_string_buffer(-n)
                n = llama_cpp.llama_token_to_piece(self.vocab, token, big, -n, 0, False)
                piece = big.raw[:n]
            else:
                piece = self._piece_buf.raw[:n]
            self._piece_cache[token] = piece
        return piece

    def detokenize(self, tokens: Sequence[int]) -> str:
        return b"".join(self.token_bytes(t) for t in tokens).decode("utf-8", "replace")

    def is_eog(self, token: int) -> bool:
        v = self._eog_cache.get(token)
        if v is None:
            v = bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))
            self._eog_cache[token] = v
        return v

    def chat_template(self) -> str | None:
        raw = llama_cpp.llama_model_chat_template(self.ptr, None)
        return raw.decode("utf-8", "replace") if raw else None

    def token_text(self, token: int, special: bool = True) -> str:
        buf = ctypes.create_string_buffer(256)
        n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, 256, 0, special)
        return buf.raw[: max(n, 0)].decode("utf-8", "replace")

    def close(self) -> None:
        if getattr(self, "ptr", None):
            if self.lost:  # freeing would wait for the dead worker for ever: the memory stays taken
                self.remote.keep(self)
            else:
                self.call(llama_cpp.llama_model_free, self.ptr)
            self.ptr = None
        if getattr(self, "remote", None) is not None:
            self.remote.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort at interpreter exit
        try:
            self.close()
        except Exception:
            pass


class Context:
    """One inference context (KV cache) on a `Model`, holding a single sequence.

    `tokens` mirrors exactly what the KV cache holds, position by position; every change to the cache goes
    through this class so the two can never disagree.
    """

    def __init__(
        self,
        model: Model,
        n_ctx: int = 4096,
        n_batch: int = 512,
        n_threads: int | None = None,
        n_threads_batch: int | None = None,
    ) -> None:
        if n_ctx < 16:
            raise EngineError(f"context length {n_ctx} is too small (at least 16 tokens)")
        self.model = model
        threads = n_threads or default_threads()
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = int(n_ctx)
        params.n_batch = int(min(n_batch, n_ctx))
        params.n_ubatch = int(min(n_batch, n_ctx))
        params.n_seq_max = 1
        params.n_threads = int(threads)
        params.n_threads_batch = int(n_threads_batch or threads)
        # the cancel event of the decode running now: llama.cpp polls it between graph nodes
        self._cancel: threading.Event | None = None
        self._decoding = False

        def _abort_cb(_data: ctypes.c_void_p) -> bool:
            cancel = self._cancel
            return cancel is not None and cancel.is_set()

        self._abort_cb = llama_cpp.ggml_abort_callback(_abort_cb)
        params.abort_callback = self._abort_cb
        ptr = model.call(llama_cpp.llama_init_from_model, model.ptr, params)
        if not ptr:
            raise EngineError(f"could not create a context of {n_ctx} tokens for {model.path.name} (not enough memory?)")
        self.ptr = ptr
        self.n_ctx = int(llama_cpp.llama_n_ctx(ptr))
        self.n_batch = int(params.n_batch)
        self.mem = llama_cpp.llama_get_memory(ptr)
        self.tokens: list[int] = []
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        batch = self._batch
        for j in range(self.n_batch):  # one sequence: set once, never changes
            batch.n_seq_id[j] = 1
            batch.seq_id[j][0] = 0
        self._n_vocab = model.n_vocab
        self._logits_type = ctypes.c_float * self._n_vocab
        self._exp_buf = np.empty(self._n_vocab, dtype=np.float32)  # scratch for top_probability()

    # -- KV cache ---------------------------------------------------------------------------------
    @property
    def n_past(self) -> int:
        return len(self.tokens)

    def truncate(self, n_keep: int) -> None:
        """Drop every cached token from position `n_keep` on."""
        if n_keep >= len(self.tokens):
            return
        if n_keep < 0:
            n_keep = 0
        ok = self.model.call(llama_cpp.llama_memory_seq_rm, self.mem, 0, n_keep, -1)
        if not ok:
            # a model whose memory cannot drop a partial sequence (recurrent): start over from the top, and
            # keep the mirror true to the cache, so the next decode is positioned right
            self.model.call(llama_cpp.llama_memory_clear, self.mem, True)
            self.tokens.clear()
            if n_keep > 0:
                raise RollbackFailed(
                    f"{self.model.path.name}: the {self.model.memory_kind} model's memory refused to roll back "
                    f"to position {n_keep}; its cache was cleared"
                )
            return
        del self.tokens[n_keep:]

    def clear(self) -> None:
        self.model.call(llama_cpp.llama_memory_clear, self.mem, True)
        self.tokens.clear()

    def common_prefix(self, tokens: Sequence[int]) -> int:
        """How many leading tokens of `tokens` the cache already holds."""
        return common_prefix_length(self.tokens, tokens)

    # -- decoding ---------------------------------------------------------------------------------
    def decode(self, tokens: Sequence[int], outputs: str = "last", cancel: threading.Event | None = None) -> int:
        """Append `tokens` to the cache. `outputs` is "last" (logits for the last token only) or "all".

        Returns the number of logit rows produced by the final chunk (row i = token i of that chunk),
        which is what `logits(i)` indexes. Long inputs are split into chunks of n_batch tokens; with
        outputs="all" they must fit one chunk, since only the final chunk's rows can be read. When `cancel`
        is set (before or during the call) the decode stops and raises `DecodeAborted`, leaving the cache
        as it was before the chunk that was running.
        """
        n = len(tokens)
        if n == 0:
            raise EngineError("nothing to decode")
        if outputs == "all" and n > self.n_batch:
            raise EngineError(
                f"{n} tokens need logits but the batch size is {self.n_batch}: raise the batch size "
                "(it must be at least draft tokens + 1)"
            )
        if len(self.tokens) + n > self.n_ctx:
            raise EngineError(
                f"context full: {len(self.tokens) + n} tokens needed, the context holds {self.n_ctx} "
                "(raise the context length)"
            )
        if cancel is not None and cancel.is_set():
            raise DecodeAborted("decoding was aborted")
        batch = self._batch
        token, pos, logits = batch.token, batch.pos, batch.logits
        all_rows = outputs == "all"
        start = 0
        rows = 0
        self._cancel = cancel
        self._decoding = True
        try:
            while start < n:
                chunk = tokens[start : start + self.n_batch]
                m = len(chunk)
                last_chunk = start + m >= n
                pos0 = len(self.tokens)
                for j, tok in enumerate(chunk):
                    token[j] = tok
                    pos[j] = pos0 + j
                    logits[j] = last_chunk and (all_rows or j == m - 1)
                batch.n_tokens = m
                rc = self.model.call(self._decode_now, batch)
                if rc != 0:
                    # the failed batch may have left partial entries: make the cache match our record again
                    self.model.call(llama_cpp.llama_memory_seq_rm, self.mem, 0, pos0, -1)
                    if rc == 2 or (cancel is not None and cancel.is_set()):
                        raise DecodeAborted("decoding was aborted")
                    if rc == 1:
                        raise EngineError("no room in the KV cache for this batch (raise the context length)")
                    raise EngineError(f"llama_decode failed with code {rc}")
                self.tokens.extend(chunk)
                rows = m if all_rows else 1
                start += m
        finally:
            self._cancel = None
            self._decoding = False
        return rows

    def _decode_now(self, batch: Any) -> int:
        """llama_decode, and for a model on workers also the wait for its result: llama.cpp computes
        asynchronously, and a worker lost while it does must surface here, on the workers' guard thread
        (then reading the logits never waits)."""
        rc = llama_cpp.llama_decode(self.ptr, batch)
        if self.model.remote is not None and rc == 0:
            llama_cpp.llama_synchronize(self.ptr)
        return int(rc)

    @property
    def decoding(self) -> bool:
        """Whether a `decode` call is running (true also while llama.cpp polls its cancel event)."""
        return self._decoding

    def logits(self, i: int) -> np.ndarray:
        """Zero-copy view of the logits of output row `i` of the last decode (-1 = the last row)."""
        ptr = llama_cpp.llama_get_logits_ith(self.ptr, i)
        if not ptr:
            raise EngineError(f"no logits for output row {i}")
        return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(self._logits_type)).contents)

    def argmax(self, i: int) -> int:
        """The most likely token at output row `i` (the first one on a tie, like llama.cpp's greedy sampler)."""
        return int(self.logits(i).argmax())

    def top(self, i: int) -> tuple[int, float]:
        """The most likely token at output row `i` and its softmax probability (numpy, no Python loop)."""
        row = self.logits(i)
        tok = int(row.argmax())
        buf = self._exp_buf
        np.subtract(row, row[tok], out=buf)
        np.exp(buf, out=buf)
        return tok, float(1.0 / buf.sum(dtype=np.float64))

    def close(self) -> None:
        if getattr(self, "ptr", None):
            if self.model.lost:  # see Model.close
                self.model.remote.keep(self)
            else:
                llama_cpp.llama_batch_free(self._batch)
                self.model.call(llama_cpp.llama_free, self.ptr)
            self.ptr = None

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover
        try:
            self.close()
        except Exception:
            pass


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens `a` and `b` share (list slices compared in C, bisecting to the difference)."""
    a = a if isinstance(a, list) else list(a)
    b = b if isinstance(b, list) else list(b)
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo] and a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def extra_buffer_types_enabled() -> bool:
    """Whether llama.cpp may use its extra CPU buffer types (weight repacking, Intel AMX tiles).

    Off by default, for two reasons: (1) repacked weights are multiplied by different kernels for one
    token (gemv) and for a batch (gemm), so a verify batch would not give bit-identical logits to plain
    one-token decoding, and speculative greedy output could drift from plain greedy at near-ties; (2) on
    CPUs that advertise AMX but run where the OS or hypervisor does not really enable it (this project's CI
    virtual machines), llama.cpp's AMX matmul crashes the process. TANDEM_EXTRA_BUFTS=1 turns them on.
    """
    forced = os.environ.get("TANDEM_EXTRA_BUFTS")
    if forced is not None:
        return forced.strip().lower() in ("1", "true", "yes", "on")
    return False


def default_threads(leave_one_free: bool = False) -> int:
    """Physical cores if known (llama.cpp is memory-bound: hyperthreads rarely help), at least 1.

    With `leave_one_free` (the desktop app), one core is left for the GUI and the rest of the system:
    llama.cpp's worker threads spin at every barrier, and when a core they need is taken by another busy
    thread, decoding slows down many times over (measured here on 2 cores with the app streaming: 27 tok/s
    with 2 threads vs 664 tok/s with 1 on the tiny test model).
    """
    try:
        import psutil

        n = psutil.cpu_count(logical=False)
    except Exception:
        n = None
    n = n or os.cpu_count() or 1
    return max(1, n - 1 if leave_one_free else n)
