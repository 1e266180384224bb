"""The engine service: one worker thread, one FIFO queue of requests, the engines it owns. No Qt.

Every client — the chat window (through `app.ui.bridge`), the local server (`app.server`), a benchmark —
submits a *request*: a function the worker runs with a `JobContext` (the engines, the request's cancel
switch, a way to emit events). Requests run one at a time, in the order they were submitted.

Every request is announced "queued" before the worker can see it, so "queued" always comes before
"started". Every request ends in exactly one of `DONE`, `FAILED` or `CANCELLED` (`Ticket.outcome`), and
that end is announced once (an event of that kind):

* cancelling a queued request ends it at once (it is taken out of the queue, it never runs);
* cancelling the running one sets its `threading.Event`: generation checks it every round and llama.cpp
  inside every decode, a load in its progress callback, a benchmark every round;
* any exception of the request becomes `FAILED` with one readable line; the worker never dies of one;
* `shutdown()` cancels everything queued and the running request, then frees the engines.

Events go to every subscriber (and to the request's own `on_event`) in the thread that caused them — the
worker, or the caller of `cancel` / `shutdown` for a request that never ran. A subscriber that needs them in
another thread (the Qt bridge, the server's event loop) hands them over itself; a subscriber that raises is
reported on stderr and kept.

Engines are kept in named *slots*: `APP_SLOT` is the chat window's; the server keeps one per served model
(`app.server.models`). Only the worker touches an engine.
"""

from __future__ import annotations

import itertools
import sys
import threading
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.engine.chat_template import ChatTemplateError
from app.engine.errors import error_message
from app.engine.gguf_info import GGUFError
from app.engine.llama_backend import EngineError, LoadCancelled
from app.engine.session import Engine

__all__ = ["DONE", "FAILED", "CANCELLED", "OUTCOMES", "APP_SLOT", "SERVER", "SERVER_LOAD", "SERVER_SWEEP",
           "SERVER_STOP", "EXPECTED_FAILURES", "Event", "Ticket", "JobContext",
           "RequestCancelled", "QueueFull", "EngineService", "readable"]

DONE, FAILED, CANCELLED = "done", "failed", "cancelled"
OUTCOMES = (DONE, FAILED, CANCELLED)
APP_SLOT = "app"
SHUTTING_DOWN = "the engine is shutting down"
# the local server's request kinds (app.server): a completion, a model loaded ahead, the idle sweep, the stop
SERVER, SERVER_LOAD, SERVER_SWEEP, SERVER_STOP = "server", "server-load", "server-sweep", "server-stop"
# the failures a request may end with and a person can act on: one line, no traceback
EXPECTED_FAILURES = (EngineError, ValueError, OSError, GGUFError, ChatTemplateError)


def readable(e: BaseException) -> str:
    """One line for an engine-side failure (what a person reads in the app, the server's error object)."""
    return error_message(e, EXPECTED_FAILURES)


@dataclass(frozen=True)
class Event:
    """`kind`: "queued" (requests before it, the kind of the first of them or ""), "started", one of OUTCOMES (the result, or the
    message for FAILED), "queue" (depth), or what the request itself emits (e.g. "pieces", "live",
    "load_progress", "bench_progress"). `request_kind`: the request's kind ("chat", "server", ...)."""

    kind: str
    request_id: int
    request_kind: str
    data: tuple[Any, ...] = ()


class RequestCancelled(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised by a request function that stopped because it was cancelled; `result`: what it had (or None)."""

    def __init__(self, result: Any = None) -> None:
        super().__init__("cancelled")
        self.result = result


class QueueFull(Exception):  # noqa: N818
    """A bounded request was refused: the queue already holds `limit` of them."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the engine's queue is full ({limit} requests waiting): try again shortly")
        self.limit = limit


class Ticket:
    """One request: its id, kind, label, cancel switch, and (once ended) outcome, result and error."""

    def __init__(self, request_id: int, kind: str, label: str,
                 on_event: Callable[[Event], None] | None, cancel: threading.Event | None = None) -> None:
        self.id = request_id
        self.kind = kind
        self.label = label
        self.cancel = cancel if cancel is not None else threading.Event()
        self.on_event = on_event
        self.outcome: str | None = None
        self.result: Any = None
        self.error = ""
        self._ended = threading.Event()
        self._lock = threading.Lock()

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the request ended (True) or `timeout` seconds passed (False)."""
        return self._ended.wait(timeout)

    def _end(self, outcome: str, result: Any = None, error: str = "") -> bool:
        """Record the end; False (nothing changes) when it had ended already: a request ends once."""
        with self._lock:
            if self.outcome is not None:
                return False
            self.outcome, self.result, self.error = outcome, result, error
        self._ended.set()
        return True


class JobContext:
    """What a request function gets: the engines (worker thread only), its ticket, and `emit`."""

    def __init__(self, service: EngineService, ticket: Ticket) -> None:
        self._service = service
        self.ticket = ticket

    @property
    def cancel(self) -> threading.Event:
        return self.ticket.cancel

    def engine(self, slot: str = APP_SLOT) -> Engine:
        """The engine of `slot` (created empty the first time)."""
        return self._service._engine(slot)

    def slots(self) -> list[str]:
        return list(self._service._engines)

    def drop(self, slot: str) -> None:
        """Free the models of `slot` and forget it."""
        engine = self._service._engines.pop(slot, None)
        if engine is not None:
            engine.close()

    def emit(self, kind: str, *data: Any) -> None:
        self._service._publish(self.ticket, kind, data)

    def set_history_enabled(self, enabled: bool) -> None:
        """The past-chats switch of every engine, present and future."""
        self._service._history_enabled = enabled
        for engine in self._service._engines.values():
            engine.set_history_enabled(enabled)

    def clear_history(self) -> None:
        """Forget every past chat, in memory (every engine) and on disk (the folder they share)."""
        for engine in [*self._service._engines.values()] or [self.engine()]:
            engine.clear_history()


Job = Callable[[JobContext], Any]


class EngineService:
    """The queue, its worker thread and the engines. Thread-safe; see the module docstring."""

    def __init__(self, history_folder: Path | None = None, *, history_enabled: bool = True,
                 max_queued: int = 64, name: str = "tandem-engine") -> None:
        """`history_folder` / `history_enabled`: the past-chats store of every engine (see `Engine`);
        `max_queued`: how many *bounded* requests (the server's) may wait before more are refused."""
        self._history_folder = history_folder
        self._history_enabled = history_enabled
        self.max_queued = max_queued
        self._engines: dict[str, Engine] = {}
        self._queue: deque[tuple[Ticket, Job, bool]] = deque()
        self._running: Ticket | None = None
        self._cond = threading.Condition()
        self._submitting = threading.RLock()  # one submission at a time (a listener may submit: re-entrant)
        self._closing = False
        self._ids = itertools.count(1)
        self._listeners: list[Callable[[Event], None]] = []
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # -- listeners ------------------------------------------------------------------------------------
    def subscribe(self, listener: Callable[[Event], None]) -> Callable[[], None]:
        """Call `listener(event)` for every event from now on; returns the function that unsubscribes."""
        with self._cond:
            self._listeners = [*self._listeners, listener]

        def unsubscribe() -> None:
            with self._cond:
                self._listeners = [x for x in self._listeners if x is not listener]

        return unsubscribe

    # -- requests -------------------------------------------------------------------------------------
    def submit(self, kind: str, job: Job, *, label: str = "", on_event: Callable[[Event], None] | None = None,
               cancel: threading.Event | None = None, bounded: bool = False) -> Ticket:
        """Queue `job`; returns its ticket at once. `cancel`: the request's own stop switch (one is made if
        None). `bounded`: refuse with QueueFull when `max_queued` bounded requests already wait."""
        ticket = Ticket(next(self._ids), kind, label, on_event, cancel)
        # "queued" is announced before the worker can see the request, so it always comes before "started";
        # submissions take turns, so the position announced is never too small
        with self._submitting:
            with self._cond:
                refused = self._closing
                if not refused:
                    if bounded and sum(1 for _, _, b in self._queue if b) >= self.max_queued:
                        raise QueueFull(self.max_queued)
                    position = len(self._queue) + (self._running is not None)
                    ahead = self._running if self._running is not None else (self._queue[0][0] if position else None)
                    ahead_kind = ahead.kind if ahead is not None else ""
            if not refused:
                self._publish(ticket, "queued", (position, ahead_kind))
                with self._cond:
                    refused = self._closing
                    if not refused:
                        self._queue.append((ticket, job, bounded))
                        self._cond.notify_all()
        if refused:
            self._finish(ticket, FAILED, None, SHUTTING_DOWN)
            return ticket
        self._publish_depth(ticket)
        return ticket

    def cancel(self, ticket: Ticket) -> None:
        """Cancel a request: a queued one ends now, the running one within one decoding round. Thread-safe."""
        ticket.cancel.set()
        with self._cond:
            entry = next((e for e in self._queue if e[0] is ticket), None)
            if entry is not None:
                self._queue.remove(entry)
        if entry is not None:
            self._finish(ticket, CANCELLED, None, "")
            self._publish_depth(ticket)

    @property
    def queue_depth(self) -> int:
        """Requests waiting (not counting the one running)."""
        with self._cond:
            return len(self._queue)

    def waiting(self) -> list[Ticket]:
        """The queued requests, in order."""
        with self._cond:
            return [t for t, _, _ in self._queue]

    @property
    def running(self) -> Ticket | None:
        return self._running

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def speculation(self, slot: str = APP_SLOT) -> str:
        """What drafts in `slot` now (a snapshot: the worker may change it a moment later)."""
        engine = self._engines.get(slot)
        return engine.speculation if engine is not None else "off"

    def shutdown(self, timeout: float = 10.0) -> bool:
        """Cancel everything, free the engines (in the worker), stop the thread. True when it stopped."""
        with self._cond:
            self._closing = True
            queued = [t for t, _, _ in self._queue]
            self._queue.clear()
            running = self._running
            self._cond.notify_all()
        for ticket in queued:
            ticket.cancel.set()
            self._finish(ticket, CANCELLED, None, "")
        if running is not None:
            running.cancel.set()
        if threading.current_thread() is self._thread:
            return False
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- internals ------------------------------------------------------------------------------------
    def _engine(self, slot: str) -> Engine:
        engine = self._engines.get(slot)
        if engine is None:
            engine = Engine(self._history_folder, history_enabled=self._history_enabled)
            self._engines[slot] = engine
        return engine

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    break
                ticket, job, _ = self._queue.popleft()
                self._running = ticket
            self._publish_depth(ticket)
            outcome, result, error = self._execute(ticket, job)
            with self._cond:
                self._running = None  # before the end is announced: a request queued after it sees it gone
            self._finish(ticket, outcome, result, error)
        for engine in self._engines.values():
            try:
                engine.close()
            except BaseException:  # noqa: BLE001 - freeing at exit; nothing to report to
                traceback.print_exc()
        self._engines.clear()

    def _execute(self, ticket: Ticket, job: Job) -> tuple[str, Any, str]:
        if ticket.cancel.is_set():
            return CANCELLED, None, ""
        self._publish(ticket, "started", ())
        try:
            result = job(JobContext(self, ticket))
        except RequestCancelled as c:
            return CANCELLED, c.result, ""
        except LoadCancelled:
            return CANCELLED, None, ""
        except BaseException as e:  # noqa: BLE001 - every failure ends the request, never the worker
            if not isinstance(e, EXPECTED_FAILURES):
                traceback.print_exc()
            return FAILED, None, readable(e)
        return DONE, result, ""

    def _finish(self, ticket: Ticket, outcome: str, result: Any, error: str) -> None:
        if ticket._end(outcome, result, error):
            self._publish(ticket, outcome, (error,) if outcome == FAILED else (result,))

    def _publish_depth(self, ticket: Ticket) -> None:
        self._publish(ticket, "queue", (self.queue_depth,))

    def _publish(self, ticket: Ticket, kind: str, data: tuple[Any, ...]) -> None:
        event = Event(kind, ticket.id, ticket.kind, data)
        targets = [ticket.on_event] if ticket.on_event is not None else []
        for listener in [*targets, *self._listeners]:
            try:
                listener(event)
            except BaseException:  # noqa: BLE001 - a broken listener must not stop the engine
                print(f"tandem: an engine event listener failed on {kind!r}:", file=sys.stderr)
                traceback.print_exc()
