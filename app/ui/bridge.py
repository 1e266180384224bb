"""The Qt adapter over the engine service: the only way the UI talks to the engine.

`EngineBridge` owns an `EngineService` (app.service), the queue and worker thread the chat window, the
local server and a benchmark share. Commands become requests on that queue (app.service.app_requests);
what the service announces comes back as the signals of `events`.

Every signal of `events` is emitted in the GUI thread, whatever thread the service announced from: the
service's listener only hands the event to a queued connection (only the queue depth and the events of the
window's kinds of request: another client's never reach the GUI thread), and the bridge turns it into signals when
the GUI thread's event loop delivers it. So anything connected to these signals — a bound method, a lambda,
pytest-qt's `waitSignal` — runs in the GUI thread. (A callable with no QObject receiver connected to a signal
emitted in a worker thread runs in that worker thread: pytest-qt's `waitSignal` then stops its timeout timer
from the wrong thread, which invalidates the timer, and may quit its event loop before it started — a wait
that never ends. That was the hang under CPU load.)

A benchmark runs on the same queue with the same engine, so it and a reply can never run at the same time;
the bridge also refuses to start one while the other is running (`busy`, `busy_reason`).
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Qt, Signal

from app.engine import bench
from app.engine.errors import one_line
from app.engine.session import ModelSettings
from app.engine.speculative import SpecSettings
from app.service import app_requests as rq
from app.service.app_requests import BENCH_PROGRESS_SECONDS, FRAME_SECONDS, BenchRequest, GenerateRequest
from app.service.engine_service import CANCELLED, DONE, FAILED, EngineService, Event, Ticket

__all__ = ["GenerateRequest", "BenchRequest", "EngineEvents", "EngineBridge", "FRAME_SECONDS",
           "BENCH_PROGRESS_SECONDS", "BENCHMARK_BUSY"]

BENCHMARK_BUSY = "A benchmark is running (Tools → Benchmark…): chat resumes when it finishes or is cancelled."
_LOADS = {rq.LOAD_TARGET: "target", rq.LOAD_DRAFT: "draft"}


class EngineEvents(QObject):
    """The engine's events for the UI; all emitted in the GUI thread."""

    loadProgress = Signal(str, float)  # "target" | "draft", fraction 0..1
    loaded = Signal(str, object)  # which, ModelInfo
    loadFailed = Signal(str, str)  # which, message
    unloaded = Signal(str)  # "target" | "draft"
    targetLost = Signal(str)  # a worker holding part of the target was lost: the engine unloaded it (message)
    speculationChanged = Signal(str)  # one of app.engine.sources.DRAFT_SOURCES
    pieces = Signal(int, object)  # request id, list[Piece]
    finished = Signal(int, object)  # request id, GenerationResult (stop_reason "cancelled": stopped)
    failed = Signal(int, str)  # request id, message
    liveStats = Signal(int, float, int, int)  # request id, decode tok/s so far, accepted, drafted (≤ 4 Hz)
    queued = Signal(int, int, str)  # request id of a reply, requests ahead of it, kind of the first of them
    started = Signal(int)  # request id of a reply: it is generating now
    queueDepth = Signal(int)  # requests waiting in the engine's queue (the app's and the server's)
    benchProgress = Signal(object)  # bench.BenchProgress (≤ 10 Hz; every change of phase)
    benchFinished = Signal(object)  # bench.BenchReport (.cancelled when cancelled; .autotune set by an auto-tune)
    benchFailed = Signal(str)  # one readable line
    error = Signal(str)  # anything else that went wrong


class EngineBridge(QObject):
    """Lives in the GUI thread: submits the UI's requests to the service and re-emits its events as signals."""

    _event = Signal(object)  # a service Event, from any thread: delivered queued to `_dispatch`
    aboutToShutdown = Signal()  # the engine is about to stop: its other clients (the server) stop first

    def __init__(self, parent: QObject | None = None, *, history_folder: Path | None = None,
                 history_enabled: bool = True) -> None:
        """`history_folder`: where the engine remembers past chats for drafting (None: in memory only)."""
        super().__init__(parent)
        self._events = EngineEvents(self)
        self._event.connect(self._dispatch, Qt.ConnectionType.QueuedConnection)
        self.service = EngineService(history_folder, history_enabled=history_enabled)
        self._mine: dict[int, Ticket] = {}  # this bridge's requests that have not ended
        self._chat: Ticket | None = None  # the latest reply asked for (Stop's target)
        self._bench: Ticket | None = None
        self._unsubscribe = self.service.subscribe(self._hand_over)

    @property
    def events(self) -> EngineEvents:
        return self._events

    def is_running(self) -> bool:
        """The engine's worker thread is running (False after `shutdown`)."""
        return self.service.is_alive()

    def _track(self, ticket: Ticket) -> Ticket:
        self._mine[ticket.id] = ticket  # until its end event is dispatched (also when it ended already)
        return ticket

    # -- commands ---------------------------------------------------------------------------------------
    def load_target(self, settings: ModelSettings) -> None:
        self._track(rq.load_target(self.service, settings))

    def load_draft(self, settings: ModelSettings) -> None:
        self._track(rq.load_draft(self.service, settings))

    def use_history(self) -> None:
        self._track(rq.use_history(self.service))

    def set_history_enabled(self, enabled: bool) -> None:
        """The privacy switch for drafting from past chats (off: nothing read or written)."""
        self._track(rq.set_history_enabled(self.service, bool(enabled)))

    def clear_history(self) -> None:
        """Forget what the engine remembers of past chats (in memory and on disk)."""
        self._track(rq.clear_history(self.service))

    def disable_speculation(self) -> None:
        self._track(rq.disable_speculation(self.service))

    def set_spec(self, spec: SpecSettings) -> None:
        self._track(rq.set_spec(self.service, spec))

    def unload(self) -> None:
        self._track(rq.unload(self.service))

    @property
    def generating(self) -> bool:
        return self._chat is not None

    @property
    def benchmarking(self) -> bool:
        return self._bench is not None

    @property
    def busy(self) -> bool:
        """A reply or a benchmark of the app is running: the app starts nothing else meanwhile."""
        return self.generating or self.benchmarking

    @property
    def busy_reason(self) -> str:
        if self.benchmarking:
            return BENCHMARK_BUSY
        if self.generating:
            return "A reply is being generated: wait for it or stop it."
        return ""

    def generate(self, request: GenerateRequest) -> int:
        """Queue a reply; returns its request id (the id of its `pieces` / `finished` / `failed` events)."""
        ticket = self._track(rq.generate(self.service, request))
        self._chat = ticket
        return ticket.id

    def run_benchmark(self, options: bench.BenchOptions, autotune: str | None = None, *,
                      source: str | None = None, draft: ModelSettings | None = None) -> bool:
        """Start a benchmark on the worker (see BenchRequest); False (nothing started) while the app is busy.

        Events: `benchProgress`, then `benchFinished` (the report) or `benchFailed` (a message).
        """
        if self.busy or not self.is_running():
            return False
        ticket = self._track(rq.run_benchmark(self.service, BenchRequest(options, autotune, source, draft)))
        self._bench = ticket
        return True

    def cancel_benchmark(self) -> None:
        """Stop the running benchmark within one decoding round (thread-safe); it still reports its results."""
        if self._bench is not None:
            self.service.cancel(self._bench)

    def stop(self) -> None:
        """Stop the reply (returns at once): a running one ends within one decode, a queued one at once; both
        end as a stopped reply (`finished` with stop_reason "cancelled")."""
        if self._chat is not None:
            self.service.cancel(self._chat)

    def cancel_load(self) -> None:
        for ticket in list(self._mine.values()):
            if ticket.kind in _LOADS:
                self.service.cancel(ticket)

    def shutdown(self, timeout_ms: int = 10000) -> bool:
        """Stop generation, free the models in the worker thread, stop the thread. True if it stopped."""
        self.aboutToShutdown.emit()
        self._unsubscribe()
        return self.service.shutdown(timeout_ms / 1000)

    def _hand_over(self, event: Event) -> None:
        """(Any thread.) Queue the events the window needs for the GUI thread: the queue depth and the events
        of the chat window's kinds of request; another client's (the server's streamed pieces) stay out."""
        if event.kind == "queue" or event.request_kind in rq.APP_KINDS:
            self._event.emit(event)

    # -- events (GUI thread) ------------------------------------------------------------------------------
    def _dispatch(self, event: Event) -> None:
        ticket = self._mine.get(event.request_id)
        if event.kind == "queue":
            self._events.queueDepth.emit(int(event.data[0]))
            return
        if ticket is None:
            return  # another client's request (the server's), or one of ours that already ended
        ev, kind, data = self._events, ticket.kind, event.data
        if event.kind in (DONE, FAILED, CANCELLED):
            del self._mine[ticket.id]
            if ticket is self._chat:
                self._chat = None
            if ticket is self._bench:
                self._bench = None
            self._ended(ticket, event.kind, data[0])
        elif event.kind == "pieces":
            ev.pieces.emit(ticket.id, data[0])
        elif event.kind == "live":
            ev.liveStats.emit(ticket.id, *data)
        elif event.kind == "load_progress":
            ev.loadProgress.emit(_LOADS[kind], data[0])
        elif event.kind == "bench_progress":
            ev.benchProgress.emit(data[0])
        elif event.kind == "queued" and kind == rq.CHAT and data[0] > 0:
            ev.queued.emit(ticket.id, data[0], data[1])
        elif event.kind == "started" and kind == rq.CHAT:
            ev.started.emit(ticket.id)
        elif event.kind == rq.TARGET_LOST:
            ev.targetLost.emit(str(data[0]))

    def _ended(self, ticket: Ticket, outcome: str, value: object) -> None:
        ev, kind = self._events, ticket.kind
        if kind == rq.CHAT:
            if outcome == FAILED:
                ev.failed.emit(ticket.id, str(value))
            else:
                ev.finished.emit(ticket.id, value if value is not None else rq.stopped_before_start())
        elif kind == rq.BENCHMARK:
            if outcome == FAILED:
                ev.benchFailed.emit(str(value))
            else:
                ev.benchFinished.emit(value if value is not None else bench.BenchReport(meta={}, configs=[],
                                                                                         cancelled=True))
        elif kind in _LOADS:
            if outcome == DONE:
                ev.loaded.emit(_LOADS[kind], value)
                ev.speculationChanged.emit(rq.speculation_after(kind))
            else:
                ev.loadFailed.emit(_LOADS[kind], str(value) if outcome == FAILED else "loading cancelled")
        elif outcome == FAILED:
            prefix = "could not forget past chats: " if kind == rq.CLEAR_HISTORY else ""
            ev.error.emit(prefix + one_line(str(value)))
        elif outcome == DONE:
            if kind == rq.DISABLE_SPECULATION:
                ev.unloaded.emit("draft")
            elif kind == rq.UNLOAD:
                ev.unloaded.emit("target")
            after = rq.speculation_after(kind)
            if after is not None:
                ev.speculationChanged.emit(after)
