"""The worker bridge: the only way the UI talks to the engine.

`EngineWorker` lives in its own `QThread` and owns the `Engine`. The UI (through `EngineBridge`) sends
commands as queued signals; the worker answers with events (signals). Streamed text is coalesced so the
GUI receives at most ~60 batches per second whatever the token rate. Every engine error becomes an
`error`/`failed` event with one readable line — never an exception in the GUI thread.

Data flow: UI → command signal → worker slot → engine → event signal → UI.
"""

from __future__ import annotations

import threading
import time
import traceback
from dataclasses import dataclass, field

from PySide6.QtCore import QObject, QThread, Signal, Slot

from app.engine.chat_template import Message
from app.engine.llama_backend import EngineError, LoadCancelled
from app.engine.sampling import SamplingParams
from app.engine.session import ChatSession, Engine, IncompatibleDraft, ModelSettings
from app.engine.speculative import Piece, RoundInfo, SpecSettings

__all__ = ["GenerateRequest", "EngineWorker", "EngineBridge", "FRAME_SECONDS"]

FRAME_SECONDS = 1.0 / 60.0  # coalescing window for streamed text


@dataclass
class GenerateRequest:
    messages: list[Message]
    system_prompt: str = ""
    sampling: SamplingParams = field(default_factory=SamplingParams)
    max_tokens: int = 512
    stop: list[str] = field(default_factory=list)


def _message(e: BaseException) -> str:
    text = str(e).strip()
    line = text.splitlines()[0] if text else type(e).__name__
    if isinstance(e, (EngineError, ValueError, OSError)) or type(e).__name__ in ("GGUFError", "ChatTemplateError"):
        return line
    return f"{type(e).__name__}: {line}"


class EngineWorker(QObject):
    """Owns the engine; all slots run in the worker thread."""

    # events
    loadProgress = Signal(str, float)  # "target" | "draft", fraction 0..1
    loaded = Signal(str, object)  # which, ModelInfo
    loadFailed = Signal(str, str)  # which, message
    unloaded = Signal(str)  # "target" | "draft"
    speculationChanged = Signal(str)  # "off" | "draft-model" | "prompt-lookup"
    pieces = Signal(int, object)  # request id, list[Piece]
    finished = Signal(int, object)  # request id, GenerationResult
    failed = Signal(int, str)  # request id, message
    liveStats = Signal(int, float, int, int)  # request id, decode tok/s so far, accepted, drafted (≤ 4 Hz)
    error = Signal(str)  # anything else that went wrong

    def __init__(self) -> None:
        super().__init__()
        self.engine = Engine()
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
        self.speculationChanged.emit("off")

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
        self.speculationChanged.emit("draft-model")

    @Slot()
    def use_prompt_lookup(self) -> None:
        try:
            self.engine.use_prompt_lookup()
        except BaseException as e:  # noqa: BLE001
            self.error.emit(_message(e))
            return
        self.speculationChanged.emit("prompt-lookup")

    @Slot()
    def disable_speculation(self) -> None:
        self.engine.disable_speculation()
        self.unloaded.emit("draft")
        self.speculationChanged.emit("off")

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
                                          stop=request.stop, on_piece=on_piece, on_round=on_round)
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

    @Slot()
    def shutdown(self) -> None:
        """Free the models (runs in the worker thread, before it stops)."""
        self.engine.close()


class EngineBridge(QObject):
    """Lives in the GUI thread: starts the worker thread and forwards commands to it as queued signals."""

    # commands (connected to the worker's slots; Qt queues them into the worker thread)
    _loadTarget = Signal(object)
    _loadDraft = Signal(object)
    _usePromptLookup = Signal()
    _disableSpeculation = Signal()
    _setSpec = Signal(object)
    _unload = Signal()
    _generate = Signal(int, object)
    _shutdown = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.thread = QThread()
        self.thread.setObjectName("tandem-engine")
        self.worker = EngineWorker()
        self.worker.moveToThread(self.thread)
        self.thread.finished.connect(self.worker.deleteLater)
        self._loadTarget.connect(self.worker.load_target)
        self._loadDraft.connect(self.worker.load_draft)
        self._usePromptLookup.connect(self.worker.use_prompt_lookup)
        self._disableSpeculation.connect(self.worker.disable_speculation)
        self._setSpec.connect(self.worker.set_spec)
        self._unload.connect(self.worker.unload)
        self._generate.connect(self.worker.generate)
        self._shutdown.connect(self.worker.shutdown)
        self._next_id = 0
        self.busy = False
        self.worker.finished.connect(self._done)
        self.worker.failed.connect(self._done)
        self.thread.start()

    # events, re-exported for convenience
    @property
    def events(self) -> EngineWorker:
        return self.worker

    def load_target(self, settings: ModelSettings) -> None:
        self._loadTarget.emit(settings)

    def load_draft(self, settings: ModelSettings) -> None:
        self._loadDraft.emit(settings)

    def use_prompt_lookup(self) -> None:
        self._usePromptLookup.emit()

    def disable_speculation(self) -> None:
        self._disableSpeculation.emit()

    def set_spec(self, spec: SpecSettings) -> None:
        self._setSpec.emit(spec)

    def unload(self) -> None:
        self._unload.emit()

    def generate(self, request: GenerateRequest) -> int:
        self._next_id += 1
        self.busy = True
        self._generate.emit(self._next_id, request)
        return self._next_id

    def stop(self) -> None:
        """Stop the running reply (thread-safe, returns at once; the reply ends within one round)."""
        if self.thread.isRunning():
            self.worker.cancel_generation()

    def cancel_load(self) -> None:
        if self.thread.isRunning():
            self.worker.cancel_load()

    def _done(self, *_args: object) -> None:
        self.busy = False

    def shutdown(self, timeout_ms: int = 10000) -> bool:
        """Stop generation, free the models in the worker thread, stop the thread. True if it stopped."""
        if not self.thread.isRunning():
            return True
        self.worker.cancel_generation()
        self.worker.cancel_load()
        self._shutdown.emit()
        self.thread.quit()
        return self.thread.wait(timeout_ms)
