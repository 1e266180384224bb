"""Run a function on a thread pool and get its result back in the GUI thread (queued signals)."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from app.engine.errors import error_message

__all__ = ["Relay", "run_in_pool"]


class Relay(QObject):
    """Carries a job's results from the worker thread to the GUI thread (queued signals)."""

    progress = Signal(int, int, str)
    done = Signal(object)
    failed = Signal(str)


class _Job(QRunnable):
    def __init__(self, fn: Callable[[Relay], object], relay: Relay, describe: Callable[[Exception], str]) -> None:
        super().__init__()
        self._fn = fn
        self._relay = relay
        self._describe = describe

    def run(self) -> None:
        try:
            result = self._fn(self._relay)
        except Exception as e:  # noqa: BLE001 - reported to the GUI, never raised in a worker
            self._relay.failed.emit(self._describe(e))
        else:
            self._relay.done.emit(result)


def run_in_pool(
    pool: QThreadPool,
    owner: QObject,
    fn: Callable[[Relay], object],
    on_done: Callable[[object], None],
    on_failed: Callable[[str], None],
    on_progress: Callable[[int, int, str], None] | None = None,
    describe: Callable[[Exception], str] = error_message,
) -> None:
    """Run `fn(relay)` on `pool`; `on_done(result)` or `on_failed(message)` run in the GUI thread.

    The callbacks must be bound methods of GUI-thread QObjects (PySide calls plain callables in the emitting
    thread). `describe` turns an exception into the one-line message given to `on_failed` (by default
    `error_message`: the message with the exception's class name in front).
    """
    relay = Relay(owner)  # lives in the GUI thread; deleted there once the job has reported
    if on_progress is not None:
        relay.progress.connect(on_progress)
    relay.done.connect(on_done)
    relay.failed.connect(on_failed)
    relay.done.connect(relay.deleteLater)
    relay.failed.connect(relay.deleteLater)
    pool.start(_Job(fn, relay, describe))
