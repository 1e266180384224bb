"""The worker bridge: the only way the UI talks to the engine.

`EngineWorker` lives in its own `QThread` and owns the `Engine`. The UI (through `EngineBridge`) sends
commands as queued signals; the worker answers with events (signals). Streamed text is coalesced so the
GUI receives at most ~60 batches per second whatever the token rate. Every engine error becomes an
`error`/`failed` event with one readable line — never an exception in the GUI thread.

Data flow: UI → command signal → worker slot → engine → event signal → UI.

A benchmark (`EngineBridge.run_benchmark`) runs on the same worker thread with the loaded engine, so it and
a reply can never run at the same time; the bridge also refuses to start one while the other is running
(`busy`, `busy_reason`). Its progress reaches the GUI at most 10 times a second.
"""

from __future__ import annotations

import threading
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path

from PySide6.QtCore import QObject, QThread, Signal, Slot

from app.engine import bench, sources
from app.engine.chat_template import ChatTemplateError, Message
from app.engine.errors import error_message, one_line
from app.engine.gguf_info import GGUFError
from app.engine.llama_backend import EngineError, LoadCancelled, default_threads
from app.engine.sampling import SamplingParams
from app.engine.session import ChatSession, Engine, IncompatibleDraft, ModelSettings
from app.engine.speculative import Piece, RoundInfo, SpecSettings

__all__ = ["GenerateRequest", "BenchRequest", "EngineWorker", "EngineBridge", "FRAME_SECONDS",
           "BENCH_PROGRESS_SECONDS", "BENCHMARK_BUSY"]

FRAME_SECONDS = 1.0 / 60.0  # coalescing window for streamed text
BENCH_PROGRESS_SECONDS = 0.1  # benchmark progress: at most 10 updates a second
BENCHMARK_BUSY = "A benchmark is running (Tools → Benchmark…): chat resumes when it finishes or is cancelled."


@dataclass
class GenerateRequest:
    """A reply to generate. `cancel` is its own stop switch: set it any time, also before the worker starts it."""

    messages: list[Message]
    system_prompt: str = ""
    sampling: SamplingParams = field(default_factory=SamplingParams)
    max_tokens: int = 512
    stop: list[str] = field(default_factory=list)
    cancel: threading.Event = field(default_factory=threading.Event)


@dataclass
class BenchRequest:
    """A benchmark of the loaded target (see app.engine.bench), run by the worker with its engine.

    `options` describes the sweep (prompts, draft lengths, repeats, max tokens); the models, threads and
    context come from the loaded engine. `source`: None benchmarks the engine's current speculation;
    "history" or "draft-model" (with `draft`, the draft to load) sets that source up for the
    benchmark when speculation is off, and switches it off again afterwards. `autotune`: "quick" or
    "thorough" runs that mode's sweep (bench.autotune_options) and sets the report's preset.
    """

    options: bench.BenchOptions
    autotune: str | None = None
    source: str | None = None
    draft: ModelSettings | None = None
    cancel: threading.Event = field(default_factory=threading.Event)


def _message(e: BaseException) -> str:
    return error_message(e, (EngineError, ValueError, OSError, GGUFError, ChatTemplateError))


class EngineWorker(QObject):
    """Owns the engine; all slots run in the worker thread."""

    # events
    loadProgress = Signal(str, float)  # "target" | "draft", fraction 0..1
    loaded = Signal(str, object)  # which, ModelInfo
    loadFailed = Signal(str, str)  # which, message
    unloaded = Signal(str)  # "target" | "draft"
    speculationChanged = Signal(str)  # one of app.engine.sources.DRAFT_SOURCES
    pieces = Signal(int, object)  # request id, list[Piece]
    finished = Signal(int, object)  # request id, GenerationResult
    failed = Signal(int, str)  # request id, message
    liveStats = Signal(int, float, int, int)  # request id, decode tok/s so far, accepted, drafted (≤ 4 Hz)
    benchProgress = Signal(object)  # bench.BenchProgress (≤ 10 Hz; every change of phase)
    benchFinished = Signal(object)  # bench.BenchReport (.cancelled when cancelled; .autotune set by an auto-tune)
    benchFailed = Signal(str)  # one readable line
    error = Signal(str)  # anything else that went wrong

    def __init__(self, history_folder: Path | None = None, history_enabled: bool = True) -> None:
        super().__init__()
        self.engine = Engine(history_folder, history_enabled=history_enabled)
        self._cancel_load = threading.Event()

    # -- thread-safe controls (called directly from the GUI thread) ---------------------------------
    def cancel_generation(self) -> None:
        self.engine.cancel()

    def cancel_load(self) -> None:
        self._cancel_load.set()

    # -- commands ---------------------------------------------------------------------------------------
    def _progress(self, which: str):
        last = [0.0]

        def cb(fraction: float) -> bool:
            now = time.monotonic()
            if fraction >= 1.0 or now - last[0] >= FRAME_SECONDS:
                last[0] = now
                self.loadProgress.emit(which, fraction)
            return not self._cancel_load.is_set()

        return cb

    @Slot(object)
    def load_target(self, settings: ModelSettings) -> None:
        self._cancel_load.clear()
        try:
            info = self.engine.load_target(settings, progress=self._progress("target"))
        except LoadCancelled:
            self.loadFailed.emit("target", "loading cancelled")
            return
        except BaseException as e:  # noqa: BLE001 - reported, never raised into Qt
            self.loadFailed.emit("target", _message(e))
            return
        self.loaded.emit("target", info)
        self.speculationChanged.emit(sources.OFF)

    @Slot(object)
    def load_draft(self, settings: ModelSettings) -> None:
        self._cancel_load.clear()
        try:
            self.engine.load_draft(settings, progress=self._progress("draft"))
        except IncompatibleDraft as e:
            self.loadFailed.emit("draft", str(e))
            return
        except LoadCancelled:
            self.loadFailed.emit("draft", "loading cancelled")
            return
        except BaseException as e:  # noqa: BLE001
            self.loadFailed.emit("draft", _message(e))
            return
        self.loaded.emit("draft", self.engine.draft_info)
        self.speculationChanged.emit(sources.DRAFT_MODEL)

    @Slot()
    def use_history(self) -> None:
        try:
            self.engine.use_history()
        except BaseException as e:  # noqa: BLE001
            self.error.emit(_message(e))
            return
        self.speculationChanged.emit(sources.HISTORY)

    @Slot(bool)
    def set_history_enabled(self, enabled: bool) -> None:
        self.engine.set_history_enabled(enabled)

    @Slot()
    def clear_history(self) -> None:
        try:
            self.engine.clear_history()
        except OSError as e:
            self.error.emit(f"could not forget past chats: {one_line(e)}")

    @Slot()
    def disable_speculation(self) -> None:
        self.engine.disable_speculation()
        self.unloaded.emit("draft")
        self.speculationChanged.emit(sources.OFF)

    @Slot(object)
    def set_spec(self, spec: SpecSettings) -> None:
        try:
            self.engine.set_spec(spec)
        except BaseException as e:  # noqa: BLE001
            self.error.emit(_message(e))

    @Slot()
    def unload(self) -> None:
        self.engine.unload()
        self.unloaded.emit("target")

    @Slot(int, object)
    def generate(self, request_id: int, request: GenerateRequest) -> None:
        buffer: list[Piece] = []
        last_emit = [0.0]

        def on_piece(piece: Piece) -> None:
            if buffer and buffer[-1].from_draft == piece.from_draft:
                buffer[-1] = Piece(buffer[-1].text + piece.text, piece.from_draft)
            else:
                buffer.append(piece)
            now = time.monotonic()
            if now - last_emit[0] >= FRAME_SECONDS:
                last_emit[0] = now
                self.pieces.emit(request_id, list(buffer))
                buffer.clear()

        live = {"tokens": 0, "accepted": 0, "drafted": 0, "t0": time.monotonic(), "last": 0.0}

        def on_round(info: RoundInfo) -> None:
            live["tokens"] += info.emitted
            live["accepted"] += info.accepted
            live["drafted"] += info.drafted
            now = time.monotonic()
            if now - live["last"] >= 0.25:
                live["last"] = now
                elapsed = now - live["t0"]
                rate = live["tokens"] / elapsed if elapsed > 0 else 0.0
                self.liveStats.emit(request_id, rate, live["accepted"], live["drafted"])

        try:
            chat = ChatSession(self.engine, system_prompt=request.system_prompt)
            chat.messages = list(request.messages)
            if not chat.messages or chat.messages[-1].role != "user":
                raise EngineError("the conversation must end with a user message")
            prompt = self.engine.tokenize_prompt(chat.render(), special=True)
            live["t0"] = time.monotonic()
            result = self.engine.generate(prompt, request.sampling, max_tokens=request.max_tokens,
                                          stop=request.stop, on_piece=on_piece, on_round=on_round,
                                          cancel=request.cancel)
        except BaseException as e:  # noqa: BLE001
            if buffer:
                self.pieces.emit(request_id, list(buffer))
            detail = _message(e)
            if not isinstance(e, (EngineError, ValueError)):
                traceback.print_exc()
            self.failed.emit(request_id, detail)
            return
        if buffer:
            self.pieces.emit(request_id, list(buffer))
        self.finished.emit(request_id, result)

    @Slot(object)
    def run_benchmark(self, request: BenchRequest) -> None:
        """Benchmark with the loaded models; the engine's speculation is as before afterwards."""
        engine = self.engine
        temporary = False
        if request.cancel.is_set():  # cancelled (or shutting down) before it started: nothing measured
            self.benchFinished.emit(bench.BenchReport(meta={}, configs=[], cancelled=True))
            return
        try:
            if not engine.loaded:
                raise bench.BenchError("load a target model first")
            current = engine.speculation
            if request.source is not None and request.source != current:
                if current != sources.OFF:
                    raise bench.BenchError(f"speculation is already on ({current}): benchmark that, or turn it off")
                if request.source == sources.HISTORY:
                    engine.use_history()
                elif request.source == sources.DRAFT_MODEL:
                    if request.draft is None:
                        raise bench.BenchError("choose a draft model to benchmark")
                    engine.load_draft(request.draft)
                else:
                    raise bench.BenchError(f"unknown speculation source {request.source!r}")
                temporary = True
                current = request.source
            if request.autotune and current == sources.OFF:
                raise bench.BenchError("auto-tune needs speculation: choose the chat history or a draft model")
            target = engine.target
            options = replace(
                request.options, model=target.settings.path,
                draft=engine.draft_info.path if current == sources.DRAFT_MODEL and engine.draft_info else None,
                prompt_lookup=current == sources.HISTORY,
                threads=target.settings.n_threads or default_threads(), n_ctx=target.ctx.n_ctx,
                gpu_layers=target.settings.n_gpu_layers,
            )  # fmt: skip
            progress = self._bench_progress()
            if request.autotune:
                report = bench.autotune(options, request.autotune, progress=progress, cancel=request.cancel,
                                        engine=engine)
            else:
                report = bench.run_benchmark(options, progress=progress, cancel=request.cancel, engine=engine)
        except BaseException as e:  # noqa: BLE001 - reported, never raised into Qt
            if not isinstance(e, (EngineError, ValueError)):
                traceback.print_exc()
            self.benchFailed.emit(_message(e))
            return
        finally:
            try:
                if engine.loaded:
                    engine.reset_cache()  # the chat's cached prefix is gone: start it from empty caches
                if temporary:
                    engine.disable_speculation()
            except BaseException:  # noqa: BLE001 - cleaning up; the result was reported already
                traceback.print_exc()
        self.benchFinished.emit(report)

    def _bench_progress(self):
        last = {"time": 0.0, "phase": ""}

        def cb(p: bench.BenchProgress) -> None:
            now = time.monotonic()
            if p.phase != last["phase"] or now - last["time"] >= BENCH_PROGRESS_SECONDS:
                last["time"], last["phase"] = now, p.phase
                self.benchProgress.emit(p)

        return cb

    @Slot()
    def shutdown(self) -> None:
        """Free the models (runs in the worker thread, before it stops)."""
        self.engine.close()


class EngineBridge(QObject):
    """Lives in the GUI thread: starts the worker thread and forwards commands to it as queued signals."""

    # commands (connected to the worker's slots; Qt queues them into the worker thread)
    _loadTarget = Signal(object)
    _loadDraft = Signal(object)
    _useHistory = Signal()
    _setHistoryEnabled = Signal(bool)
    _clearHistory = Signal()
    _disableSpeculation = Signal()
    _setSpec = Signal(object)
    _unload = Signal()
    _generate = Signal(int, object)
    _runBenchmark = Signal(object)
    _shutdown = Signal()

    def __init__(self, parent: QObject | None = None, *, history_folder: Path | None = None,
                 history_enabled: bool = True) -> None:
        """`history_folder`: where the engine remembers past chats for drafting (None: in memory only)."""
        super().__init__(parent)
        self.thread = QThread()
        self.thread.setObjectName("tandem-engine")
        self.worker = EngineWorker(history_folder, history_enabled)
        self.worker.moveToThread(self.thread)
        self.thread.finished.connect(self.worker.deleteLater)
        self._loadTarget.connect(self.worker.load_target)
        self._loadDraft.connect(self.worker.load_draft)
        self._useHistory.connect(self.worker.use_history)
        self._setHistoryEnabled.connect(self.worker.set_history_enabled)
        self._clearHistory.connect(self.worker.clear_history)
        self._disableSpeculation.connect(self.worker.disable_speculation)
        self._setSpec.connect(self.worker.set_spec)
        self._unload.connect(self.worker.unload)
        self._generate.connect(self.worker.generate)
        self._runBenchmark.connect(self.worker.run_benchmark)
        self._shutdown.connect(self.worker.shutdown)
        self._next_id = 0
        self.generating = False
        self._request: GenerateRequest | None = None  # the latest reply asked for (its cancel is Stop's target)
        self._bench: BenchRequest | None = None
        self.worker.finished.connect(self._done)
        self.worker.failed.connect(self._done)
        self.worker.benchFinished.connect(self._bench_done)
        self.worker.benchFailed.connect(self._bench_done)
        self.thread.start()

    # events, re-exported for convenience
    @property
    def events(self) -> EngineWorker:
        return self.worker

    def load_target(self, settings: ModelSettings) -> None:
        self._loadTarget.emit(settings)

    def load_draft(self, settings: ModelSettings) -> None:
        self._loadDraft.emit(settings)

    def use_history(self) -> None:
        self._useHistory.emit()

    def set_history_enabled(self, enabled: bool) -> None:
        """The privacy switch for drafting from past chats (off: nothing read or written)."""
        self._setHistoryEnabled.emit(bool(enabled))

    def clear_history(self) -> None:
        """Forget what the engine remembers of past chats (in memory and on disk)."""
        self._clearHistory.emit()

    def disable_speculation(self) -> None:
        self._disableSpeculation.emit()

    def set_spec(self, spec: SpecSettings) -> None:
        self._setSpec.emit(spec)

    def unload(self) -> None:
        self._unload.emit()

    @property
    def benchmarking(self) -> bool:
        return self._bench is not None

    @property
    def busy(self) -> bool:
        """A reply or a benchmark is running: the engine takes nothing else meanwhile."""
        return self.generating or self.benchmarking

    @property
    def busy_reason(self) -> str:
        if self.benchmarking:
            return BENCHMARK_BUSY
        if self.generating:
            return "A reply is being generated: wait for it or stop it."
        return ""

    def generate(self, request: GenerateRequest) -> int:
        self._next_id += 1
        self.generating = True
        self._request = request
        self._generate.emit(self._next_id, request)
        return self._next_id

    def run_benchmark(self, options: bench.BenchOptions, autotune: str | None = None, *,
                      source: str | None = None, draft: ModelSettings | None = None) -> bool:
        """Start a benchmark on the worker (see BenchRequest); False (nothing started) while the engine is busy.

        Events: `benchProgress`, then `benchFinished` (the report) or `benchFailed` (a message).
        """
        if self.busy or not self.thread.isRunning():
            return False
        self._bench = BenchRequest(options, autotune, source, draft)
        self._runBenchmark.emit(self._bench)
        return True

    def cancel_benchmark(self) -> None:
        """Stop the running benchmark within one decoding round (thread-safe); it still reports its results."""
        if self._bench is not None:
            self._bench.cancel.set()

    def stop(self) -> None:
        """Stop the reply (thread-safe, returns at once): a running one ends within one decode, one the worker
        has not started yet ends as soon as it starts, as a stopped reply."""
        if self._request is not None:
            self._request.cancel.set()

    def cancel_load(self) -> None:
        if self.thread.isRunning():
            self.worker.cancel_load()

    def _done(self, request_id: int, *_args: object) -> None:
        if request_id == self._next_id:  # the latest reply ended (an older one's end changes nothing)
            self.generating = False
            self._request = None

    def _bench_done(self, *_args: object) -> None:
        self._bench = None

    def shutdown(self, timeout_ms: int = 10000) -> bool:
        """Stop generation, free the models in the worker thread, stop the thread. True if it stopped."""
        if not self.thread.isRunning():
            return True
        self.stop()
        self.worker.cancel_generation()
        self.worker.cancel_load()
        self.cancel_benchmark()
        self._shutdown.emit()
        self.thread.quit()
        return self.thread.wait(timeout_ms)
